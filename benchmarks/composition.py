"""Do fitted neurons help an ELM Network? Transferred against random hidden neurons on SHD.

    python -m benchmarks.composition --data SHD_FOLDER [--neuron num_memory_20]
        [--seeds 0 1 2] [--steps 2000] [--budget 153000] [--runs runs/composition]
        [--out docs/figures/composition_shd]

Three conditions, each an `elmnet.train --task shd` run (through `surrogate.compose`, so
`--neuron` may also be a fit's run folder or model file) with hidden neurons of the
fitted neuron's architecture (`elmnet.transfer`) at one parameter budget:

- `frozen`: the fitted neuron's MLP, τ_m and spike readout, fixed; synapses, β, the
  readout layer and the logits train;
- `init`: the same weights as the starting point, all trained;
- `random`: the same architecture and parameter count, weights drawn at random.

Seed s gives all three conditions the same connectivity, synaptic initialisation,
readout layer and batches, so per seed they differ only in the hidden neurons' weights.
Per condition the table gives the test accuracy's mean, sample sd and a 95 % Student-t
interval over seeds (n − 1 degrees of freedom); per transferred condition also the
paired difference to `random` (same seed) with its 95 % t-interval. With 3 seeds the
t quantile is 4.30: the intervals are wide by construction.

Writes OUT.csv (one row per condition and one per paired difference) and OUT.json (the
rows, every run's result, wall and CPU seconds, the command, seeds, commit and software
versions). Finished runs in --runs are reused, not rerun, with the cost recorded when
they ran: seeds may run as separate processes (one `--seeds s` each) and a last call
with all seeds writes the table.
"""

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import check_output_file, read_json, write_csv, write_json
from elmbridge.provenance import software_versions
from surrogate import compose

CONDITIONS = ("frozen", "init", "random")


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (n − 1 degrees of freedom); NaN for n < 2."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def summary(name: str, values, **extra) -> dict:
    """One table row: n, mean, sample sd and the 95 % t-interval of `values`."""
    low, high = t_interval(values)
    x = np.asarray(values, dtype=float)
    return {"condition": name, "n_seeds": len(x), "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan, "ci95_low": low,
            "ci95_high": high, "interval": "Student t over seeds", **extra}  # fmt: skip


def train_args(args, condition: str, seed: int, out: Path) -> list[str]:
    """The `elmnet.train` options of one run."""
    return [
        "--task", "shd", "--data", str(args.data), "--neuron", args.neuron,
        "--neuron-weights", condition, "--seed", str(seed), "--budget", str(args.budget),
        "--k-c", str(args.k_c), "--d-tree", str(args.d_tree), "--bin-ms", str(args.bin_ms),
        "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--batch",
        str(args.batch), "--threads", str(args.threads), "--out", str(out), "--no-progress",
    ]  # fmt: skip


COST_FILE = "composition_cost.json"


def run_one(args, condition: str, seed: int) -> dict:
    """Train (or reuse) one run; its result, configuration and cost (wall and CPU seconds
    of the process that trained it, kept beside the run so that a reuse reports them)."""
    out = args.runs / f"{condition}_seed{seed}"
    argv = train_args(args, condition, seed, out)
    if not (out / "result.json").is_file():
        wall, cpu = time.perf_counter(), time.process_time()
        compose.main(argv)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        write_json(out / COST_FILE, {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
    cost = read_json(out / COST_FILE) if (out / COST_FILE).is_file() else {}
    record, result = read_json(out / "run.json"), read_json(out / "result.json")
    return {
        "condition": condition, "seed": seed, "test_accuracy": result["test"],
        "n_test": result["n"], "best_step": result["best_step"], "valid": result["valid"],
        "parameters": result["parameters"],
        "trainable_parameters": record["parameters"]["trainable"], "N": record["parameters"]["N"],
        "run": str(out), "command": "python -m surrogate.compose " + shlex.join(argv),
        "wall_s": cost.get("wall_s"), "cpu_s": cost.get("cpu_s"),
        "commit": record.get("software", {}).get("elmbridge_git_commit"),
        "network": record["network"], "neuron": record.get("neuron"),
    }  # fmt: skip


def table(runs: list[dict]) -> list[dict]:
    """Per-condition rows, then the paired differences of the transferred conditions."""
    by = {c: {} for c in CONDITIONS}
    for r in runs:
        by[r["condition"]][r["seed"]] = r["test_accuracy"]
    rows = []
    for condition in CONDITIONS:
        seeds = sorted(by[condition])
        first = next(r for r in runs if r["condition"] == condition)
        rows.append(summary(condition, [by[condition][s] for s in seeds],
                            parameters=first["parameters"],
                            trainable_parameters=first["trainable_parameters"],
                            seeds=" ".join(map(str, seeds))))  # fmt: skip
    for condition in ("frozen", "init"):
        seeds = sorted(set(by[condition]) & set(by["random"]))
        diff = [by[condition][s] - by["random"][s] for s in seeds]
        rows.append(summary(f"{condition} - random (paired)", diff,
                            seeds=" ".join(map(str, seeds))))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.composition",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="folder of shd_train/test.h5")
    p.add_argument("--neuron", default="num_memory_20", help="released model, run or file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--budget", type=int, default=153_000, help="parameter budget P (sets N)")
    p.add_argument("--k-c", type=int, default=60)
    p.add_argument("--d-tree", type=int, default=30)
    p.add_argument("--bin-ms", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=Path, default=Path("runs/composition"))
    p.add_argument("--out", type=Path, default=Path("docs/figures/composition_shd"),
                   help="writes OUT.csv and OUT.json")  # fmt: skip
    args = p.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds repeats a seed: {args.seeds}")
    csv_path, json_path = args.out.with_suffix(".csv"), args.out.with_suffix(".json")
    check_output_file(csv_path)
    check_output_file(json_path)
    software = software_versions()  # before the runs: the code that trains them
    runs = []
    for seed in args.seeds:
        for condition in CONDITIONS:
            runs.append(run_one(args, condition, seed))
            r = runs[-1]
            print(f"{condition} seed {seed}: test accuracy {r['test_accuracy']:.4f} "
                  f"({r['wall_s']} s wall, {r['cpu_s']} s CPU)", flush=True)  # fmt: skip
    rows = table(runs)
    write_csv(csv_path, rows)
    write_json(json_path, {
        "command": "python -m benchmarks.composition " + shlex.join(sys.argv[1:] if argv is None
                                                                    else argv),
        "seeds": args.seeds, "conditions": list(CONDITIONS), "table": rows, "runs": runs,
        "software": software,
    })  # fmt: skip
    for row in rows:
        print(
            f"{row['condition']:<26} {row['mean']:+.4f} ± {row['sd']:.4f} (sd), 95 % t "
            f"[{row['ci95_low']:+.4f}, {row['ci95_high']:+.4f}], n={row['n_seeds']}"
        )
    print(f"table: {csv_path}, {json_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
