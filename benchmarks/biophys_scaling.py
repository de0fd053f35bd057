"""Parallel scaling of dataset generation: simulated seconds per wall second vs workers.

    python -m benchmarks.biophys_scaling --workers 1,2 --sims-per-worker 2 --duration-ms 1000

For each worker count, a fresh local Dask cluster first builds the cell on every worker
(not timed: it happens once per worker in a real run), then generates
``workers × sims-per-worker`` simulations into a temporary store, timed from the first
job submitted to the last simulation stored, single writer included. Efficiency is the
throughput relative to ``workers ×`` the one-worker throughput (1.0 = perfect scaling).
"""

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from biophys.generate import NEURON, SimulationJob, SimulationSettings, Simulator, generate
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.parallel import dask_client

WARM_UP_MS = 20


def _warm_up(run_job, settings: SimulationSettings) -> None:
    """Runs on each worker: one short simulation builds (and caches) the cell there."""
    run_job(SimulationJob(index=0, seed=0, settings=replace(settings, duration_ms=WARM_UP_MS)))


def measure_scaling(
    worker_counts=(1, 2),
    sims_per_worker: int = 2,
    duration_ms: int = 1000,
    cell: str = "L5PC",
    seed: int = 0,
    simulator: Simulator = NEURON,
    **settings_kw,
) -> list[dict]:
    """Throughput of `biophys.generate.generate` on local clusters of several sizes.

    Args:
        worker_counts: worker processes to try, e.g. (1, 2, 4).
        sims_per_worker: simulations per worker and measurement.
        duration_ms: simulated ms per simulation.
        cell: cell name.
        seed: base seed (every measurement simulates the same first simulations).
        simulator: where simulations come from (default: NEURON).
        **settings_kw: further `SimulationSettings` fields (dt_ms, cvode, ...).

    Returns:
        One dict per worker count: workers, n_sims, wall_s, sim_s_per_wall_s (simulated
        seconds per wall-clock second, all workers together) and efficiency.
    """
    if not worker_counts or min(worker_counts) < 1:
        raise UserError(f"worker counts must be positive, got {list(worker_counts)}")
    settings = SimulationSettings(cell=cell, duration_ms=duration_ms, **settings_kw)
    cell_description = simulator.describe_cell(cell, settings.morphology_path)
    warm_settings = replace(
        settings, input_variant=settings.input_variant or cell_description.input_protocol
    )
    rows = []
    for workers in worker_counts:
        n_sims = workers * sims_per_worker
        with tempfile.TemporaryDirectory() as tmp, dask_client(None, n_workers=workers) as client:
            client.run(_warm_up, simulator.run_job, warm_settings)
            result = generate(
                Path(tmp) / "scaling.zarr",
                n_sims,
                settings,
                seed=seed,
                client=client,
                simulator=simulator,
            )
        simulated_s = n_sims * duration_ms / 1000.0
        rows.append(
            {
                "workers": workers,
                "n_sims": n_sims,
                "wall_s": result.wall_s,
                "sim_s_per_wall_s": simulated_s / result.wall_s,
            }
        )
    # Relative to the smallest count's throughput per worker (normally one worker).
    first = min(rows, key=lambda r: r["workers"])
    per_worker = first["sim_s_per_wall_s"] / first["workers"]
    for row in rows:
        row["efficiency"] = row["sim_s_per_wall_s"] / (row["workers"] * per_worker)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'workers':>7}  {'sims':>5}  {'wall s':>8}  {'sim s / wall s':>14}  {'efficiency':>10}"
    ]
    for r in rows:
        lines.append(
            f"{r['workers']:>7}  {r['n_sims']:>5}  {r['wall_s']:>8.1f}  "
            f"{r['sim_s_per_wall_s']:>14.3f}  {r['efficiency']:>10.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.biophys_scaling", description=__doc__)
    cores = os.cpu_count() or 1
    p.add_argument(
        "--workers",
        default=",".join(str(w) for w in sorted({1, 2, cores} if cores > 1 else {1})),
        help="comma-separated worker counts (default: 1, 2 and the number of cores)",
    )
    p.add_argument("--sims-per-worker", type=int, default=2)
    p.add_argument("--duration-ms", type=int, default=1000)
    p.add_argument("--cell", default="L5PC")
    p.add_argument("--cvode", action="store_true")
    args = p.parse_args(argv)
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError as err:
        raise UserError(f"--workers must be comma-separated integers, got {args.workers}") from err
    print(
        f"{args.cell}: {args.sims_per_worker} simulations of {args.duration_ms} ms per worker, "
        f"{cores} cores"
    )
    rows = measure_scaling(
        counts, args.sims_per_worker, args.duration_ms, args.cell, cvode=args.cvode
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    run_cli(main)
