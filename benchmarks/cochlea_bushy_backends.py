"""Which tool for the bushy-cell layer: a vectorised numpy loop or Brian2?

    python -m benchmarks.cochlea_bushy_backends [--audio clip.flac] [--repeats 3]

Takes the fibre spike counts of one clip (700 channels, 24 kHz steps), runs the bushy LIF
layer with

- numpy: `biophys.auditory.cochlea.bushy_cell.bushy_spikes`, a step loop over 700-cell vectors;
- Brian2 runtime mode, "cython" target (compiled code objects, Python loop over steps);
- Brian2 runtime mode, "numpy" target;
- Brian2 "cpp_standalone" (the whole run in C++): build once, then re-run with new inputs
  through `run_args` (no recompilation);

checks that every backend gives the same spikes, and prints the time of the first call
(including any compilation) and of warm calls (median of `--repeats`).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cochlea_fidelity import DEFAULT_AUDIO
from biophys.auditory.cochlea import CochleaParams, basilar_membrane, bushy_cell, hair_cell
from biophys.auditory.cochlea.audio import normalise_and_window, read_audio
from elmbridge.cli import run_cli
from elmbridge.errors import UserError


def fibre_counts(audio_path: Path, seed: int) -> tuple[np.ndarray, CochleaParams]:
    audio, rate = read_audio(audio_path)
    params = CochleaParams()
    velocity = basilar_membrane.velocity(
        normalise_and_window(audio, params.rms), rate, params.basilar_membrane
    )
    prob = hair_cell.release_probability(velocity, params.step_rate_hz, params.hair_cell)
    rng = np.random.default_rng(seed)
    counts = bushy_cell.fibre_spike_counts(prob, params.step_rate_hz, params.bushy_cell, rng)
    return counts, params


def timed(fn, repeats: int):
    """(result of the first call, its wall time, median wall time of `repeats` more)."""
    t0 = time.perf_counter()
    first = fn()
    first_s = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return first, first_s, float(np.median(warm)) if warm else float("nan")


def standalone_runner(counts_list: list[np.ndarray], params: CochleaParams, workdir: str):
    """Build the Brian2 network once in cpp_standalone mode; return (build_s, run(k))."""
    import brian2 as b2
    from brian2.devices import reset_device

    rate = params.step_rate_hz
    bp = params.bushy_cell
    dt = 1.0 / rate
    n_steps, n_ch = counts_list[0].shape
    b2.set_device("cpp_standalone", directory=workdir, build_on_run=False)
    try:
        drive = b2.TimedArray(
            bushy_cell.synaptic_drive(counts_list[0], rate, bp), dt=dt * b2.second
        )
        cells = bushy_cell.brian2_bushy_cells(drive, n_ch, rate, bp)
        monitor = b2.SpikeMonitor(cells)
        b2.run(n_steps * dt * b2.second, namespace={})
        t0 = time.perf_counter()
        b2.device.build(directory=workdir, compile=True, run=False)
        build_s = time.perf_counter() - t0
    except Exception:
        reset_device()
        raise

    def run(k: int):
        values = bushy_cell.synaptic_drive(counts_list[k], rate, bp)
        b2.device.run(run_args={drive: values})
        steps = np.round(np.asarray(monitor.t / b2.second) * rate).astype(np.int64)
        units = np.asarray(monitor.i, dtype=np.int64)
        order = np.lexsort((units, steps))
        return steps[order], units[order]

    return build_s, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cochlea_bushy_backends", description=__doc__
    )
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-standalone", action="store_true", help="skip cpp_standalone")
    args = p.parse_args(argv)
    if not args.audio.is_file():
        raise UserError(f"audio file {args.audio} not found; pass one with --audio")
    if args.repeats < 1:
        # np.median of no timings is NaN with a warning: a table of nonsense, not an error.
        raise UserError(f"--repeats must be at least 1, got {args.repeats}")
    counts, params = fibre_counts(args.audio, seed=0)
    rate, bp = params.step_rate_hz, params.bushy_cell
    rows = []
    ref, first, warm = timed(lambda: bushy_cell.bushy_spikes(counts, rate, bp), args.repeats)
    rows.append(("numpy step loop (used)", first, warm, True))
    for target in ("cython", "numpy"):
        got, first, warm = timed(
            lambda t=target: bushy_cell.bushy_spikes_brian2(counts, rate, bp, target=t),
            args.repeats,
        )
        same = all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
        rows.append((f"Brian2 runtime, {target} target", first, warm, same))
    if not args.no_standalone:
        from brian2.devices import reset_device

        counts_2, _ = fibre_counts(args.audio, seed=1)
        ref_2 = bushy_cell.bushy_spikes(counts_2, rate, bp)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                build_s, run = standalone_runner([counts, counts_2], params, tmp)
                t0 = time.perf_counter()
                got = run(0)
                first = build_s + time.perf_counter() - t0
                warm_times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    got_2 = run(1)
                    warm_times.append(time.perf_counter() - t0)
                same = all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True)) and all(
                    np.array_equal(a, b) for a, b in zip(got_2, ref_2, strict=True)
                )
                rows.append(
                    ("Brian2 cpp_standalone (run_args)", first, float(np.median(warm_times)), same)
                )
            finally:
                reset_device()
    n_steps, n_ch = counts.shape
    print(f"\nbushy layer: {n_ch} cells × {n_steps} steps ({n_steps / rate:.3f} s at {rate:g} Hz)")
    print(f"{'backend':36}  {'first call, s':>14}  {'warm call, s':>12}  same spikes")
    for name, first, warm, same in rows:
        print(f"{name:36}  {first:14.2f}  {warm:12.3f}  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
