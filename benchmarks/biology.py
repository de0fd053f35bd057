"""Every fit the biology notebooks read: `python -m benchmarks.biology --preset cpu`.

The notebooks under notebooks/ ask what the fitted surrogates say about the cell (how
much memory each mechanism needs, which timescales, whether dendritic branches matter,
how one neuron compares with the network sweeps). This command makes their data, on the
sweep engine (`elmbridge.sweep`): one `surrogate.fit` run folder per point under
``<out>/runs/``, finished points skipped and unfinished ones resumed when the command is
run again, the points side by side with ``--scheduler local`` (one per core) or on a
Dask cluster with ``--scheduler ADDRESS``. Then it writes the tables the notebooks read:

=======================  ===========================================================
``results.csv``          one row per (study, point): study, cell, d_m, d_tree, d_brch,
                         routing, tau_max_ms, learn_tau_m, n_parameters, k_e, k_c, test
                         AUC, soma RMSE (mV), …, each with its bootstrap 95 % interval
                         over test simulations ("AUC low", "AUC high", …), the scored
                         test spike bins, status, folder (relative to <out>)
``learned_tau.csv``      the learned τ_m (ms) of every learnable-τ fit, one row per unit
``freeze.csv``           test AUC with the memory units above each τ cut-off frozen
                         (`surrogate.timescales`), learnable-τ and fixed-τ fits
``weights.csv``          the synaptic weights of the morphology-routed fit, per input:
                         kind, segment, branch, weight (summed over its slots)
``segments.csv``         each cell's segment table with the inferred parent and 2-D
                         coordinates (µm): the reconstruction's x–y projection when the
                         store is a biophys cell's, else a dendrogram layout
``biology.json``         preset, command, provenance, store paths, point outcomes
=======================  ===========================================================

Studies (names in the ``study`` column); every value is the preset's (`PRESETS`):

- ``d_m``: d_m grid × cells (the four L5PC variants), Branch-ELM with NeuronIO routing;
- ``point``: the point-neuron baselines (`surrogate.point_neurons`: LIF, AdEx) per cell;
- ``learn_tau``: learnable τ_m at d_m `d_m_ref`, per cell of `learn_tau_cells`;
- ``tau_max``: the τ_max grid at d_m `d_m_ref`, per cell of `tau_max_cells`;
- ``routing``: NeuronIO, random, morphology and (as a reference at its own, larger,
  parameter count) no routing on `routing_cell` at d_m `d_m_ref`; NeuronIO and random
  get the morphology routing's d_tree and d_brch, so the three branched routings have
  exactly the same parameter count;
- ``d_tree``: the morphology routing at each d_tree of the grid, same cell and d_m.

A point that two studies share (d_m `d_m_ref` at τ_max 150 ms is both a ``d_m`` and a
``tau_max`` point) is fitted once; it gets one row per study.

Presets and their cost. Every **cpu** fit trains with lr 2e-3 and keeps the epoch of the
best validation AUC: on the 24 × 3 s L5PC store a d_m 20 fit of 1200 batches then reaches
test AUC ≈0.95, where lr 5e-4 (the laptop preset's) leaves several fits of the same
length below AUC 0.5 (measured this way before this preset was set). Each cell's fits are
scored on one held-out test store (`surrogate.stores`: 12–24 simulations × 6 s from
data seed 1000, ≥ 50 scored spike bins; all 24 simulations of the training store then
train and validate). The arithmetic, from one-thread measurements on the 2-core build
machine while another job shared it (CPU seconds; `surrogate.fit` on a 1278-input store,
batch 8 of 500 ms): one training batch of the Branch-ELM (d_tree 45, d_brch 100) costs
≈0.09 s with its data loading (0.035–0.044 s of it the model, for d_m 1–50); without
routing (1278 branches) the model alone takes ≈0.31 s, so that point counts 8 times. A
fit of 8 epochs × 150 batches is 1200 × 0.09 ≈ 110 s, plus 8 validations and the test
on 72–144 s of held-out simulation (with its bootstrap), ≈40 s: ≈150 s. The ELM points:
24 (d_m grid) + 4 (learnable τ) + 16 (τ_max: 5 values × 4 cells, the 150 ms ones shared
with the d_m grid) + 3 branched routings + 8 (no routing, 8×) + 4 (d_tree grid, 45
shared) = 59 fit equivalents × 150 s ≈ 8,900 CPU-s ≈ 1 h 15 min on 2 cores. The point
neurons cost more per batch (≈0.5 CPU-s LIF, ≈1.0 s AdEx, measured the same way), so
they get 3 × 100 batches: (150 + 300) s × 4 cells ≈ 1,800 CPU-s ≈ 15 min on 2 cores. The
data, at ≈10 core-s per simulated second (measured 5–15 by cell): the training stores
(24 × 3 s per cell) 2,900 core-s ≈ 24 min, the test stores (12–24 × 6 s per cell)
2,900–5,800 core-s ≈ 24–48 min on 2 cores; both are cached and shared with
`benchmarks.surrogate_efficiency`. Total ≈ 2 h 20 min – 2 h 45 min with
``--scheduler local`` (two points at a time) from an empty cache, ≈1 h 30 min with the
stores made; the freezing evaluation (8 fits × 6 cut-offs) adds a few minutes. Measured
(the run of docs/results/biology_cpu/, stores made, the machine shared with other jobs at
load 4–7): 48 of the 60 points in 1 h 30 min, the other 12 in an earlier session; so
≈1 h 55 min for every point, ≈3 h from an empty cache. The fits
are short (1200 batches): they rank models by how much they learn from the same small
budget of data and steps, and a model that learns slowly is penalised for it.

**small** runs on tiny stores (CI: toy stores given with ``--stores``) in about a minute;
its numbers mean nothing, it exercises every table. **paper** uses the published data
sizes (`surrogate.config` "paper": 1408 simulations × 6 s, 35 × 10000 batches) for a GPU
cluster.
"""

import argparse
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from elmbridge import sweep
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import check_output_dir, write_csv, write_json, write_text
from elmbridge.provenance import run_record
from elmbridge.runs import RunFolder, run_status
from elmbridge.training import resolve_device
from elmnet.config import ELMConfig
from elmnet.params import neuron_parameters
from surrogate.config import FitConfig, preset_config
from surrogate.data import StoreInfo, count_completed_simulations, inspect_store
from surrogate.fit import check_same_fit, fit
from surrogate.model_file import load_model_file
from surrogate.morphology import dendrogram_layout, morphology_branches, segment_tree
from surrogate.stores import (
    HELDOUT_TEST,
    cached_test_sizes,
    default_store_path,
    ensure_data,
    make_test_store,
)
from surrogate.timescales import freeze_ablation

CELLS = ("L5PC", "L5PC-ampa", "L5PC-passive", "L5PC-hay2011")
STUDIES = ("d_m", "point", "learn_tau", "tau_max", "routing", "d_tree")

# What each preset runs. "fit_preset" and "fit" are `surrogate.config` sizes; "model" the
# Branch-ELM's d_tree / d_brch of the d_m, learn_tau and tau_max studies.
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(
        fit_preset="laptop", cells=("L5PC", "L5PC-ampa"),
        fit=dict(n_sims=4, duration_ms=1200, epochs=1, batches_per_epoch=2, batch_size=2,
                 val_fraction=0.25, test_fraction=0.25, max_spikes=1_000_000),
        model=dict(d_tree=4, d_brch=16),
        d_m=(1, 5), d_m_ref=5, point_models=("lif",), point_fit={},
        learn_tau_cells=("L5PC", "L5PC-ampa"),
        tau_max=(5.0, 500.0), tau_max_cells=("L5PC", "L5PC-ampa"),
        routing_cell="L5PC", routings=("neuronio", "random", "morphology", "none"),
        routing_d_tree=4, d_tree=(2, 8), freeze_cuts_ms=(3.0, 10.0, 30.0, 50.0, 100.0),
    ),
    "cpu": dict(
        fit_preset="laptop", cells=CELLS,
        fit=dict(epochs=8, batches_per_epoch=150, lr=2e-3, select_by="AUC"), test=HELDOUT_TEST,
        model=dict(d_tree=45, d_brch=100),
        d_m=(1, 2, 5, 10, 20, 50), d_m_ref=20, point_models=("lif", "adex"), learn_tau_cells=CELLS,
        point_fit=dict(epochs=3, batches_per_epoch=100),
        tau_max=(5.0, 20.0, 50.0, 150.0, 500.0), tau_max_cells=CELLS,
        routing_cell="L5PC", routings=("neuronio", "random", "morphology", "none"),
        routing_d_tree=45, d_tree=(2, 5, 15, 45, 90), freeze_cuts_ms=(3.0, 10.0, 30.0, 50.0, 100.0),
    ),
    "paper": dict(
        fit_preset="paper", cells=CELLS, fit={},
        model=dict(d_tree=45, d_brch=100),
        d_m=(1, 2, 5, 10, 20, 50), d_m_ref=20, point_models=("lif", "adex"), learn_tau_cells=CELLS,
        point_fit={},
        tau_max=(5.0, 20.0, 50.0, 150.0, 500.0), tau_max_cells=CELLS,
        routing_cell="L5PC", routings=("neuronio", "random", "morphology", "none"),
        routing_d_tree=45, d_tree=(2, 5, 15, 45, 90), freeze_cuts_ms=(3.0, 10.0, 30.0, 50.0, 100.0),
    ),
}  # fmt: skip


def point_configs(
    preset: dict[str, Any],
    stores: dict[str, StoreInfo],
    seed: int,
    tests: dict[str, str] | None = None,
) -> list[tuple[str, str, FitConfig]]:
    """(study, point name, fit configuration) of every point of a preset, in study order.

    `stores` maps each cell to its store; the routing study needs it to size its models.
    `tests` maps a cell to its held-out test store (`surrogate.stores`); a cell without
    one is tested on a slice of its own store.
    """
    base = dict(preset["fit"], **preset["model"], seed=seed)
    tests = tests or {}

    def config(cell: str, **values: Any) -> FitConfig:
        return preset_config(preset["fit_preset"], **{**base, "cell": cell,
                             "data": str(stores[cell].path), "test_data": tests.get(cell),
                             **values})  # fmt: skip

    out = []
    ref = preset["d_m_ref"]
    for cell in preset["cells"]:
        for d_m in preset["d_m"]:
            out.append(("d_m", f"{cell}_dm{d_m}", config(cell, d_m=d_m)))
    for cell in preset["cells"]:
        for kind in preset["point_models"]:
            out.append(("point", f"{cell}_{kind}", config(cell, model=kind, **preset["point_fit"])))
    for cell in preset["learn_tau_cells"]:
        out.append(
            ("learn_tau", f"{cell}_dm{ref}_learntau", config(cell, d_m=ref, learn_tau_m=True))
        )
    for cell in preset["tau_max_cells"]:
        for tau in preset["tau_max"]:
            out.append(
                ("tau_max", f"{cell}_dm{ref}_taumax{tau:g}", config(cell, d_m=ref, tau_max=tau))
            )
    cell = preset["routing_cell"]
    info = stores[cell]
    k = preset["routing_d_tree"]
    longest = max(len(b) for b in morphology_branches(info.segments, info.input_kind,
                                                      info.input_segment, k))  # fmt: skip
    for routing in preset["routings"]:
        # The morphology routing sets d_brch itself; the others match its shape.
        shape = dict(d_tree=k) if routing == "morphology" else dict(d_tree=k, d_brch=longest)
        if routing == "none":
            shape = dict(d_tree=info.n_inputs, d_brch=1)
        name = f"{cell}_dm{ref}_routing-{routing}"
        out.append(("routing", name, config(cell, d_m=ref, routing=routing, **shape)))
    for d_tree in preset["d_tree"]:
        name = f"{cell}_dm{ref}_morphology_dtree{d_tree}"
        out.append(("d_tree", name, config(cell, d_m=ref, routing="morphology", d_tree=d_tree)))
    if k not in preset["d_tree"]:  # the routing study's morphology point belongs here too
        out.append(("d_tree", f"{cell}_dm{ref}_routing-morphology",
                    config(cell, d_m=ref, routing="morphology", d_tree=k)))  # fmt: skip
    return out


def unique_points(
    configs: list[tuple[str, str, FitConfig]], runs_dir: Path, device: str | None
) -> tuple[list[sweep.Point], list[tuple[str, sweep.Point]]]:
    """The sweep's points (one per distinct configuration) and (study, point) per row."""
    by_config: dict[str, sweep.Point] = {}
    rows = []
    for study, name, config in configs:
        key = repr(sorted(asdict(config).items()))
        if key not in by_config:
            folder = str((runs_dir / name).resolve())
            job = {"config": config, "folder": folder, "device": device}
            gpu = 1.0 if (device or "").startswith("cuda") else 0.0
            by_config[key] = sweep.Point(name, folder, job, gpu=gpu)
        rows.append((study, by_config[key]))
    return list(by_config.values()), rows


def run_fits(points: list[sweep.Point], rows: list[tuple[str, sweep.Point]],
             scheduler: str | None, desc: str) -> tuple[list, list[sweep.Outcome]]:  # fmt: skip
    """Fit every point on the sweep engine: in this process (`scheduler` None), on a local
    cluster ("local") or at a Dask scheduler address. A finished run folder is reused only
    if it holds this very fit. Returns the (study, point) rows pointing at the points as
    run, and each point's outcome."""
    for point in points:
        if run_status(point.folder).finished:
            check_same_fit(RunFolder(point.folder), point.job["config"])
    scheduler = {None: sweep.SYNCHRONOUS, "local": None}.get(scheduler, scheduler)
    with sweep.sweep_client(sweep.Resources(scheduler=scheduler), len(points)) as (client, threads):
        points = [replace(p, job={**p.job, "threads": threads}) for p in points]
        rows = [(s, next(q for q in points if q.name == p.name)) for s, p in rows]
        outcomes = sweep.run_sweep(points, fit_point, client, desc=desc,
                                   progress=client is not None)  # fmt: skip
    return rows, outcomes


def fit_point(job: dict[str, Any]) -> dict[str, Any] | None:
    """One point: fit (or resume, or reuse) its run folder. Top level, for Dask."""
    import torch

    if job["device"] in (None, "cpu"):
        torch.set_num_threads(job.get("threads", 1))
    device = sweep.worker_device(job["device"])
    return sweep.timed_point(job["folder"], device or "auto", lambda: fit(
        job["config"], job["folder"], resume=True, device=device, progress=False))  # fmt: skip


# ---------------------------------------------------------------------------------------
# Tables


def model_numbers(folder: Path) -> dict[str, Any]:
    """n_parameters, k_e, k_c and d_brch of a run's model, from its record (point neurons:
    n_parameters only)."""
    record = RunFolder(folder, upgrade=False).record()
    if record.get("model_kind", "elm") != "elm":
        return {"n_parameters": record.get("n_parameters", math.nan)}
    config = ELMConfig.from_dict(record["model_config"])
    count = neuron_parameters(config)
    return {"n_parameters": count.total, "k_e": count.k_e, "k_c": count.k_c,
            "d_brch": config.d_brch}  # fmt: skip


def result_rows(rows: list[tuple[str, sweep.Point]], outcomes, out: Path) -> list[dict]:
    """One row of results.csv per (study, point)."""
    status = {o.point.name: o for o in outcomes}
    table = []
    for study, point in rows:
        config: FitConfig = point.job["config"]
        row = {
            "study": study, "cell": config.cell, "model": config.model, "d_m": config.d_m,
            "d_tree": config.d_tree,
            "routing": config.routing, "tau_max_ms": config.tau_max,
            "learn_tau_m": config.learn_tau_m, "seed": config.seed,
        }  # fmt: skip
        run = run_status(point.folder)
        outcome = status.get(point.name)
        row["status"] = "finished" if run.finished else (outcome.status if outcome else "missing")
        row["error"] = outcome.error if outcome else ""
        if run.exists:
            row.update(model_numbers(Path(point.folder)))
        metrics = run.result["test_metrics"] if run.finished else {}
        intervals = metrics.get("intervals_95", {})
        for key in ("AUC", "TP @ 0.0100 FP", "soma_RMSE", "soma_explained_variance_percent"):
            row[key] = metrics.get(key, math.nan)
            # The bootstrap interval over test simulations: how sure each number is.
            low, high = intervals.get(key, (math.nan, math.nan))
            row[f"{key} low"], row[f"{key} high"] = low, high
        row["test_spike_bins"] = metrics.get("split", {}).get("n_spike_bins_scored", math.nan)
        row["train_s"] = run.result["train_s"] if run.finished else math.nan
        row["folder"] = str(Path(point.folder).relative_to(out.resolve()))
        table.append(row)
    return table


def test_split(folder: Path) -> list[int]:
    return list(RunFolder(folder, upgrade=False).record()["splits"]["test"])


def tau_rows(points: list[tuple[str, sweep.Point]], out: Path) -> list[dict]:
    """The learned τ_m of the finished learnable-τ fits, one row per memory unit."""
    rows = []
    for study, point in points:
        if study != "learn_tau" or not run_status(point.folder).finished:
            continue
        model, _ = load_model_file(Path(point.folder) / "best.pt")
        c = model.config
        start = np.logspace(math.log10(c.tau_min), math.log10(c.tau_max), c.d_m)
        for unit, tau in enumerate(model.tau_m.detach().double().numpy()):
            rows.append({"cell": point.job["config"].cell, "d_m": c.d_m, "unit": unit,
                         "tau_init_ms": float(start[unit]), "tau_ms": float(tau),
                         "folder": str(Path(point.folder).relative_to(out.resolve()))})  # fmt: skip
    return rows


def freeze_rows(points, stores, preset, device) -> list[dict]:
    """freeze.csv: each learnable-τ fit, and the fixed-τ fit of the same cell at d_m_ref."""
    chosen = {}
    for study, point in points:
        c = point.job["config"]
        fixed = (
            study == "d_m" and c.d_m == preset["d_m_ref"] and c.cell in preset["learn_tau_cells"]
        )
        if (study == "learn_tau" or fixed) and run_status(point.folder).finished:
            chosen[point.name] = point
    rows = []
    for point in chosen.values():
        config = point.job["config"]
        model, _ = load_model_file(Path(point.folder) / "best.pt")
        if config.test_data is not None:  # the held-out store: all its simulations
            info = inspect_store(config.test_data)
            sims = [int(s) for s in info.simulations]
        else:
            info, sims = stores[config.cell], test_split(Path(point.folder))
        table = freeze_ablation(model, info, sims, preset["freeze_cuts_ms"], config.protocol(),
                                device=device or "cpu")  # fmt: skip
        for row in table:
            rows.append({"cell": config.cell, "d_m": config.d_m, "learn_tau_m":
                         config.learn_tau_m, **row, "point": point.name})  # fmt: skip
    return rows


def weight_rows(points) -> list[dict]:
    """weights.csv: the morphology-routed fit's weight per input (summed over its slots)."""
    rows = []
    for study, point in points:
        c = point.job["config"]
        if study != "routing" or c.routing != "morphology" or not run_status(point.folder).finished:
            continue
        model, _ = load_model_file(Path(point.folder) / "best.pt")
        n = model.config.d_in
        weight, branch = np.zeros(n), np.full(n, -1)
        slots = np.flatnonzero(model.syn_valid.numpy())
        channels = model.syn_index.numpy()[slots]
        np.add.at(weight, channels, model.w_s.detach().double().numpy()[slots])
        branch[channels] = slots // model.config.d_brch
        info = inspect_store(c.data)
        for channel in range(n):
            rows.append({"cell": c.cell, "input": channel, "kind": info.input_kind[channel],
                         "segment": info.input_segment[channel], "branch": int(branch[channel]),
                         "weight": float(weight[channel])})  # fmt: skip
    return rows


def segment_rows(cell: str, info: StoreInfo) -> list[dict]:
    """segments.csv rows of one cell: the table, parents and 2-D coordinates (µm)."""
    tree = segment_tree(info.segments)
    xy, source = dendrogram_layout(tree), "dendrogram"
    real = reconstruction_xy(cell, info)
    if real is not None:
        xy, source = real, "reconstruction x-y"
    rows = []
    for i in range(tree.n_segments):
        rows.append({"cell": cell, "segment": i, "section": info.segments["section"][i],
                     "tree": str(tree.tree[i]), "path_distance_um": float(tree.path_distance_um[i]),
                     "parent": int(tree.parent[i]), "x_um": float(xy[i, 0]),
                     "y_um": float(xy[i, 1]), "layout": source})  # fmt: skip
    return rows


def reconstruction_xy(cell: str, info: StoreInfo) -> np.ndarray | None:
    """The cell's segment centres projected on x–y (µm), when the store's segment table is
    that of the biophys cell `cell`; None otherwise (toy or imported stores)."""
    try:
        from biophys import cells

        if cell not in cells.CELL_NAMES:
            return None
        description = cells.describe_cell(cell)
        if list(description.segments["section"]) != list(info.segments["section"]):
            return None
        return cells.segment_coordinates(cell)[:, :2]
    except (ImportError, UserError):  # no NEURON, or no morphology file, here
        return None


# ---------------------------------------------------------------------------------------
# Command line


def prepare_stores(
    preset: dict[str, Any], stores_dir: Path | None, make: bool = True
) -> dict[str, StoreInfo] | None:
    """Each cell's store: ``<stores_dir>/<cell>.zarr``, or the preset's default store,
    simulated (one cell after another) when missing. With `make` False a missing default
    store is only reported, and the answer is None."""
    cells = sorted({*preset["cells"], preset["routing_cell"], *preset["learn_tau_cells"],
                    *preset["tau_max_cells"]}, key=list(CELLS).index)  # fmt: skip
    if stores_dir is None and not make:
        missing = []
        for cell in cells:
            config = preset_config(preset["fit_preset"], **{**preset["fit"], "cell": cell})
            path = default_store_path(cell, config.n_sims, config.duration_ms, config.data_seed)
            if count_completed_simulations(path) < config.n_sims:
                missing.append(f"{cell} ({config.n_sims} × {config.duration_ms} ms at {path})")
        if missing:
            print("would first simulate the stores of " + "; ".join(missing))
            print(
                "the points are listed once the stores exist (the routing study is sized on them)"
            )
            return None
    out = {}
    for cell in cells:
        if stores_dir is not None:
            path = stores_dir / f"{cell}.zarr"
            if not path.exists():
                raise UserError(f"--stores {stores_dir} has no store {path.name} for {cell}")
            out[cell] = inspect_store(path)
            continue
        config = preset_config(preset["fit_preset"], **{**preset["fit"], "cell": cell})
        out[cell], _ = ensure_data(config)
    return out


def prepare_test_stores(
    preset: dict[str, Any], stores_dir: Path | None, make: bool = True
) -> dict[str, str] | None:
    """Each cell's held-out test store (path) when the preset has one ("test") and the
    stores are the default ones; {} otherwise. With `make` False a missing store is only
    reported, and the answer is None."""
    if "test" not in preset or stores_dir is not None:
        return {}
    test = preset["test"]
    cells = sorted({*preset["cells"], preset["routing_cell"], *preset["learn_tau_cells"],
                    *preset["tau_max_cells"]}, key=list(CELLS).index)  # fmt: skip
    if not make:
        missing = []
        for cell in cells:
            n = max([test["n_sims"], *cached_test_sizes(cell, test)])
            path = default_store_path(cell, n, test["duration_ms"], test["data_seed"])
            if count_completed_simulations(path) < n:
                missing.append(f"{cell} test {n} × {test['duration_ms']} ms at {path}")
        if missing:
            print("would first simulate the test stores of " + "; ".join(missing))
            return None
    protocol = preset_config(preset["fit_preset"], **preset["fit"]).protocol()
    return {cell: make_test_store(cell, test, protocol)["path"] for cell in cells}


def check_study_args(args: argparse.Namespace, name: str) -> Path:
    """Refuse bad --seed, --out, --device and --stores of a study command before any work;
    returns the results folder (default runs/<name>_<preset>)."""
    if args.seed < 0:
        raise UserError(f"--seed must be ≥ 0, got {args.seed}")
    out = args.out or Path("runs") / f"{name}_{args.preset}"
    check_output_dir(out)
    resolve_device(args.device)
    if args.stores is not None and not args.stores.is_dir():
        raise UserError(f"--stores {args.stores} is not a folder")
    return out


def study_parser(prog: str, doc: str, presets, name: str, stores_help: str):
    """The command line the study commands share (biology, efficiency): --preset, --out,
    --stores, --seed, --device, --scheduler and --dry-run; checked by `check_study_args`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets: " + ", ".join(presets) + " (sizes and cost: the module docstring).",
    )
    parser.add_argument("--preset", default="cpu", choices=list(presets))
    parser.add_argument("--out", type=Path, help=f"results folder (default runs/{name}_<preset>)")
    parser.add_argument("--stores", type=Path, help=stores_help)
    parser.add_argument("--seed", type=int, default=0, help="seed of every fit (default 0)")
    parser.add_argument("--device", help="cpu, cuda, … (default: cuda when present)")
    parser.add_argument(
        "--scheduler",
        help="in this process one after another (default), 'local' (a Dask LocalCluster, "
        "one point per core) or a Dask scheduler address",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the points and stop")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = study_parser(
        "python -m benchmarks.biology", __doc__, PRESETS, "biology",
        "folder of existing stores <cell>.zarr (default: make them)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    out = check_study_args(args, "biology")
    stores = prepare_stores(preset, args.stores, make=not args.dry_run)
    tests = prepare_test_stores(preset, args.stores, make=not args.dry_run)
    if stores is None or tests is None:
        return
    configs = point_configs(preset, stores, args.seed, tests)
    points, rows = unique_points(configs, out / "runs", args.device)
    if args.dry_run:
        for study, point in rows:
            print(f"{study:<10} {point.name}")
        print(f"{len(points)} distinct fits")
        return
    rows, outcomes = run_fits(points, rows, args.scheduler, "biology")
    write_tables(out, rows, outcomes, stores, preset, args)


# The columns of a table with no rows yet (its fits unfinished), so that readers find them.
EMPTY = {
    "learned_tau": ("cell", "d_m", "unit", "tau_init_ms", "tau_ms", "folder"),
    "freeze": ("cell", "d_m", "learn_tau_m", "tau_cut_ms", "n_frozen", "n_units", "AUC",
               "soma_RMSE", "AUC_lost", "point"),
    "weights": ("cell", "input", "kind", "segment", "branch", "weight"),
}  # fmt: skip


def write_table(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """`rows` as CSV; with no rows, a header of `columns` alone."""
    if rows:
        write_csv(path, rows)
    else:
        write_text(path, ",".join(columns) + "\n")


def write_tables(out: Path, rows, outcomes, stores, preset, args) -> None:
    """Write every table of the module docstring into `out` and print a summary."""
    table = result_rows(rows, outcomes, out)
    write_csv(out / "results.csv", table)
    write_table(out / "learned_tau.csv", tau_rows(rows, out), EMPTY["learned_tau"])
    freeze = freeze_rows(rows, stores, preset, args.device)
    write_table(out / "freeze.csv", freeze, EMPTY["freeze"])
    write_table(out / "weights.csv", weight_rows(rows), EMPTY["weights"])
    write_csv(out / "segments.csv", [r for cell, info in stores.items()
                                     for r in segment_rows(cell, info)])  # fmt: skip
    record = run_record({"preset": args.preset, "values": preset}, args.seed)
    record["stores"] = {cell: str(info.path.resolve()) for cell, info in stores.items()}
    record["test_stores"] = {
        cell: config.test_data for cell, config in
        {p.job["config"].cell: p.job["config"] for _, p in rows}.items() if config.test_data
    }  # fmt: skip
    record["outcomes"] = {o.point.name: {"status": o.status, "error": o.error} for o in outcomes}
    write_json(out / "biology.json", record)
    failed = [o for o in outcomes if o.status == "failed"]
    finished = sum(r["status"] == "finished" for r in table)
    print(f"{finished} of {len(table)} rows finished; {len(failed)} points failed")
    for o in failed:
        print(f"  {o.point.name}: {o.error}")
    print(f"tables in {out}: results.csv, learned_tau.csv, freeze.csv, weights.csv, segments.csv")


if __name__ == "__main__":
    run_cli(main)
