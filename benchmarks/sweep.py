"""ELM Network sweeps over (N, k_e, k_c): plan, run on Dask, tabulate, plot.

The engine behind `benchmarks.tradeoff`, `benchmarks.axes` and `benchmarks.scaling`.
Every point is one `elmnet.train` run folder under `--runs-dir`, named by a short hash
of everything that decides its result (task, network, training options, data, seed);
`elmbridge.sweep` runs the points on a LocalCluster, an existing Dask scheduler or in
this process, skips finished points, resumes unfinished ones from their checkpoints and
retries a failed point once before recording its error.

Each point's exact parameter count P is counted from the built network
(sum of p.numel()) and checked against `network_parameters(config).total`; a point of a
budget whose P is not within the tolerance (1 %) of the budget is rejected before
anything runs, with the reason in the table.

With `--pack K` the engine trains up to K unfinished points that may share one batched
model (equal `elmnet.packed.SHARED`: same d_m in these sweeps) as one job on one device
(`train_pack` → `elmnet.train_packed`); each point's folder and row are those of its
solo run, its wall_s its share of the pack's time. provenance.json records K and how
many rows were trained in packs.

Outputs in the runs folder: `results.csv` (one row per point and axis; columns
`COLUMNS`), `results.nc` (the same as an xarray Dataset along "point"), the figures.
"""

import argparse
import csv
import functools
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.sweep_presets import SweepPreset, preset_for
from elmbridge import sweep as engine
from elmbridge.errors import UserError
from elmbridge.files import atomic_path, write_csv, write_json
from elmbridge.provenance import run_record, stable_hash
from elmbridge.runs import read_metrics, run_status

COLUMNS = ("task", "axis", "budget", "P", "N", "d_m", "k_e", "k_c", "seed", "steps", "metric",
           "valid", "test", "wall_s", "device", "folder", "status", "error")  # fmt: skip
DATA_DIR = Path(__file__).resolve().parent / "data"
# The published sweeps (benchmarks/data/SOURCES.md), shared with `benchmarks.fit_theory`.
PUBLISHED_FILES = {
    "shd-adding": ("published_shd_adding.csv",),
    "enwik8": ("published_enwik8.csv",),
}
# elmnet.train options that never change a result (they may differ between reruns).
NOT_IN_HASH = {"out", "threads", "device", "progress", "stop_after", "download", "resume",
               "restart"}  # fmt: skip


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Settings:
    """What every point of one sweep shares.

    Attributes:
        task: the elmnet task ("shd", "shd-adding", "enwik8").
        data: the data path given to `elmnet.train --data` (absolute), or None.
        train: further `elmnet.train` options {name: value} (steps, bin_ms, …).
        runs_dir: where the point folders and the results go.
        tolerance: largest |P − budget| / budget of a point of a budget.
        device: `--device` of every point (None: cuda when present).
        stop_after: train at most this many steps per point in this invocation.
        pack: train up to this many compatible points as one batched model (1: alone).
    """

    task: str
    data: str | None
    train: dict[str, Any]
    runs_dir: Path
    tolerance: float = 0.01
    device: str | None = None
    stop_after: int | None = None
    pack: int = 1


@dataclass(frozen=True)
class Spec:
    """One point before planning: a budget (N follows) or an explicit N."""

    d_m: int
    k_c: int
    seed: int
    budget: int | None = None
    N: int | None = None
    axes: tuple[str, ...] = ("",)


@dataclass
class Planned:
    """A planned point: its table fields, and its engine point unless rejected."""

    spec: Spec
    fields: dict[str, Any]
    point: engine.Point | None = None
    error: str = ""
    hidden: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=256)
def counted_parameters(config) -> int:
    """sum(p.numel()) of the network built from `config`, without allocating it.

    The network is built on PyTorch's "meta" device (shapes only) where that works, else
    on the CPU; a configuration is counted once (the seeds of a point share it).
    """
    import torch

    from elmnet.network import ELMNetwork

    try:
        with torch.device("meta"):
            net = ELMNetwork(config)
    except (RuntimeError, NotImplementedError):  # some init op has no meta kernel
        net = ELMNetwork(config)
    return sum(p.numel() for p in net.parameters())


def network_for(spec: Spec, task: str, d_tree: int | None = None):
    """The network config of a point (N from the budget, or the given N)."""
    from elmnet.config import ELMNetworkConfig

    extra = {"d_tree": d_tree} if d_tree else {}
    if spec.budget is not None:
        return ELMNetworkConfig.from_budget(spec.budget, d_m=spec.d_m, k_c=spec.k_c, task=task,
                                            **extra)  # fmt: skip
    return ELMNetworkConfig.for_task(task, N=spec.N, d_m=spec.d_m, k_c=spec.k_c, **extra)


def nearest_fitting_budget(spec: Spec, task: str, d_tree: int | None = None) -> int:
    """The budget nearest to `spec.budget` at which this point's exact P fits (a hint)."""
    config = network_for(spec, task, d_tree)
    from elmnet.params import network_parameters

    count = network_parameters(config)
    size = count.k_e + count.k_c
    # A budget of exactly P(N) = readout + N·size gives N neurons and P = budget: the
    # nearer of P(N) and P(N + 1).
    below, above = count.total, count.total + size
    return below if abs(below - spec.budget) <= abs(above - spec.budget) else above


def plan(specs: Iterable[Spec], settings: Settings) -> list[Planned]:
    """Table fields and engine points of every spec; rejected ones carry their reason.

    Raises a `UserError` for what no point can survive: an unknown task, an impossible
    budget, a k_c that is not a multiple of d_tree, an empty grid.
    """
    from elmnet.packed import SHARED
    from elmnet.params import network_parameters
    from elmnet.tasks import task_module

    specs = list(specs)
    if not specs:
        raise UserError("the sweep has no points: every grid needs at least one value")
    module = task_module(settings.task)
    metric = module.Task.metric
    d_tree = settings.train.get("d_tree")
    planned, seen = [], {}
    for spec in specs:
        config = network_for(spec, settings.task, d_tree)
        count = network_parameters(config)
        exact = counted_parameters(config)
        if exact != count.total:  # the formula and the model disagree: a bug, not bad input
            raise AssertionError(
                f"d_m {spec.d_m}, k_c {spec.k_c}, N {config.N}: the built network has {exact} "
                f"parameters, network_parameters says {count.total}"
            )
        fields_ = {
            "task": settings.task, "budget": spec.budget or "", "P": exact, "N": config.N,
            "d_m": config.d_m, "k_e": count.k_e, "k_c": count.k_c, "seed": spec.seed,
            "steps": _steps(settings, module), "metric": metric,
        }  # fmt: skip
        item = Planned(spec, fields_)
        if spec.budget is not None and abs(exact - spec.budget) > settings.tolerance * spec.budget:
            hint = nearest_fitting_budget(spec, settings.task, d_tree)
            item.error = (
                f"P = {exact:,} parameters is {100 * (exact - spec.budget) / spec.budget:+.1f} %"
                f" from the budget {spec.budget:,} (tolerance ±{100 * settings.tolerance:g} %); "
                f"N = {config.N} neurons of {count.k_e + count.k_c} parameters; a budget of "
                f"{hint:,} fits this point"
            )
        else:
            argv, config_key = train_argv(settings, config, spec.seed)
            name = (f"{settings.task}_N{config.N}_dm{config.d_m}_kc{count.k_c}_s{spec.seed}_"
                    f"{stable_hash(config_key)[:10]}")  # fmt: skip
            folder = str((settings.runs_dir / name).resolve())
            log = str((settings.runs_dir / "logs" / f"{name}.log").resolve())
            job = {"argv": argv, "folder": folder, "log": log, "device": settings.device,
                   "stop_after": settings.stop_after,
                   # What one packed model must share (elmnet.packed.SHARED).
                   "pack_key": tuple(getattr(config, name) for name in SHARED)}  # fmt: skip
            item.point = seen.get(name) or engine.Point(name, folder, job)
            seen[name] = item.point
        planned.append(item)
    check_train_options(next((p.point.job["argv"] for p in planned if p.point), None))
    if all(p.point is None for p in planned):
        raise UserError(f"every point of the sweep was rejected; the first: {planned[0].error}")
    return planned


def check_train_options(argv: list[str] | None) -> None:
    """Refuse, in one line, options (from --set) that `elmnet.train` does not take."""
    import contextlib
    import io

    from elmnet import train

    if argv is None:
        return
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            train.resolve(train.build_parser().parse_args([*argv, "--out", "unused"]))
    except SystemExit as err:
        last = (message.getvalue().strip().splitlines() or ["invalid options"])[-1]
        raise UserError(f"elmnet.train refuses the points' options: {last}") from err


def _steps(settings: Settings, module) -> int:
    t = {**module.TRAINING, **settings.train}
    return int(t.get("steps") or t["epochs"] * t["steps_per_epoch"])


def train_argv(settings: Settings, config, seed: int) -> tuple[list[str], dict[str, Any]]:
    """The `elmnet.train` arguments of a point and the dict its folder name hashes."""
    options = {"task": settings.task, "N": config.N, "d_m": config.d_m, "k_c": config.k_c,
               "seed": seed, **settings.train}  # fmt: skip
    if settings.data is not None:
        options["data"] = settings.data
    argv = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):  # a switch (e.g. test_curve): present or absent
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    key = {k: v for k, v in options.items() if k not in NOT_IN_HASH}
    return argv, key


# --------------------------------------------------------------------------- running


def train_point(job: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one point with `elmnet.train.main` in a Dask worker.

    The trainer's console output goes to `<runs-dir>/logs/<point>.log`, so that the
    sweep's own progress bar stays readable.
    """
    import contextlib

    from elmbridge.training import resolve_device

    device = engine.worker_device(job["device"])
    argv = point_argv(job, device)
    folder = Path(job["folder"])
    Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(job["log"], "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
    ):
        engine.timed_point(folder, str(resolve_device(device)), lambda: _train(argv))
    status = run_status(folder)
    return {"finished": status.finished, "result": status.result}


def pack_key(point: engine.Point) -> tuple:
    """What the points of one pack must share (`elmnet.packed.SHARED`, set by `plan`)."""
    return point.job["pack_key"]


def train_pack(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run (or resume) the points of `jobs` as one batched model (`elmnet.train_packed`)
    in a Dask worker, on one device; one `train_point`-like result per point.

    The console output goes to the first point's log; the others' logs say where.
    """
    import contextlib

    from elmbridge.training import resolve_device

    device = engine.worker_device(jobs[0]["device"])
    argvs = [point_argv(job, device) for job in jobs]
    for job in jobs:
        Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
    for job in jobs[1:]:
        with open(job["log"], "a", encoding="utf-8") as log:
            print(f"trained in a pack of {len(jobs)}; its output: {jobs[0]['log']}", file=log)
    with (
        open(jobs[0]["log"], "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
    ):
        engine.timed_points([job["folder"] for job in jobs], str(resolve_device(device)),
                            lambda: _train_packed(argvs))  # fmt: skip
    statuses = [run_status(job["folder"]) for job in jobs]
    return [{"finished": s.finished, "result": s.result} for s in statuses]


def point_argv(job: dict[str, Any], device: str | None) -> list[str]:
    """The `elmnet.train` command line of a point's job on `device`."""
    argv = [*job["argv"], "--out", job["folder"], "--no-progress"]
    if device is not None:
        argv += ["--device", device]
    if job.get("threads"):
        argv += ["--threads", str(job["threads"])]
    if job.get("stop_after"):
        argv += ["--stop-after", str(job["stop_after"])]
    return argv


def _train(argv: list[str]) -> int:
    """`elmnet.train.main`, with argparse's exit turned into an error of this point."""
    from elmnet import train

    try:
        return train.main(argv)
    except SystemExit as err:  # bad options: fail this point, not the whole worker
        raise RuntimeError(f"elmnet.train exited with status {err.code}") from None


def _train_packed(argvs: list[list[str]]) -> list:
    """`elmnet.train_packed.train_packed`, argparse's exit an error of this pack."""
    from elmnet.train_packed import train_packed

    try:
        return train_packed(argvs)
    except SystemExit as err:
        raise RuntimeError(f"elmnet.train_packed exited with status {err.code}") from None


def latest_metric(point: engine.Point) -> str | None:
    """'N11_dm2_kc60_s0: step 400 val 0.61' from a point's metrics.csv (None: no row yet)."""
    path = Path(point.folder) / "metrics.csv"
    try:
        rows = read_metrics(path)
    except (OSError, csv.Error, ValueError):
        return None
    label = "_".join(point.name.split("_")[1:-1])  # N…_dm…_kc…_s…, without task and hash
    valid = [r for r in rows if r.get("split") == "valid"]
    if valid:
        return f"{label}: step {valid[-1]['step']} val {valid[-1]['value']:.3f}"
    train = [r for r in rows if r.get("split") == "train"]
    return f"{label}: step {train[-1]['step']} loss {train[-1]['loss']:.3f}" if train else None


def run(planned: list[Planned], settings: Settings, resources: engine.Resources,
        progress: bool = True, desc: str = "sweep") -> list[dict[str, Any]]:  # fmt: skip
    """Run the planned points; the table rows (one per point and axis), in plan order."""
    unique = list({p.point.name: p.point for p in planned if p.point is not None}.values())
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    unfinished = [p for p in unique if not run_status(p.folder).finished]
    # The cluster is sized to the jobs: a pack is one job.
    todo = len(engine.pack_points(unfinished, settings.pack, pack_key))
    if not todo:  # nothing to train: no cluster to start
        resources = replace(resources, scheduler=engine.SYNCHRONOUS)
    with engine.sweep_client(resources, todo) as (client, threads):
        gpu = resources.gpu_share() if resources.gpus or settings.device == "cuda" else 0.0
        points = [replace(p, job={**p.job, "threads": threads}, gpu=gpu) for p in unique]
        done = engine.run_sweep(points, train_point, client, desc=desc, latest=latest_metric,
                                progress=progress, pack=settings.pack, pack_key=pack_key,
                                pack_fn=train_pack)  # fmt: skip
    outcomes = {o.point.name: o for o in done}
    return table_rows(planned, outcomes)


def report_rows(planned: list[Planned]) -> list[dict[str, Any]]:
    """The table rows of the points as their folders are now, training nothing."""
    outcomes = {}
    for item in planned:
        if item.point is not None:
            done = run_status(item.point.folder).finished
            state = "skipped" if done else "unfinished"
            outcomes[item.point.name] = engine.Outcome(item.point, state)
    return table_rows(planned, outcomes)


def table_rows(planned: list[Planned], outcomes: dict[str, engine.Outcome]) -> list[dict]:
    """One row per planned point and axis, read back from the run folders."""
    rows = []
    for item in planned:
        row = {**dict.fromkeys(COLUMNS, ""), **item.fields}
        if item.point is None:
            row.update(status="rejected", error=item.error)
        else:
            outcome = outcomes[item.point.name]
            status = run_status(item.point.folder)
            record = engine.point_record(item.point.folder)
            row.update(folder=item.point.folder, wall_s=record.get("wall_s", ""),
                       device=record.get("device", ""), error=outcome.error)  # fmt: skip
            if status.finished:
                row.update(status="finished", valid=status.result["valid"],
                           test=status.result["test"])  # fmt: skip
            else:
                row["status"] = "failed" if outcome.status == "failed" else "unfinished"
        for axis in item.spec.axes:
            rows.append({**row, "axis": axis})
    return rows


# --------------------------------------------------------------------------- results


def write_results(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """results.csv and results.nc (xarray, dimension "point") in `out`."""
    import numpy as np
    import xarray as xr

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", [{c: row.get(c, "") for c in COLUMNS} for row in rows])
    variables = {}
    for column in COLUMNS:
        values = [row.get(column, "") for row in rows]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            variables[column] = ("point", np.asarray(values))
        elif column in ("budget", "valid", "test", "wall_s"):  # numbers with gaps
            variables[column] = ("point", np.asarray(
                [float(v) if v != "" else np.nan for v in values], dtype=float))  # fmt: skip
        else:
            variables[column] = ("point", np.asarray([str(v) for v in values], dtype=str))
    about = {"description": "ELM Network sweep: one row per point and axis",
             "columns": ", ".join(COLUMNS)}  # fmt: skip
    dataset = xr.Dataset(variables, attrs=about)
    with atomic_path(out / "results.nc") as tmp:
        dataset.to_netcdf(tmp, engine="scipy")
    return out / "results.csv", out / "results.nc"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a results.csv, numbers parsed."""
    return read_metrics(path)


def summarise(rows: Sequence[dict[str, Any]], x: str, by: Sequence[str]) -> list[dict]:
    """Mean, sd, se and count of the test metric over seeds, per (by…, x).

    Only finished points count; `n` is how many seeds finished.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["status"] == "finished":
            groups.setdefault((*(row[b] for b in by), row[x]), []).append(row)
    out = []
    for _key, members in sorted(groups.items(), key=lambda kv: tuple(map(_sortable, kv[0]))):
        tests = [float(r["test"]) for r in members]
        sd = statistics.stdev(tests) if len(tests) > 1 else math.nan
        first = members[0]
        out.append({**{b: first[b] for b in by}, x: first[x], "N": first["N"], "P": first["P"],
                    "k_e": first["k_e"], "d_m": first["d_m"], "k_c": first["k_c"],
                    "mean": statistics.fmean(tests), "sd": sd, "se": sd / math.sqrt(len(tests)),
                    "n": len(tests),
                    "valid": statistics.fmean(float(r["valid"]) for r in members)})  # fmt: skip
    return out


def _sortable(value):
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def curves(summary: list[dict], by: Sequence[str]) -> dict[tuple, list[dict]]:
    """The summary split into one curve per value of `by`."""
    out: dict[tuple, list[dict]] = {}
    for row in summary:
        out.setdefault(tuple(row[b] for b in by), []).append(row)
    return out


def interior_optimum(curve: list[dict], x: str, higher_is_better: bool = True) -> str:
    """Did an interior optimum appear? The best x's mean must beat both ends of its grid
    by more than 2 standard errors of the difference (sqrt(se_best² + se_end²))."""
    if len(curve) < 3:
        return "no interior (fewer than 3 grid values)"
    sign = 1 if higher_is_better else -1
    best = max(curve, key=lambda r: sign * r["mean"])
    if best is curve[0] or best is curve[-1]:
        return f"no: best at the end of the grid ({x} {best[x]})"
    margins = []
    for end in (curve[0], curve[-1]):
        se = math.sqrt(best["se"] ** 2 + end["se"] ** 2)
        if not math.isfinite(se) or se == 0:
            return f"undetermined: best at {x} {best[x]}, but no spread over seeds to test it"
        margins.append(sign * (best["mean"] - end["mean"]) / se)
    if min(margins) > 2:
        return f"yes: {x} {best[x]} beats both ends by {min(margins):.1f} standard errors"
    return f"not significant: {x} {best[x]} is best, {min(margins):.1f} standard errors (< 2)"


def print_points(rows: list[dict[str, Any]]) -> None:
    """Rejected and failed points, one line each (the rest is in the summary)."""
    for row in rows:
        if row["status"] == "failed":
            what = f"budget {row['budget']} d_m {row['d_m']} k_c {row['k_c']} seed {row['seed']}"
            print(f"  {row['status']}: {what}: {row['error']}")
    unfinished = sum(r["status"] == "unfinished" for r in rows)
    if unfinished:
        print(f"  {unfinished} points unfinished (stopped early): run the same command to resume")


def print_summary(summary: list[dict], x: str, by: Sequence[str], metric: str) -> None:
    """The summary as an aligned table (mean ± sd of the test metric over seeds)."""
    keys = list(dict.fromkeys([*by, x, "N", "d_m", "k_e", "k_c"]))
    head = [*keys, "P (params)", f"test {metric} mean ± sd", "seeds", f"valid {metric}"]
    lines = []
    for r in summary:
        spread = (
            f"{r['mean']:.4f} ± {r['sd']:.4f}" if math.isfinite(r["sd"]) else f"{r['mean']:.4f}"
        )
        lines.append([*(str(r[k]) for k in keys), f"{r['P']:,}", spread, str(r["n"]),
                      f"{r['valid']:.4f}"])  # fmt: skip
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for line in lines:
        print("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)))


# --------------------------------------------------------------------------- published


def published(task: str) -> list[dict[str, float]]:
    """The published sweep of `task` as rows {d_m, N, P, test}; [] when none is shipped.

    Reads benchmarks/data/published_<task>.csv: a d_m column, a column whose name starts
    with "test", and the counted parameters (P_trainable, else P).
    """
    for name in PUBLISHED_FILES.get(task, ()):
        path = DATA_DIR / name
        if not path.is_file():
            continue
        rows = read_metrics(path)
        if not rows:
            continue
        keys = list(rows[0])
        test = next((k for k in keys if k.lower().startswith("test")), None)
        count = next((k for k in ("P_trainable", "P") if k in keys), None)
        if "d_m" not in keys or test is None:
            continue
        return [{"d_m": r["d_m"], "N": r.get("N", math.nan), "test": r[test],
                 "P": r[count] if count else math.nan} for r in rows]  # fmt: skip
    return []


PUBLISHED_BUDGET = {"shd-adding": (77_300, 300), "enwik8": (3_516_900, 750)}


def matches_published(task: str, budget, k_c) -> bool:
    """Whether a curve (budget, k_c) is the published sweep's setting (P within 5 %)."""
    if task not in PUBLISHED_BUDGET or budget in ("", None):
        return False
    p, kc = PUBLISHED_BUDGET[task]
    return k_c == kc and abs(float(budget) - p) <= 0.05 * p


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def errorbar_curves(ax, summary: list[dict], x: str, by: Sequence[str], label_fn) -> None:
    """One mean ± sd curve per value of `by` on `ax`."""
    for key, curve in curves(summary, by).items():
        xs = [r[x] for r in curve]
        sds = [r["sd"] if math.isfinite(r["sd"]) else 0.0 for r in curve]
        ax.errorbar(xs, [r["mean"] for r in curve], yerr=sds, marker="o", capsize=3,
                    label=label_fn(key))  # fmt: skip


def plot_tradeoff(summary: list[dict], task: str, metric: str, path: Path) -> None:
    """Metric vs d_m and vs N at fixed P: one curve per (budget, k_c), published overlaid."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    ref = published(task)
    for ax, x, label in ((axes[0], "d_m", "memory units per neuron d_m (sets k_e)"),
                         (axes[1], "N", "hidden neurons N")):  # fmt: skip
        ticks = [r[x] for r in summary]
        for (budget, k_c), curve in curves(summary, ("budget", "k_c")).items():
            xs = [r[x] for r in curve]
            sds = [r["sd"] if math.isfinite(r["sd"]) else 0.0 for r in curve]
            ax.errorbar(xs, [r["mean"] for r in curve], yerr=sds, marker="o", capsize=3,
                        label=f"P ≈ {int(budget):,}, k_c {k_c} (mean ± sd)")  # fmt: skip
            if ref and matches_published(task, budget, k_c):
                ax.plot([r[x] for r in ref], [r["test"] for r in ref], "s--", c="0.5",
                        label="published (one seed)")  # fmt: skip
                ticks += [r[x] for r in ref]
        _log_x(ax, ticks)
        ax.set(xlabel=label, ylabel=f"test {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task}: splitting a fixed parameter budget between N and k_e")
    _save(fig, path)


def plot_kc(summary: list[dict], task: str, metric: str, path: Path) -> None:
    """Metric vs k_c at fixed P: one curve per (budget, d_m)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    errorbar_curves(ax, summary, "k_c", ("budget", "d_m"),
                    lambda k: f"P ≈ {int(k[0]):,}, d_m {k[1]}")  # fmt: skip
    _log_x(ax, [r["k_c"] for r in summary])
    ax.set(xlabel="synapses per neuron k_c", ylabel=f"test {metric}",
           title=f"{task}: connectivity at a fixed budget")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_axes(summaries: dict[str, list[dict]], task: str, metric: str, path: Path) -> None:
    """The three single-axis curves: metric vs N, vs k_e (via d_m), vs k_c."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained", sharey=True)
    labels = {"N": "hidden neurons N", "d_m": "per-neuron complexity k_e (d_m)",
              "k_c": "synapses per neuron k_c"}  # fmt: skip
    for ax, axis in zip(axes, ("N", "d_m", "k_c"), strict=True):
        rows = summaries.get(axis, [])
        x = "k_e" if axis == "d_m" else axis
        sds = [r["sd"] if math.isfinite(r["sd"]) else 0.0 for r in rows]
        ax.errorbar([r[x] for r in rows], [r["mean"] for r in rows], yerr=sds, marker="o",
                    capsize=3)  # fmt: skip
        if axis == "d_m":
            for r in rows:
                ax.annotate(f"d_m {r['d_m']}", (r["k_e"], r["mean"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))  # fmt: skip
        _log_x(ax, [r[x] for r in rows])
        ax.set(xlabel=labels[axis])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test {metric} (mean ± sd over seeds)")
    fig.suptitle(f"{task}: one knob at a time, the others fixed")
    _save(fig, path)


def plot_scaling(summary: list[dict], best: list[dict], task: str, metric: str,
                 path: Path) -> None:  # fmt: skip
    """Frontier (metric vs P), and how the best N and k_e move with P."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    axes[0].scatter([r["P"] for r in summary], [r["mean"] for r in summary], c="0.6", s=14,
                    label="every allocation (mean over seeds)")  # fmt: skip
    axes[0].plot([r["P"] for r in best], [r["mean"] for r in best], "o-", c="tab:red",
                 label="best allocation per budget")  # fmt: skip
    frontier = pareto(summary)
    axes[0].plot([r["P"] for r in frontier], [r["mean"] for r in frontier], ":", c="k",
                 label="Pareto frontier")  # fmt: skip
    axes[0].set(xlabel="parameters P", ylabel=f"test {metric}")
    axes[0].legend(fontsize=8)
    for ax, key, label in ((axes[1], "N", "best N (neurons)"),
                           (axes[2], "k_e", "best k_e (parameters per neuron)")):  # fmt: skip
        ax.plot([r["P"] for r in best], [r[key] for r in best], "o-")
        ax.set(yscale="log", xlabel="parameters P", ylabel=label)
        ax.set_yticks(sorted({r[key] for r in best}))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in axes:
        _log_x(ax, [r["P"] for r in best])
        ax.grid(alpha=0.3)
    fig.suptitle(f"{task}: the best allocation as the budget grows")
    _save(fig, path)


def _log_x(ax, values) -> None:
    """A log x axis labelled with the grid values themselves (not powers of ten)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ticks = sorted({float(v) for v in values if v not in ("", None)})
    if ticks:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)


def pareto(summary: list[dict], higher_is_better: bool = True) -> list[dict]:
    """The points no cheaper point beats: sorted by P, each better than all before."""
    out, best = [], -math.inf
    sign = 1 if higher_is_better else -1
    for row in sorted(summary, key=lambda r: r["P"]):
        if sign * row["mean"] > best:
            out.append(row)
            best = sign * row["mean"]
    return out


def best_per_budget(summary: list[dict], higher_is_better: bool = True) -> list[dict]:
    """The allocation of the best mean metric at each budget."""
    sign = 1 if higher_is_better else -1
    return [max(curve, key=lambda r: sign * r["mean"])
            for _, curve in sorted(curves(summary, ("budget",)).items())]  # fmt: skip


def log_slope(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(key) against log(P) (the exponent of key ∝ P^a)."""
    xs = [math.log(r["P"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    if len(xs) < 2 or len(set(xs)) < 2:
        return math.nan
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum(
        (a - mx) ** 2 for a in xs
    )


# --------------------------------------------------------------------------- command line


class Parser(argparse.ArgumentParser):
    """argparse whose errors are `UserError`s (one line, exit status 2)."""

    def error(self, message: str):
        raise UserError(f"{message} (see python -m {self.prog} --help)")


def add_common_options(p: argparse.ArgumentParser) -> None:
    """The options every sweep command shares."""
    p.add_argument("--preset", default="cpu", help="sizes: cpu (default, 2 h on 2 cores) "
                   "or paper (the published protocol, GPU cluster); see sweep_presets")  # fmt: skip
    p.add_argument("--task", help="shd, shd-adding or enwik8 (default: the preset's first)")
    p.add_argument("--data", help="data path for elmnet.train (default: the preset's)")
    p.add_argument("--runs-dir", type=Path, help="folder of the points and results")
    p.add_argument("--seeds", type=int, help="seeds per point: 0 … seeds−1")
    p.add_argument("--steps", type=int, help="training steps per point")
    p.add_argument("--bin-ms", type=float, help="SHD bin size (ms)")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="any other elmnet.train option for every point, e.g. lr=1e-3")  # fmt: skip
    p.add_argument("--tolerance", type=float,
                   help="largest |P − budget| / budget (default: the preset's, 0.01)")  # fmt: skip
    p.add_argument("--stop-after", type=int, metavar="STEPS",
                   help="train each point at most this many steps now (resume later)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the plan; train nothing")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tables and figures of the points finished so far, the "
                   "others listed as unfinished (e.g. while the sweep runs elsewhere)")  # fmt: skip
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    e = p.add_argument_group("where the points run (elmbridge.sweep, docs/cluster.md)")
    e.add_argument("--scheduler", help="Dask scheduler address (tcp://host:port), or "
                   "'synchronous' for this process (default: a LocalCluster)")  # fmt: skip
    e.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    e.add_argument("--threads", type=int, help="torch threads per point (default: cores/workers)")
    e.add_argument("--device", help="cpu, cuda … for every point (default: cuda when present)")
    e.add_argument("--gpus", type=int, help="GPUs of a LocalCluster (default: all visible)")
    e.add_argument("--points-per-gpu", type=int, default=1, help="points sharing one GPU")
    e.add_argument(
        "--pack", type=int, default=1, metavar="K",
        help="train up to K points of one d_m as one batched model on one device "
        "(elmnet.train_packed; results equal their solo runs); 1: each alone",
    )  # fmt: skip


def resolve_common(args: argparse.Namespace, command: str) -> tuple[SweepPreset, Settings,
                                                                     engine.Resources]:  # fmt: skip
    """Preset, settings and resources from the common options (all checked)."""
    from elmbridge.training import resolve_device

    task, preset = preset_for(args.preset, args.task)
    args.task = task
    train = dict(preset.train)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be at least 1, got {args.steps}")
        train.update(steps=args.steps)
    if args.bin_ms is not None:
        train["bin_ms"] = args.bin_ms
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes OPTION=VALUE, got {item!r}")
        train[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.pack < 1:
        raise UserError(f"--pack must be at least 1, got {args.pack}")
    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be at least 1, got {args.stop_after}")
    tolerance = preset.tolerance if args.tolerance is None else args.tolerance
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance is a fraction in (0, 1), got {tolerance}")
    if args.device is not None:
        resolve_device(args.device)
    runs_dir = args.runs_dir or Path("runs") / "sweeps" / f"{command}_{task}_{args.preset}"
    resources = engine.Resources(
        scheduler=args.scheduler, workers=args.workers, threads=args.threads,
        gpus=_gpus(args), points_per_gpu=args.points_per_gpu,
    )  # fmt: skip
    resources.check()
    data = args.data
    if data is None and preset.data_required:
        raise UserError(f"the {args.preset} preset of {task} needs --data (e.g. enwik8.zip)")
    if data is not None:
        data = str(Path(data).resolve())
        if not Path(data).exists():
            raise UserError(f"--data {args.data}: no such file or folder")
    settings = Settings(task=task, data=data, train=train, runs_dir=Path(runs_dir).resolve(),
                        tolerance=tolerance, device=args.device,
                        stop_after=args.stop_after, pack=args.pack)  # fmt: skip
    return preset, settings, resources


def _gpus(args) -> int:
    """GPUs of a LocalCluster: --gpus, else all visible when the points use CUDA."""
    if args.gpus is not None:
        return args.gpus
    if args.scheduler is not None or (args.device or "cuda").startswith("cpu"):
        return 0
    import torch

    return torch.cuda.device_count()


def ensure_data(preset: SweepPreset, settings: Settings, resources: engine.Resources,
                dry_run: bool = False) -> Settings:  # fmt: skip
    """The settings with their data path; makes the preset's synthetic SHD once (cached).

    The synthetic set lives in the user cache under a name that hashes its options, so
    every sweep asking for the same set reuses it; `biophys.shd_synth` resumes a set
    that was interrupted while being made.
    """
    if settings.data is not None or preset.synth is None:
        return settings
    from elmbridge.download import cache_dir

    folder = cache_dir("shd_synth") / stable_hash(preset.synth)[:12]
    if not dry_run and not all((folder / f).is_file() for f in ("shd_train.h5", "shd_test.h5")):
        options = [f"--{k.replace('_', '-')}={v}" for k, v in preset.synth.items()]
        if resources.scheduler is not None:
            options.append(f"--scheduler={resources.scheduler}")
        elif resources.workers:
            options.append(f"--workers={resources.workers}")
        print(
            f"making the synthetic SHD of the preset in {folder} (once; reused after)", flush=True
        )
        # A subprocess: the generator's own Dask cluster, and it may move inside biophys.
        done = subprocess.run([sys.executable, "-m", "biophys.shd_synth", "--out", str(folder),
                               *options])  # fmt: skip
        if done.returncode != 0:
            raise UserError(
                f"making the synthetic SHD in {folder} failed (exit status {done.returncode}; "
                "its message is above); run the same command again to resume it"
            )
    return replace(settings, data=str(folder))


def print_plan(planned: list[Planned]) -> None:
    """The points a sweep would run (for --dry-run)."""
    for item in planned:
        f = item.fields
        state = item.error or ("finished" if run_status(item.point.folder).finished else "to run")
        print(f"  budget {f['budget'] or '-':>9}  N {f['N']:>5}  d_m {f['d_m']:>3}  k_c "
              f"{f['k_c']:>4}  P {f['P']:>11,}  seed {f['seed']}  {state}")  # fmt: skip


def seeds(args, preset: SweepPreset) -> range:
    return range(args.seeds if args.seeds is not None else preset.seeds)


def positive_grid(values: Sequence[int] | None, name: str) -> tuple[int, ...]:
    """A grid option: distinct positive integers, at least one."""
    if values is None:
        raise AssertionError(name)
    if len(values) == 0:
        raise UserError(f"--{name} is empty: give at least one value")
    if any(v < 1 for v in values):
        raise UserError(f"--{name} takes positive values, got {list(values)}")
    if len(set(values)) != len(values):
        raise UserError(f"--{name} lists a value twice: {list(values)}")
    return tuple(values)


def cores() -> int:
    return os.cpu_count() or 1


def execute(planned: list[Planned], settings: Settings, resources: engine.Resources,
            args: argparse.Namespace, desc: str) -> list[dict[str, Any]] | None:  # fmt: skip
    """Print the plan's size, run it (unless --dry-run) and write results.csv / .nc."""
    unique = {p.point.name for p in planned if p.point is not None}
    rejected = sum(p.point is None for p in planned)
    print(f"{desc}: {len(unique)} points to train ({rejected} rejected) in {settings.runs_dir}")
    shown = set()
    for item in planned:
        f = item.fields
        if item.point is None and (f["budget"], f["d_m"], f["k_c"]) not in shown:
            shown.add((f["budget"], f["d_m"], f["k_c"]))
            print(f"  rejected: budget {f['budget']:,} d_m {f['d_m']} k_c {f['k_c']}: {item.error}")
    if args.dry_run:
        print_plan(planned)
        return None
    if getattr(args, "report_only", False):
        rows = report_rows(planned)
    else:
        rows = run(planned, settings, resources, progress=args.progress, desc=desc)
    csv_path, nc_path = write_results(rows, settings.runs_dir)
    write_provenance(settings, args, rows)
    print_points(rows)
    print(f"results: {csv_path} (and {nc_path.name})")
    return rows


def write_provenance(settings: Settings, args: argparse.Namespace, rows: list[dict]) -> Path:
    """provenance.json beside results.csv: command, options, seeds, versions, wall times.

    The per-point records (config, seed, data, versions) are in each point's run.json;
    this is the record of the table as a whole.
    """
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["train"] = settings.train
    config["data"] = settings.data
    walls = [float(r["wall_s"]) for r in rows if r.get("wall_s") not in ("", None)]
    record = run_record(config=config, seed=args.seeds if args.seeds is not None else -1)
    packed = sum(engine.point_record(r["folder"]).get("pack", 1) > 1
                 for r in rows if r.get("folder"))  # fmt: skip
    record["points"] = {"rows": len(rows),
                        "finished": sum(r.get("status") == "finished" for r in rows),
                        "sum_wall_s": sum(walls), "pack": settings.pack,
                        "rows_trained_in_packs": packed}  # fmt: skip
    path = settings.runs_dir / "provenance.json"
    write_json(path, record)
    return path


def higher_is_better(task: str) -> bool:
    from elmnet.tasks import task_module

    return task_module(task).Task.higher_is_better


def report_tradeoff(rows: list[dict], settings: Settings, d_m_curves: bool, k_c_curves: bool,
                    prefix: str = "tradeoff") -> list[dict]:  # fmt: skip
    """Summary tables, interior-optimum verdicts and figures of a fixed-budget sweep.

    Returns the summary over d_m (one curve per budget and k_c).
    """
    metric, better = rows[0]["metric"], higher_is_better(settings.task)
    by_dm = summarise(rows, "d_m", ("budget", "k_c"))
    if d_m_curves:
        print(f"\ntest {metric} at a fixed budget, by d_m (mean ± sd over seeds):")
        print_summary(by_dm, "d_m", ("budget", "k_c"), metric)
        for (budget, k_c), curve in curves(by_dm, ("budget", "k_c")).items():
            verdict = interior_optimum(curve, "d_m", better)
            print(f"interior optimum in d_m at P ≈ {int(budget):,}, k_c {k_c}: {verdict}")
        if by_dm:
            plot_tradeoff(by_dm, settings.task, metric, settings.runs_dir / f"{prefix}_d_m.png")
            print(f"figure: {settings.runs_dir / f'{prefix}_d_m.png'}")
    if k_c_curves:
        by_kc = summarise(rows, "k_c", ("budget", "d_m"))
        print(f"\ntest {metric} at a fixed budget, by k_c (mean ± sd over seeds):")
        print_summary(by_kc, "k_c", ("budget", "d_m"), metric)
        for (budget, d_m), curve in curves(by_kc, ("budget", "d_m")).items():
            verdict = interior_optimum(curve, "k_c", better)
            print(f"interior optimum in k_c at P ≈ {int(budget):,}, d_m {d_m}: {verdict}")
        if by_kc:
            plot_kc(by_kc, settings.task, metric, settings.runs_dir / f"{prefix}_k_c.png")
            print(f"figure: {settings.runs_dir / f'{prefix}_k_c.png'}")
    return by_dm
