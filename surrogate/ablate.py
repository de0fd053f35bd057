"""Complexity ablation: fit surrogates of several memory sizes d_m and compare them.

    python -m surrogate.ablate --cell L5PC --d-m 1 2 5 10 20 50
    python -m surrogate.ablate --cell L5PC-ampa --d-m 1 5 20 --preset long

Each d_m is one `surrogate.fit` run in ``<runs-dir>/dm<d_m>`` (default runs-dir:
``runs/ablate_<cell>_<preset>_seed<seed>``) with otherwise identical options, so all
models see the same data, splits and training windows. The runs are the points of a
sweep (`elmbridge.sweep`): finished runs are reused, unfinished ones resumed, a failed
one is retried once and then reported; by default they run one after another in this
process, `--scheduler local` runs them side by side on this machine's cores and
`--scheduler ADDRESS` on a Dask cluster (docs/cluster.md). The table (printed, and saved
as ablation.csv / ablation.json) and the figure ablation.png give the test AUC and soma
RMSE against d_m and against the parameter count, next to the published Branch-ELM on
NeuronIO (Spieler et al. 2024).
"""

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from elmbridge import sweep
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import check_output_dir, user_writes, write_csv, write_json
from elmbridge.runs import RunFolder, run_status
from elmbridge.training import resolve_device
from surrogate.config import add_fit_options, config_from_args, preset_table
from surrogate.fit import check_same_fit, fit

# Published Branch-ELM test results on NeuronIO by d_m: (parameters, AUC, soma RMSE mV)
# (docs/elm-model.md §2; RMSE given only for some sizes).
PUBLISHED_BRANCH_ELM = {
    1: (4601, 0.9437, 1.33),
    2: (4708, 0.9582, None),
    5: (5077, 0.9757, None),
    10: (5852, 0.9878, None),
    15: (6827, 0.9915, None),
    20: (8002, 0.9922, 0.638),
    30: (10952, 0.9929, None),
    50: (19252, 0.9934, None),
    100: (54002, 0.9935, 0.614),
}


def ablation_rows(results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per d_m from the fit results."""
    rows = []
    for d_m, result in sorted(results.items()):
        metrics = result["test_metrics"]
        rows.append(
            {
                "d_m": d_m,
                "n_parameters": result["n_parameters"],
                "AUC": metrics.get("AUC", float("nan")),
                "TP @ 0.0100 FP": metrics.get("TP @ 0.0100 FP", float("nan")),
                "soma_RMSE": metrics.get("soma_RMSE", float("nan")),
                "soma_explained_variance_percent": metrics.get(
                    "soma_explained_variance_percent", float("nan")
                ),
                "best_epoch": result["best_epoch"],
                "train_s": result["train_s"],
            }
        )
    return rows


def plot_ablation(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test AUC and soma RMSE against d_m and against the parameter count (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    published = sorted(PUBLISHED_BRANCH_ELM.items())
    for col, x_key in enumerate(("d_m", "n_parameters")):
        x = [r[x_key] for r in rows]
        for row_i, metric in enumerate(("AUC", "soma_RMSE")):
            ax = axes[row_i, col]
            ax.plot(x, [r[metric] for r in rows], "o-", c="tab:blue", label="this fit")
            ref = [
                (d if x_key == "d_m" else p, auc if metric == "AUC" else rmse)
                for d, (p, auc, rmse) in published
            ]
            ref = [(a, b) for a, b in ref if b is not None]
            ax.plot(*zip(*ref, strict=True), "s--", c="0.5", label="published, NeuronIO")
            ax.set_xscale("log")
            ax.set(
                xlabel="memory units d_m" if x_key == "d_m" else "parameters",
                ylabel="test spike AUC" if metric == "AUC" else "test soma RMSE (mV)",
            )
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(title)
    with user_writes(path):
        fig.savefig(path, dpi=110)
    plt.close(fig)


def fit_point(job: dict[str, Any]) -> dict[str, Any] | None:
    """One d_m of the ablation: fit (or resume, or reuse) its run folder."""
    print(f"--- d_m = {job['config'].d_m} ---", flush=True)
    return fit(job["config"], job["folder"], resume=True, device=job["device"], amp=job["amp"],
               workers=job["workers"])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m surrogate.ablate",
        description=__doc__.split("\n")[0],
        epilog=preset_table() + "\nThe options apply to every run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_fit_options(parser)
    parser.add_argument("--d-m", type=int, nargs="+", required=True, help="memory sizes")
    parser.add_argument("--runs-dir", type=Path, help="folder of the runs and the ablation files")
    parser.add_argument(
        "--scheduler",
        help="where the fits run: in this process one after another (default), 'local' "
        "(a Dask LocalCluster, one fit per core) or a Dask scheduler address",
    )
    args = parser.parse_args(argv)
    if len(set(args.d_m)) != len(args.d_m) or min(args.d_m) < 1:
        raise UserError(f"--d-m takes distinct positive sizes, got {args.d_m}")

    sizes = args.d_m
    args.d_m = sizes[0]
    base = config_from_args(args)
    runs_dir = args.runs_dir or Path("runs") / (f"ablate_{base.cell}_{base.preset}_seed{base.seed}")
    check_output_dir(runs_dir, option="--runs-dir")
    resolve_device(args.device)  # the same line as every command, before the first fit
    points = []  # every size's configuration is checked before the first fit starts
    for d_m in sizes:
        args.d_m = d_m
        folder = str((runs_dir / f"dm{d_m}").resolve())
        job = {"config": config_from_args(args), "folder": folder, "device": args.device,
               "amp": args.amp, "workers": args.workers}  # fmt: skip
        on_gpu = (args.device or "").startswith("cuda")
        points.append(sweep.Point(f"dm{d_m}", folder, job, gpu=1.0 if on_gpu else 0.0))
    for point in points:  # a finished run is reused only if it is this very fit
        if run_status(point.folder).finished:
            check_same_fit(RunFolder(point.folder), point.job["config"])
    scheduler = {None: sweep.SYNCHRONOUS, "local": None}.get(args.scheduler, args.scheduler)
    resources = sweep.Resources(scheduler=scheduler, threads=None)
    with sweep.sweep_client(resources, len(points)) as (client, _threads):
        outcomes = sweep.run_sweep(points, fit_point, client, desc="ablation",
                                   progress=client is not None)  # fmt: skip
    results = {}
    for d_m, outcome in zip(sizes, outcomes, strict=True):
        if outcome.status == "skipped":
            print(f"{outcome.point.folder} is finished; reusing its result")
        if outcome.status == "failed":
            print(f"d_m = {d_m}: failed twice, left out of the table: {outcome.error}")
            continue
        status = run_status(outcome.point.folder)
        if status.finished:
            results[d_m] = status.result
    if not results:
        raise UserError("every fit of the ablation failed; see the errors above")
    rows = ablation_rows(results)
    write_csv(runs_dir / "ablation.csv", rows)
    write_json(runs_dir / "ablation.json", {"config": asdict(base), "rows": rows})
    plot_ablation(rows, runs_dir / "ablation.png", f"{base.cell}: Branch-ELM by memory size")
    print(f"\n{'d_m':>5} {'params':>8} {'AUC':>8} {'RMSE mV':>8} {'epoch':>6}")
    for r in rows:
        print(
            f"{r['d_m']:>5} {r['n_parameters']:>8} {r['AUC']:>8.4f} {r['soma_RMSE']:>8.3f} "
            f"{r['best_epoch']:>6}"
        )
    print(f"table: {runs_dir / 'ablation.csv'}; figure: {runs_dir / 'ablation.png'}")


if __name__ == "__main__":
    run_cli(main)
