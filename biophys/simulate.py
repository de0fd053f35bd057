"""Make, resume or extend a NeuronIO dataset from the command line.

    python -m biophys.simulate --cell L5PC --n-sims 64 --duration-ms 6000 --seed 0 \\
        --out data/L5PC.zarr

Run the same command again after an interruption to finish the missing simulations;
run it with a larger --n-sims to extend the store. Simulation i is the same in every
case. Inputs follow the NeuronIO protocol unless --inputs gives a .npy file of 0/1 spike
trains, (n_inputs, T) for all simulations or (n_sims, n_inputs, T) one per simulation.
"""

import argparse
import math
from pathlib import Path

from biophys.generate import NEURON, ExplicitInputs, SimulationSettings, Simulator, generate
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import check_output_dir
from elmbridge.parallel import check_scheduler_address

DEFAULT_DURATION_MS = 6000
# One simulation holds its inputs (1278 × T bits for the L5PC) and recordings in memory
# and takes ≈10 s of wall time per simulated second: an hour is already ≈10 h of work.
# Beyond that a typo (1e12) would only die allocating terabytes.
MAX_DURATION_MS = 3_600_000


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a `UserError` (one line, exit 2) like any other."""

    def error(self, message: str):
        raise UserError(f"{message} (see python -m biophys.simulate --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m biophys.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", required=True, metavar="PATH", help="the store to make or extend (a .zarr folder)"
    )
    p.add_argument(
        "--cell", default="L5PC", help="cell model, see biophys.cells.CELL_NAMES (default L5PC)"
    )
    p.add_argument(
        "--n-sims",
        type=int,
        default=None,
        metavar="N",
        help="simulations the store holds in the end (default 1, or the first axis of "
        "per-simulation --inputs)",
    )
    p.add_argument(
        "--duration-ms",
        type=float,
        default=None,
        metavar="MS",
        help=f"simulated ms per simulation, whole ms (default {DEFAULT_DURATION_MS}, or "
        "the last axis of --inputs)",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed of the run (default 0)")
    p.add_argument(
        "--dt-ms", type=float, default=0.025, metavar="MS", help="integration step (default 0.025)"
    )
    p.add_argument("--cvode", action="store_true", help="variable-step integration (CVode)")
    p.add_argument("--record-nexus", action="store_true", help="record the apical nexus voltage")
    p.add_argument(
        "--record-dendrites", action="store_true", help="record every dendritic segment's voltage"
    )
    p.add_argument(
        "--release-probability",
        type=float,
        default=1.0,
        metavar="P",
        help="probability that a presynaptic spike is transmitted (default 1)",
    )
    p.add_argument(
        "--input-protocol",
        default=None,
        metavar="VARIANT",
        help="NeuronIO input variant (nmda, ampa); default: the one that suits the cell",
    )
    p.add_argument(
        "--inputs",
        default=None,
        metavar="FILE.npy",
        help="explicit input spike trains, (n_inputs, T) or (n_sims, n_inputs, T), 0/1 per ms",
    )
    p.add_argument(
        "--morphology", default=None, metavar="FILE.asc", help="use another morphology file"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default: one per core)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://host:8786), or 'synchronous' "
        "to run in this process for debugging",
    )
    return p


def _whole_ms(value: float) -> int:
    if not math.isfinite(value) or value <= 0 or not float(value).is_integer():
        raise UserError(
            f"--duration-ms must be a positive whole number of ms (inputs come in 1 ms "
            f"bins), got {value:g}"
        )
    if value > MAX_DURATION_MS:
        raise UserError(
            f"--duration-ms {value:g} is longer than the {MAX_DURATION_MS} ms (one hour) a "
            "simulation may last; make more simulations (--n-sims) instead"
        )
    return int(value)


def main(argv: list[str] | None = None, simulator: Simulator = NEURON) -> int:
    args = build_parser().parse_args(argv)
    check_scheduler_address(args.scheduler)
    # Before the cell is built: a store path that is a file or lies under one is refused
    # at once (the store module checks the rest, e.g. a non-empty folder that is no store).
    check_output_dir(args.out)
    if args.inputs and Path(args.inputs).is_file() and Path(args.inputs).stat().st_size == 0:
        # np.load of an empty file raises EOFError, which ExplicitInputs.load lets through.
        raise UserError(f"--inputs {args.inputs} is an empty file, not a .npy array")
    inputs = ExplicitInputs.load(args.inputs) if args.inputs else None
    if args.duration_ms is not None:
        duration_ms = _whole_ms(args.duration_ms)
    else:
        duration_ms = inputs.n_time if inputs is not None else DEFAULT_DURATION_MS
    n_sims = args.n_sims
    if n_sims is None:
        n_sims = inputs.spikes.shape[0] if inputs is not None and inputs.per_simulation else 1
    if inputs is not None and args.input_protocol is not None:
        raise UserError("--inputs replaces the input protocol; leave --input-protocol out")
    settings = SimulationSettings(
        cell=args.cell,
        duration_ms=duration_ms,
        input_variant=args.input_protocol,
        dt_ms=args.dt_ms,
        cvode=args.cvode,
        record_nexus=args.record_nexus,
        record_dendrites=args.record_dendrites,
        release_probability=args.release_probability,
        # Absolute, since workers may run in another folder (or on another machine).
        morphology_path=str(Path(args.morphology).resolve()) if args.morphology else None,
    )
    result = generate(
        args.out,
        n_sims,
        settings,
        seed=args.seed,
        inputs=inputs,
        workers=args.workers,
        scheduler=args.scheduler,
        simulator=simulator,
        log=print,
    )
    ran = f"{result.n_run} run in {result.wall_s:.1f} s" if result.n_run else "nothing new to run"
    print(f"done ({ran}). {result.summary()}")
    return 0


if __name__ == "__main__":
    run_cli(main)
