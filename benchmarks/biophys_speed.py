"""Single-core speed of the full L5PC under the NeuronIO protocol, and what it costs.

    python -m benchmarks.biophys_speed                  # 6 s, best of 2 (about 10 min)
    python -m benchmarks.biophys_speed --duration-ms 1000 --repeats 1   # a quick look

Every configuration simulates the same NeuronIO input (1278 synapses) on one core. The
reference is fixed-step integration at dt = 0.025 ms, what `simulate()` does by default;
each other configuration is compared with it on what a dataset keeps: the somatic voltage
at 1 ms and the output spike times (see `compare` for the stated tolerance). Timings are
the best of `--repeats` runs, because the machine may be shared. The table reports
simulated seconds per wall-clock second (higher is faster).

Configurations: the reference; the same with NEURON's cache-efficient memory
layout; a 2.5x coarser fixed step; variable-step CVode (NeuronIO's original choice);
fewer compartments (1 + 2 int(L / 80 µm), synapses kept at their positions).

Use the default 6 s: this cell amplifies small numerical differences, so a setting that
agrees over 1-2 s can drift by whole spikes over a NeuronIO-length simulation.

Tried and not adopted (2026-11, NEURON 9.0.2 wheel, 2-core x86 machine): CoreNEURON.
The wheel builds CoreNEURON mechanisms (``nrnivmodl -coreneuron``, +40 s) and, run in
direct mode, gives the same somatic trace to the last bit, but only 1.2x faster on one
core (0.177 vs 0.146 sim s/s over 2 s); it needs the inputs as PatternStim events
through ``gid_connect`` with a delay of at least dt, so that t = 0 inputs need special
care, and records only at every step. Not worth a second build and input path.

The parallel-scaling section (dataset generation over several workers) is measured by
`benchmarks.biophys_scaling`; ``--scaling 1,2`` runs it after this table when that module
is present.
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np

from biophys import cells, protocol, simulation
from elmbridge.cli import run_cli
from elmbridge.errors import UserError

# "Same answer": the same number of output spikes, each within SPIKE_MATCH_MS of the
# reference, and a somatic voltage within VOLTAGE_TOLERANCE_MV (RMSE of the 1 ms samples
# more than SPIKE_GUARD_MS from any reference spike: an AP shifted by 0.1 ms moves the
# samples on its flanks by tens of mV, which spike timing already measures).
SPIKE_MATCH_MS = 0.5
VOLTAGE_TOLERANCE_MV = 0.5
SPIKE_GUARD_MS = 3.0


@dataclass
class Config:
    """How to integrate: fixed step or CVode, memory layout, discretisation."""

    name: str
    dt_ms: float = 0.025
    cvode: bool = False
    atol: float = 1e-3
    cache_efficient: bool = False
    nseg_um: float | None = None  # None: the cell's own rule, 1 + 2 int(L / 40 µm)


CONFIGS = (
    Config("fixed dt=0.025 (reference)"),
    Config("fixed dt=0.025 + cache_efficient", cache_efficient=True),
    Config("fixed dt=0.0625 + cache_efficient", dt_ms=0.0625, cache_efficient=True),
    Config("cvode atol=1e-3 + cache_efficient", cvode=True, atol=1e-3, cache_efficient=True),
    Config("coarse nseg (L/80) + cache_efficient", cache_efficient=True, nseg_um=80.0),
)


def _set_discretisation(model, nseg_um: float) -> None:
    """Re-segment the dendrites (1 + 2 int(L / nseg_um)); synapses keep their (section, x).

    NEURON carries each range variable over to the new segments from the old segment
    that contains them, so the channel densities stay close to the original ones.
    """
    places = [(syn.get_segment().sec, syn.get_segment().x) for syn in model.synapses]
    for sec in model.cell.dend + model.cell.apic:
        sec.nseg = 1 + 2 * int(sec.L / nseg_um)
    for syn, (sec, x) in zip(model.synapses, places, strict=True):
        syn.loc(sec(x))


def run_config(config: Config, inputs: np.ndarray, cell: str = "L5PC"):
    """One simulation under `config`; returns (record, wall seconds)."""
    from neuron import h

    model = cells.get_model(cell)
    cv = h.CVode()
    cv.cache_efficient(1 if config.cache_efficient else 0)
    cv.atol(config.atol)
    if config.nseg_um is not None:
        _set_discretisation(model, config.nseg_um)
    try:
        start = time.perf_counter()
        rec = simulation.simulate(cell, inputs, seed=0, dt_ms=config.dt_ms, cvode=config.cvode)
        wall = time.perf_counter() - start
    finally:
        if config.nseg_um is not None:
            # the channel densities belong to the original segments: build afresh
            cells.forget_model()
        cv.cache_efficient(0)
        cv.atol(1e-3)
    return rec, wall


def compare(reference, rec) -> dict:
    """How far a run is from the reference: voltage error and spike-time agreement."""
    dv = rec.soma_v - reference.soma_v
    ref_t, t = reference.spike_times, rec.spike_times
    bins = np.arange(len(dv))
    far = np.all(np.abs(bins[:, None] - ref_t[None, :]) > SPIKE_GUARD_MS, axis=1)
    nearest = [float(np.min(np.abs(t - s))) for s in ref_t] if len(t) else [np.inf] * len(ref_t)
    hits = [d for d in nearest if d <= SPIKE_MATCH_MS]
    row = {
        "rmse_mV": float(np.sqrt(np.mean(dv**2))),
        "rmse_away_mV": float(np.sqrt(np.mean(dv[far] ** 2))),
        "n_spikes": len(t),
        "spikes_matched": f"{len(hits)}/{len(ref_t)}",
        "max_dt_ms": max(nearest, default=0.0),
    }
    row["same_answer"] = (
        len(t) == len(ref_t)
        and len(hits) == len(ref_t)
        and row["rmse_away_mV"] <= VOLTAGE_TOLERANCE_MV
    )
    return row


def measure(duration_ms: int, repeats: int, configs=CONFIGS, seed: int = 0) -> list[dict]:
    """Time every configuration (best of `repeats`) and compare it with the reference."""
    desc = cells.describe_cell("L5PC")
    inputs = protocol.neuronio_inputs(desc, duration_ms, seed)
    cells.get_model("L5PC")  # build (and compile) outside the timings
    rows, reference = [], None
    for config in configs:
        best, rec = float("inf"), None
        for _ in range(repeats):
            rec, wall = run_config(config, inputs)
            best = min(best, wall)
        if reference is None:
            reference = rec
        row = {"config": config.name, "sim_s_per_wall_s": duration_ms / 1000.0 / best}
        row["wall_s"] = best
        row.update(compare(reference, rec))
        rows.append(row)
        print(_format_row(row), flush=True)
    return rows


def _format_row(row: dict) -> str:
    return (
        f"{row['config']:38s} {row['sim_s_per_wall_s']:7.3f} {row['wall_s']:7.1f} "
        f"{row['rmse_mV']:8.3f} {row['rmse_away_mV']:9.3f} {row['spikes_matched']:>7s} "
        f"{row['max_dt_ms']:8.3f} {'yes' if row['same_answer'] else 'no':>5s}"
    )


HEADER = (
    f"{'configuration':38s} {'sim s/s':>7s} {'wall s':>7s} {'RMSE mV':>8s} {'away mV':>9s} "
    f"{'spikes':>7s} {'max|dt|':>8s} {'same':>5s}"
)


# Each configuration is simulated `repeats` times on one core at ≈10 s per simulated s.
MAX_DURATION_MS = 600_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.biophys_speed", description=__doc__)
    parser.add_argument("--duration-ms", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the NeuronIO input")
    parser.add_argument(
        "--scaling",
        metavar="WORKERS",
        help="also measure parallel scaling for these worker counts, e.g. 1,2",
    )
    args = parser.parse_args(argv)
    if not 100 <= args.duration_ms <= MAX_DURATION_MS or args.repeats < 1:
        raise UserError(
            f"--duration-ms must be 100 to {MAX_DURATION_MS} and --repeats >= 1, got "
            f"{args.duration_ms} and {args.repeats}"
        )
    if args.scaling is not None:
        args.scaling_workers = _worker_counts(args.scaling)
    print(
        f"L5PC, NeuronIO input (seed {args.seed}), {args.duration_ms} ms, one core, best of "
        f"{args.repeats}. RMSE: 1 ms soma voltage vs the reference; 'away': only samples "
        f"> {SPIKE_GUARD_MS} ms from reference spikes; 'same' = same spike count, each within "
        f"{SPIKE_MATCH_MS} ms, and 'away' RMSE <= {VOLTAGE_TOLERANCE_MV} mV"
    )
    print(HEADER)
    print("-" * len(HEADER))
    measure(args.duration_ms, args.repeats, seed=args.seed)
    if args.scaling:
        _parallel_scaling(args)
    return 0


def _worker_counts(text: str) -> tuple[int, ...]:
    """ "1,2,4" → (1, 2, 4); anything else is a one-line `UserError`."""
    try:
        counts = tuple(int(w) for w in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise UserError(f"--scaling takes worker counts ≥ 1 separated by commas, got {text!r}")
    return counts


def _parallel_scaling(args) -> None:
    """Hook for the parallel section: dataset generation on 1..n workers."""
    try:
        from benchmarks.biophys_scaling import measure_scaling
    except ImportError as err:
        raise UserError(
            "parallel scaling is measured by benchmarks.biophys_scaling, which this "
            f"checkout lacks ({err})"
        ) from err
    workers = args.scaling_workers
    print("\nparallel scaling (benchmarks.biophys_scaling):")
    for row in measure_scaling(worker_counts=workers, duration_ms=args.duration_ms):
        print(
            "  "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )


if __name__ == "__main__":
    run_cli(main)
