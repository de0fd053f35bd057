"""Does the network learn? Validation and test accuracy against steps, before any sweep.

    python -m benchmarks.learning_curves                       # the cpu preset's data
    python -m benchmarks.learning_curves --curve shd-adding:10:4000 --curve shd:2:1000

Trains the published SHD-Adding network (N 96, d_m 5, d_tree 30 × d_brch 10 = k_c 300,
`elmnet.tasks.shd_adding.NETWORK`; plain SHD uses the same hidden layer with a 20-class
readout) once per curve `TASK:BIN_MS:STEPS`, scoring validation and test every
`--eval-every` steps (`elmnet.train --test-curve`: the best step is still chosen on
validation alone). The default curves are SHD-Adding at 10 and 2 ms bins and plain SHD at
10 and 2 ms bins, on the synthetic SHD of the sweeps' cpu preset (made once and cached,
`benchmarks.sweep.ensure_data`); the 2 ms curves are shorter since a step costs 4–6 times
more. Every curve is one run folder on the sweep engine
(`elmbridge.sweep`): a killed run resumes. Prints the curves as a table and writes
curves.csv (task, bin_ms, step, split, accuracy, loss) and learning_curves.png with the
chance level of each task (the most common class of a uniform draw: 1/20 for SHD, 10/100
for the sum of two digits) above the cross-entropy of training, validation and test.

Default sizes, from one-thread CPU seconds per step of this network measured on the build
machine while it was shared (wall time is longer under load): SHD-Adding 0.13 s at 10 ms
and 0.8 s at 2 ms bins; SHD 0.09 s at 10 ms and 0.37 s at 2 ms. 4000 + 2000 + 500 + 500
steps ≈ 520 + 180 + 400 + 185 ≈ 1,300 CPU-s of training, plus an evaluation of validation
and test every 100 steps: about 25 CPU-minutes, run one curve after another.
"""

import argparse
from pathlib import Path
from typing import Any

from benchmarks import sweep
from benchmarks.sweep_presets import PRESETS
from elmbridge import sweep as engine
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import user_writes, write_csv, write_json
from elmbridge.provenance import run_record
from elmbridge.runs import read_metrics

# (task, bin size in ms, steps): the default curves.
DEFAULT_CURVES = (("shd-adding", 10.0, 4000), ("shd", 10.0, 2000), ("shd-adding", 2.0, 500),
                  ("shd", 2.0, 500))  # fmt: skip
# The published network of SHD-Adding (docs/elm-model.md §4): N 96, d_m 5, k_c 300.
PUBLISHED = {"N": 96, "d_m": 5, "k_c": 300}
# Accuracy of always answering the most common class when the words are drawn uniformly.
CHANCE = {"shd": 1 / 20, "shd-adding": 10 / 100}


def parse_curve(text: str) -> tuple[str, float, int]:
    """'shd-adding:10:4000' → ("shd-adding", 10.0, 4000); a `UserError` says what is wrong."""
    parts = text.split(":")
    if len(parts) != 3:
        raise UserError(f"--curve takes TASK:BIN_MS:STEPS (e.g. shd:10:2000), got {text!r}")
    task, bin_ms, steps = parts
    if task not in CHANCE:
        raise UserError(f"--curve {text}: the task must be one of {', '.join(CHANCE)}")
    try:
        bin_value, step_value = float(bin_ms), int(steps)
    except ValueError:
        raise UserError(f"--curve {text}: BIN_MS is a number of ms, STEPS an integer") from None
    if not 0 < bin_value <= 1000:
        raise UserError(f"--curve {text}: the bin size must be in (0, 1000] ms")
    if step_value < 1:
        raise UserError(f"--curve {text}: STEPS must be at least 1")
    return task, bin_value, step_value


def plan_curves(curves, args, data: str | None, runs_dir: Path) -> list[tuple[Any, Any]]:
    """(curve, Planned) for every curve: one point of the published network each."""
    planned = []
    for task, bin_ms, steps in curves:
        train = {"bin_ms": bin_ms, "steps": steps, "eval_every": args.eval_every,
                 "log_every": args.eval_every, "eval_batch": 64, "test_curve": True}  # fmt: skip
        settings = sweep.Settings(task=task, data=data, train=train, runs_dir=runs_dir,
                                  stop_after=args.stop_after)  # fmt: skip
        spec = sweep.Spec(PUBLISHED["d_m"], PUBLISHED["k_c"], args.seed, N=PUBLISHED["N"])
        (item,) = sweep.plan([spec], settings)
        planned.append(((task, bin_ms, steps), item))
    return planned


def curve_rows(planned) -> list[dict[str, Any]]:
    """The validation and test rows of every curve's metrics.csv, tidy."""
    rows = []
    for (task, bin_ms, _), item in planned:
        path = Path(item.point.folder) / "metrics.csv"
        if not path.is_file():
            continue
        for r in read_metrics(path):
            split = {"valid": "valid", "test_curve": "test", "train": "train"}.get(r.get("split"))
            if split is not None:  # training rows carry the running loss only
                rows.append({"task": task, "bin_ms": bin_ms, "step": int(r["step"]),
                             "split": split, "accuracy": r["value"] if split != "train" else "",
                             "loss": r["loss"]})  # fmt: skip
    return rows


def print_curves(rows: list[dict[str, Any]]) -> None:
    """One line per curve and evaluation step: validation and test accuracy."""
    keyed: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["split"] == "train":
            continue
        keyed.setdefault((r["task"], r["bin_ms"], r["step"]), {})[r["split"]] = r["accuracy"]
    print(f"\n{'task':<11} {'bin ms':>6} {'step':>6} {'valid acc':>10} {'test acc':>9}")
    for (task, bin_ms, step), values in sorted(keyed.items()):
        print(f"{task:<11} {bin_ms:>6g} {step:>6} {values.get('valid', float('nan')):>10.3f} "
              f"{values.get('test', float('nan')):>9.3f}")  # fmt: skip


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy (top) and cross-entropy (bottom) against steps: a column per task, a colour
    per bin size; validation solid, test dashed, training (running mean, with dropout)
    dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    bins = sorted({r["bin_ms"] for r in rows})  # one colour per bin size in every panel
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 7), squeeze=False,
                             sharex="col", layout="constrained")  # fmt: skip
    styles = (("valid", "-"), ("test", "--"), ("train", ":"))
    for col, task in enumerate(tasks):
        for bin_ms in sorted({r["bin_ms"] for r in rows if r["task"] == task}):
            color = f"C{bins.index(bin_ms)}"
            for row, key in enumerate(("accuracy", "loss")):
                for split, style in styles:
                    pts = sorted((r["step"], r[key]) for r in rows if r["task"] == task
                                 and r["bin_ms"] == bin_ms and r["split"] == split
                                 and r[key] != "")  # fmt: skip
                    if pts:
                        label = f"{bin_ms:g} ms bins, {split}"
                        axes[row, col].plot(*zip(*pts, strict=True), style, marker="o",
                                            ms=2.5, color=color, label=label)  # fmt: skip
        top, bottom = axes[0, col], axes[1, col]
        top.axhline(CHANCE[task], color="grey", lw=0.8, ls=":", label="chance (most common)")
        top.set(title=f"{task}: N 96, d_m 5, k_c 300", ylabel="accuracy", ylim=(0, 1))
        bottom.set(xlabel="training step (batch 8)", ylabel="cross-entropy (nats)")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    with user_writes(path):
        fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = sweep.Parser(prog="benchmarks.learning_curves", description=__doc__.split("\n")[0])
    p.add_argument(
        "--curve",
        action="append",
        metavar="TASK:BIN_MS:STEPS",
        help="a curve to train (repeatable; default: the four of the docstring)",
    )
    p.add_argument("--data", help="SHD folder (default: the cpu preset's synthetic SHD)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/learning_curves"))
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="STEPS",
        help="train each curve at most this many steps now (resume later)",
    )
    p.add_argument("--scheduler", help="Dask scheduler address, or 'synchronous'")
    p.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    p.add_argument("--threads", type=int, help="torch threads per run")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    for name in ("eval_every", "stop_after"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    curves = [parse_curve(c) for c in args.curve] if args.curve else list(DEFAULT_CURVES)
    if len(set(curves)) != len(curves):
        raise UserError("a --curve is given twice")
    runs_dir = args.runs_dir.resolve()
    resources = engine.Resources(scheduler=args.scheduler, workers=args.workers,
                                 threads=args.threads)  # fmt: skip
    resources.check()
    data = args.data
    if data is not None:
        if not Path(data).exists():
            raise UserError(f"--data {data}: no such folder")
        data = str(Path(data).resolve())
    else:
        preset = PRESETS["cpu"]["shd"]
        stub = sweep.Settings(task="shd", data=None, train={}, runs_dir=runs_dir)
        data = sweep.ensure_data(preset, stub, resources).data
    planned = plan_curves(curves, args, data, runs_dir)
    points = [item.point for _, item in planned]
    runs_dir.mkdir(parents=True, exist_ok=True)
    with engine.sweep_client(resources, len(points)) as (client, threads):
        points = [engine.Point(pt.name, pt.folder, {**pt.job, "threads": threads})
                  for pt in points]  # fmt: skip
        done = engine.run_sweep(points, sweep.train_point, client, desc="learning curves",
                                latest=sweep.latest_metric, progress=args.progress)  # fmt: skip
    failed = [o for o in done if o.status == "failed"]
    for outcome in failed:
        print(f"failed: {outcome.point.name}: {outcome.error}")
    rows = curve_rows(planned)
    if not rows:
        raise UserError("no curve has an evaluation yet; run the same command again")
    print_curves(rows)
    write_csv(runs_dir / "curves.csv", rows)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(
        runs_dir / "provenance.json",
        run_record(config={**config, "curves": curves, "data": data}, seed=args.seed),
    )
    plot_curves(rows, runs_dir / "learning_curves.png")
    print(f"curves: {runs_dir / 'curves.csv'}; figure: {runs_dir / 'learning_curves.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
