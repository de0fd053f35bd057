"""How much NEURON time a surrogate needs: `python -m benchmarks.surrogate_efficiency`.

The data-efficiency and warm-start study of issue 13. Every fit is one `surrogate.fit` run
folder under ``<out>/runs/`` on the sweep engine (`elmbridge.sweep`, shared with
`benchmarks.biology`: finished points are skipped, unfinished ones resumed when the
command is run again; ``--scheduler local`` runs one point per core). All fits of a cell
are scored on ONE fixed held-out test store of that cell (`surrogate.fit --test-data`),
simulated from a data seed of its own; the training data of every point are the first n
simulations of one training store per cell and simulation length (`--n-sims` with
`--data`), so a point with more data holds the data of the smaller ones.

Studies (the ``study`` column); the values are the preset's (`PRESETS`):

- ``seconds``: test AUC against the simulated seconds of training data (train and
  validation simulations together: what the user pays NEURON for), L5PC, d_m 20;
- ``sim_length``: the same simulated seconds as 3 s or as 6 s simulations (training skips
  the first 500 ms of each simulation, so longer ones waste less);
- ``recipe``: one option changed at a time around the base fit: learning rate, batch size
  (at the same number of training windows, hence the same compute), the validation
  metric choosing the epoch (`--select-by`), input dropout, early stopping (`--patience`).
  The base, used by every other study too: lr 2e-3, batch 8, the epoch of the best
  validation AUC (on the laptop fit these two gave AUC ≈0.964 against 0.94 for lr 5e-4 and
  selection by soma RMSE), no input dropout, no early stopping;
- ``warm_start``: L5PC-ampa and L5PC-hay2011 from a random initialisation and from the
  released ``num_memory_20`` (`--init`), at several amounts of data.

A point that two studies share (the base fit is also a ``seconds`` point) is fitted once
and has one row per study. Outputs in ``<out>``:

=======================  ===========================================================
``results.csv``          one row per (study, point): study, cell, train_seconds
                         (simulated), sim_length_ms, n_sims, lr, batch_size,
                         select_by, input_dropout, patience, init, epochs_run,
                         best_epoch, test AUC / TP @ 1 % FP / soma RMSE (mV) each with
                         its bootstrap 95 % interval (``_lo``, ``_hi``; over test
                         simulations), n_test_spike_bins, train_wall_s, fit_wall_s,
                         simulate_wall_s, status, folder
``auc_vs_seconds.png``   test AUC and soma RMSE against simulated seconds of training
                         data, a column per cell, a line per simulation length and
                         initialisation, with the interval bars
``stores.json``          every store used, its simulations and generation wall time
``provenance.json``      preset, command, software versions, stores, point outcomes
=======================  ===========================================================

``simulate_wall_s`` of a point is its share of its training store's generation time
(n_sims / store simulations × the store's wall time; empty when the store was found
made); the test store is shared by every point and reported in stores.json.

Presets and their cost. **cpu** (for the 2-core build machine; from one-thread
measurements there while another job shared it, as in `benchmarks.biology`): a batch of 8
windows of the Branch-ELM (d_m 20, d_tree 45, d_brch 100) ≈0.09 CPU-s, so a fit of
12 × 200 batches ≈220 s, plus its validations (1/6 of its data, ≈0.13 CPU-s per simulated
second each, 12 times: ≈100 s at 400 s of data, a few s at 50 s) and the test (72 s
simulated, bootstrap included ≈20 s): ≈250–340 s, say 270 s on average. Fits: ``seconds``
4 + ``sim_length`` 2 (the 3 s points are the ``seconds`` ones) + ``recipe`` 6 (its base
is the 100 s ``seconds`` point) + ``warm_start`` 12 = 24 fits × 270 s ≈ 6,500 CPU-s
≈ 55 min with ``--scheduler local`` on 2 cores. Data, at ≈12.5 core-s per simulated
second (10–15): L5PC 133 × 3 s (399 s) and 33 × 6 s (198 s), L5PC-ampa and L5PC-hay2011
67 × 3 s (201 s) each, and a test store of 12 × 6 s per cell (216 s; grown when it holds
fewer than 50 scored spike bins) = 1,215 simulated s ≈ 15,200 core-s ≈ 2 h 7 min on 2
cores, made once and cached (`surrogate.stores.ensure_data`). Total ≈ 3 h.

**small** runs on toy stores given with ``--stores`` (CI: ``<cell>_<ms>ms.zarr`` for
training, ``<cell>_test.zarr`` for test) in about a minute, warm-starting from ``--init``
(the released models do not fit toy cells; without it the ``warm_start`` study is left
out); its numbers mean nothing, it exercises every table and figure.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.biology import check_study_args, run_fits, study_parser, unique_points
from elmbridge import sweep
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import read_json, user_writes, write_csv, write_json
from elmbridge.provenance import run_record
from elmbridge.runs import run_status
from surrogate.config import FitConfig, preset_config
from surrogate.data import count_completed_simulations, inspect_store
from surrogate.stores import (
    HELDOUT_TEST,
    cached_test_sizes,
    default_store_path,
    ensure_data,
    make_test_store,
    scored_spike_bins,
    store_config,
)

STUDIES = ("seconds", "sim_length", "recipe", "warm_start")
TP_KEY = "TP @ 0.0100 FP"
METRICS = (("AUC", "AUC"), ("TP_1pct_FP", TP_KEY), ("soma_RMSE", "soma_RMSE"))

# What each preset runs. "fit": `surrogate.config` values of every fit (the base recipe);
# "recipe": the values tried one at a time around it; seconds are simulated seconds of
# training data, turned into the first round(seconds / sim length) simulations.
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(
        cell="L5PC", warm_cells=("L5PC-ampa",), durations_ms=(1200, 2400), base_ms=1200,
        fit=dict(d_m=5, d_tree=4, d_brch=16, epochs=2, batches_per_epoch=2, batch_size=2,
                 lr=2e-3, select_by="AUC", val_fraction=0.25, max_spikes=1_000_000),
        seconds=(2.4, 4.8), sim_length_seconds=(4.8,), recipe_seconds=4.8,
        recipe=dict(lr=(5e-4,), batch_size=(4,), select_by=("soma_RMSE", "combined"),
                    input_dropout=(0.1,), patience=(1,)),
        warm_seconds=(4.8,), init=None,
        test=dict(n_sims=3, duration_ms=1500, data_seed=1000, min_spike_bins=50, max_sims=3),
        data_seed=0,
    ),
    "cpu": dict(
        cell="L5PC", warm_cells=("L5PC-ampa", "L5PC-hay2011"), durations_ms=(3000, 6000),
        base_ms=3000,
        fit=dict(d_m=20, d_tree=45, d_brch=100, epochs=12, batches_per_epoch=200, batch_size=8,
                 lr=2e-3, select_by="AUC"),
        seconds=(50, 100, 200, 400), sim_length_seconds=(100, 200), recipe_seconds=100,
        recipe=dict(lr=(5e-4,), batch_size=(32,), select_by=("soma_RMSE", "combined"),
                    input_dropout=(0.1,), patience=(3,)),
        warm_seconds=(50, 100, 200), init="num_memory_20",
        test=HELDOUT_TEST,
        data_seed=0,
    ),
}  # fmt: skip


def n_sims_for(seconds: float, duration_ms: int) -> int:
    """Simulations of `duration_ms` that make `seconds` of simulated data (at least 2: one
    to train on, one to validate)."""
    return max(2, round(seconds * 1000 / duration_ms))


def training_needs(preset: dict[str, Any], warm: bool = True) -> dict[tuple[str, int], int]:
    """(cell, simulation length ms) → simulations the largest point of the preset uses
    (`warm` False: without the ``warm_start`` study)."""
    need: dict[tuple[str, int], int] = {}

    def use(cell: str, duration: int, seconds: float) -> None:
        key = (cell, duration)
        need[key] = max(need.get(key, 0), n_sims_for(seconds, duration))

    for s in preset["seconds"]:
        use(preset["cell"], preset["base_ms"], s)
    for s in preset["sim_length_seconds"]:
        for d in preset["durations_ms"]:
            use(preset["cell"], d, s)
    use(preset["cell"], preset["base_ms"], preset["recipe_seconds"])
    for cell in preset["warm_cells"] if warm else ():
        for s in preset["warm_seconds"]:
            use(cell, preset["base_ms"], s)
    return need


# ---------------------------------------------------------------------------------------
# Stores


def prepare_stores(
    preset: dict[str, Any], stores_dir: Path | None, out: Path, make: bool, warm: bool = True
) -> dict[str, dict[str, Any]]:
    """Every store of the preset, keyed "train <cell> <ms>" and "test <cell>": its path,
    simulations and generation wall time (kept from earlier runs in stores.json); the
    warm-start cells only with `warm`.

    From `stores_dir` when given; else the cached default stores, simulated when missing
    (with `make` False nothing is simulated: the planned paths, the missing ones listed)."""
    protocol = preset_config(**preset["fit"]).protocol()
    cells = [preset["cell"], *(preset["warm_cells"] if warm else ())]
    before = read_json(out / "stores.json") if (out / "stores.json").is_file() else {}
    stores: dict[str, dict[str, Any]] = {}
    missing = []
    for (cell, duration), n in training_needs(preset, warm).items():
        key = f"train {cell} {duration}"
        if stores_dir is not None:
            path = stores_dir / f"{cell}_{duration}ms.zarr"
            if not path.exists():
                raise UserError(f"--stores {stores_dir} has no store {path.name}")
            info = inspect_store(path)
            if info.n_time != duration:
                raise UserError(f"--stores: {path} holds {info.n_time} ms simulations, not "
                                f"{duration} ms as its name says")  # fmt: skip
            stores[key] = {"path": str(path.resolve()), "duration_ms": duration,
                           "n_sims": len(info.simulations)}  # fmt: skip
            continue
        config = store_config(cell, n, duration, preset["data_seed"])
        path = default_store_path(cell, n, duration, preset["data_seed"])
        if not make:
            if count_completed_simulations(path) < n:
                missing.append(f"{cell} {n} × {duration} ms at {path}")
            stores[key] = {"path": str(path.resolve()), "duration_ms": duration, "n_sims": n}
            continue
        info, made = ensure_data(config)
        earlier = before.get(key, {})
        if made is None and earlier.get("path") == str(info.path.resolve()):
            made = earlier.get("generation_s")
        stores[key] = {"path": str(info.path.resolve()), "duration_ms": duration,
                       "n_sims": len(info.simulations), "generation_s": made}  # fmt: skip
    for cell in cells:
        key = f"test {cell}"
        if stores_dir is not None:
            path = stores_dir / f"{cell}_test.zarr"
            if not path.exists():
                raise UserError(f"--stores {stores_dir} has no store {path.name}")
            bins = scored_spike_bins(path, protocol)
            if bins < preset["test"]["min_spike_bins"]:
                print(f"notice: the test store {path} holds only {bins} scored spike bins")
            n = len(inspect_store(path).simulations)
            stores[key] = {"path": str(path.resolve()), "n_sims": n,
                           "scored_spike_bins": bins}  # fmt: skip
            continue
        if not make:
            test = preset["test"]
            n = max([test["n_sims"], *cached_test_sizes(cell, test)])
            path = default_store_path(cell, n, test["duration_ms"], test["data_seed"])
            if count_completed_simulations(path) < n:
                missing.append(f"{cell} test {n} × {test['duration_ms']} ms at {path}")
            stores[key] = {"path": str(path.resolve()), "n_sims": n}
            continue
        entry = make_test_store(cell, preset["test"], protocol)
        earlier = before.get(key, {})
        if entry["generation_s"] is None and earlier.get("path") == entry["path"]:
            entry["generation_s"] = earlier.get("generation_s")
        stores[key] = entry
    if missing:
        print("would first simulate the stores of " + "; ".join(missing))
    if make:
        write_json(out / "stores.json", stores)
    return stores


# ---------------------------------------------------------------------------------------
# Points


def point_name(config: FitConfig, duration_ms: int) -> str:
    """A run folder name that spells out what sets the point apart."""
    init = "random" if config.init is None else Path(config.init).stem
    patience = "none" if config.patience is None else config.patience
    return (
        f"{config.cell}_{config.first_sims}x{duration_ms}ms_lr{config.lr:g}_"
        f"b{config.batch_size}_{config.select_by}_drop{config.input_dropout:g}_"
        f"pat{patience}_{init}"
    )


def point_configs(
    preset: dict[str, Any], stores: dict[str, dict[str, Any]], seed: int, init: str | None
) -> list[tuple[str, str, FitConfig]]:
    """(study, point name, fit configuration) of every point of a preset, in study order.

    `init` is the warm start's source (None: the ``warm_start`` study is left out)."""

    def config(cell: str, duration: int, seconds: float, **values: Any) -> tuple:
        fit = {**preset["fit"], **values}
        c = preset_config(**fit, cell=cell, seed=seed,
                          data=stores[f"train {cell} {duration}"]["path"],
                          first_sims=n_sims_for(seconds, duration),
                          test_data=stores[f"test {cell}"]["path"])  # fmt: skip
        return point_name(c, duration), c

    cell, base_ms = preset["cell"], preset["base_ms"]
    out = []
    for s in preset["seconds"]:
        out.append(("seconds", config(cell, base_ms, s)))
    for s in preset["sim_length_seconds"]:
        for d in preset["durations_ms"]:
            out.append(("sim_length", config(cell, d, s)))
    seconds = preset["recipe_seconds"]
    out.append(("recipe", config(cell, base_ms, seconds)))
    base_batch = preset["fit"]["batch_size"]
    for key, values in preset["recipe"].items():
        for value in values:
            extra: dict[str, Any] = {key: value}
            if key == "batch_size":  # the same training windows, so the same compute
                windows = preset["fit"]["batches_per_epoch"] * base_batch
                extra["batches_per_epoch"] = max(1, windows // value)
            out.append(("recipe", config(cell, base_ms, seconds, **extra)))
    if init is not None:
        for warm_cell in preset["warm_cells"]:
            for s in preset["warm_seconds"]:
                for source in (None, init):
                    out.append(("warm_start", config(warm_cell, base_ms, s, init=source)))
    return [(study, name, c) for study, (name, c) in out]


# ---------------------------------------------------------------------------------------
# Tables and figure


def result_rows(
    rows: list[tuple[str, sweep.Point]], outcomes, out: Path, stores: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row of results.csv per (study, point)."""
    status = {o.point.name: o for o in outcomes}
    by_path = {entry["path"]: entry for entry in stores.values()}
    table = []
    for study, point in rows:
        c: FitConfig = point.job["config"]
        store = by_path.get(str(Path(c.data).resolve()), {})
        duration = store.get("duration_ms", math.nan)
        row: dict[str, Any] = {
            "study": study, "cell": c.cell, "train_seconds": c.first_sims * duration / 1000,
            "sim_length_ms": duration, "n_sims": c.first_sims, "lr": c.lr,
            "batch_size": c.batch_size, "batches_per_epoch": c.batches_per_epoch,
            "select_by": c.select_by, "input_dropout": c.input_dropout,
            "patience": "" if c.patience is None else c.patience,
            "init": "random" if c.init is None else c.init, "epochs": c.epochs, "seed": c.seed,
        }  # fmt: skip
        run = run_status(point.folder)
        outcome = status.get(point.name)
        row["status"] = "finished" if run.finished else (outcome.status if outcome else "missing")
        row["error"] = outcome.error if outcome else ""
        result = run.result if run.finished else {}
        metrics = result.get("test_metrics", {})
        intervals = metrics.get("intervals_95", {})
        for name, key in METRICS:
            low, high = intervals.get(key, (math.nan, math.nan))
            row.update({name: metrics.get(key, math.nan), f"{name}_lo": low, f"{name}_hi": high})
        row["n_test_spike_bins"] = metrics.get("split", {}).get("n_spike_bins_scored", math.nan)
        row["epochs_run"] = result.get("epochs_run", math.nan)
        row["best_epoch"] = result.get("best_epoch", math.nan)
        row["train_wall_s"] = result.get("train_s", math.nan)
        row["fit_wall_s"] = sweep.point_record(point.folder).get("wall_s", math.nan)
        made = store.get("generation_s")
        share = c.first_sims / store["n_sims"] if store.get("n_sims") else math.nan
        row["simulate_wall_s"] = made * share if made is not None else math.nan
        row["folder"] = str(Path(point.folder).relative_to(out.resolve()))
        table.append(row)
    return table


def plot_seconds(table: list[dict[str, Any]], path: Path) -> None:
    """Test AUC (top) and soma RMSE (bottom) against simulated seconds of training data:
    a column per cell, a line per (simulation length, initialisation), 95 % bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    done = [r for r in table if r["status"] == "finished" and r["study"] != "recipe"]
    cells = list(dict.fromkeys(r["cell"] for r in table))
    fig, axes = plt.subplots(2, max(1, len(cells)), figsize=(4.8 * max(1, len(cells)), 6.5),
                             squeeze=False, sharex="col", layout="constrained")  # fmt: skip
    for col, cell in enumerate(cells):
        mine = [r for r in done if r["cell"] == cell]
        series: dict[str, dict[float, dict]] = {}
        for r in mine:
            init = (
                "random init" if r["init"] == "random" else f"warm start ({Path(r['init']).name})"
            )
            label = f"{r['sim_length_ms'] / 1000:g} s sims, {init}"
            series.setdefault(label, {})[r["train_seconds"]] = r  # shared points once
        for k, (label, points) in enumerate(sorted(series.items())):
            xs = sorted(points)
            for row, key in enumerate(("AUC", "soma_RMSE")):
                ys = np.array([points[x][key] for x in xs], float)
                lo = np.array([points[x][f"{key}_lo"] for x in xs], float)
                hi = np.array([points[x][f"{key}_hi"] for x in xs], float)
                err = np.vstack([np.nan_to_num(ys - lo), np.nan_to_num(hi - ys)])
                axes[row, col].errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3,
                                        color=f"C{k}", label=label)  # fmt: skip
        axes[0, col].set(title=cell, ylabel="test spike AUC")
        axes[1, col].set(xlabel="simulated seconds of training data", ylabel="test soma RMSE (mV)")
        # One tick per amount of data: 3 s and 6 s simulations give 99 and 102 s for the
        # same 100 s, whose labels would overprint each other.
        ticks: list[float] = []
        for t in sorted({r["train_seconds"] for r in mine}):
            if not ticks or t > 1.1 * ticks[-1]:
                ticks.append(t)
        for ax in axes[:, col]:
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if ax.has_data():
                ax.legend(fontsize=7)
    fig.suptitle("fixed held-out test store per cell; bars: bootstrap 95 % over test simulations")
    with user_writes(path):
        fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(table: list[dict[str, Any]]) -> None:
    cols = (
        "study",
        "cell",
        "train_seconds",
        "sim_length_ms",
        "lr",
        "batch_size",
        "select_by",
        "input_dropout",
        "patience",
        "init",
        "epochs_run",
        "AUC",
        "TP_1pct_FP",
        "soma_RMSE",
    )
    print("  ".join(cols))
    for r in table:
        values = []
        for c in cols:
            v = r[c]
            values.append(f"{v:.4g}" if isinstance(v, float) else str(Path(str(v)).name))
        print("  ".join(values))


def write_outputs(out: Path, rows, outcomes, stores, preset, args) -> list[dict[str, Any]]:
    """results.csv, auc_vs_seconds.png and provenance.json; returns the table."""
    table = result_rows(rows, outcomes, out, stores)
    write_csv(out / "results.csv", table)
    plot_seconds(table, out / "auc_vs_seconds.png")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record = run_record({"args": config, "preset": preset}, args.seed)
    record["stores"] = stores
    record["outcomes"] = {o.point.name: {"status": o.status, "error": o.error} for o in outcomes}
    write_json(out / "provenance.json", record)
    print_table(table)
    failed = [o for o in outcomes if o.status == "failed"]
    finished = sum(r["status"] == "finished" for r in table)
    print(f"{finished} of {len(table)} rows finished; {len(failed)} points failed")
    for o in failed:
        print(f"  {o.point.name}: {o.error}")
    print(f"tables in {out}: results.csv, auc_vs_seconds.png, stores.json, provenance.json")
    return table


# ---------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(
        "python -m benchmarks.surrogate_efficiency", __doc__, PRESETS, "efficiency",
        "folder of existing stores <cell>_<ms>ms.zarr and <cell>_test.zarr (default: the "
        "cached default stores, made when missing)",
    )  # fmt: skip
    parser.add_argument(
        "--init", help="source of the warm starts (default: the preset's, num_memory_20 for cpu)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="simulate and fit nothing: the tables and figure of the points finished so far",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    out = check_study_args(args, "efficiency")
    init = args.init or preset["init"]
    if init is None:
        print("notice: no --init given and the preset has none; the warm_start study is left out")
    if args.report_only:
        if not (out / "stores.json").is_file():
            raise UserError(f"{out} holds no study yet (no stores.json); run it without "
                            "--report-only first")  # fmt: skip
        stores = read_json(out / "stores.json")
    else:
        stores = prepare_stores(preset, args.stores, out, not args.dry_run, init is not None)
    configs = point_configs(preset, stores, args.seed, init)
    points, rows = unique_points(configs, out / "runs", args.device)
    if args.dry_run:
        for study, point in rows:
            print(f"{study:<11} {point.name}")
        print(f"{len(points)} distinct fits")
        return 0
    if args.report_only:
        outcomes = [sweep.Outcome(p, "finished" if run_status(p.folder).finished else "missing")
                    for p in points]  # fmt: skip
        write_outputs(out, rows, outcomes, stores, preset, args)
        return 0
    rows, outcomes = run_fits(points, rows, args.scheduler, "efficiency")
    write_outputs(out, rows, outcomes, stores, preset, args)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    run_cli(main)
