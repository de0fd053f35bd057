"""Fidelity and speed of the cochlea against the reference converter `lauscher`.

    python -m benchmarks.cochlea_fidelity [--audio clip.flac] [--seeds 5]

Runs `lauscher` (the converter that made SHD; optional, `pip install "elmbridge[fidelity]"`)
on one clip on one core, runs `biophys.auditory.cochlea` on the same clip with several seeds, and
prints per-channel spike-count correlation, total spikes, active channels and the time per
clip. lauscher takes minutes and several GB per clip, so its result is kept in the user
cache (keyed by the clip's sha256 and lauscher's version); `--rerun-lauscher` repeats it.

Both models are stochastic (40 Bernoulli fibres per channel), so the correlation between
two of our own runs with different seeds is printed as the ceiling that no
re-implementation can beat.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from biophys.auditory.cochlea import CochleaParams, audio_to_spikes
from biophys.auditory.cochlea.audio import read_audio
from elmbridge import download, files
from elmbridge.cli import run_cli
from elmbridge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AUDIO = REPO.parent / "shared" / "data" / "audio" / "heidelberg_digit_sample.flac"


def lauscher_version() -> str:
    """The installed lauscher version, or a UserError saying how to install it."""
    if importlib.util.find_spec("lauscher") is None:
        raise UserError(
            "the reference converter 'lauscher' is not installed; install the optional "
            'extra with: pip install "elmbridge[fidelity]"  (or: pip install lauscher)'
        )
    return importlib.metadata.version("lauscher")


def run_lauscher(audio_path: Path, rerun: bool = False) -> dict:
    """lauscher's spikes for a clip on one core, with its wall and CPU time (cached)."""
    version = lauscher_version()
    key = f"{download.sha256_file(audio_path)[:16]}-lauscher{version}"
    cache = download.cache_dir("benchmarks", "lauscher") / f"{key}.npz"
    if cache.exists() and not rerun:
        with np.load(cache) as data:
            return {k: data[k] for k in data.files} | {"cached": True}
    print(f"running lauscher {version} on {audio_path} (one core; takes minutes) ...")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "spikes.npz"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "lauscher", str(audio_path), str(out), "-j", "1"], check=True
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        with np.load(out) as data:
            times, units = data["arr_0"]
    result = {
        "times_s": times,
        "units": units.astype(np.int64),
        "wall_s": np.float64(wall),
        "cpu_s": np.float64(
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        ),
        "peak_rss_gb": np.float64(after.ru_maxrss / 1e6),
    }
    with files.atomic_path(cache) as tmp_file, open(tmp_file, "wb") as fh:
        np.savez(fh, **result)
    return result | {"cached": False}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cochlea_fidelity", description=__doc__)
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="mono clip at 48 kHz")
    p.add_argument("--seeds", type=int, default=5, help="runs of our cochlea (seeds)")
    p.add_argument("--rerun-lauscher", action="store_true", help="ignore the cached result")
    args = p.parse_args(argv)
    if not args.audio.is_file():
        raise UserError(f"audio file {args.audio} not found; pass one with --audio")
    if args.seeds < 2:
        raise UserError("--seeds must be at least 2 (the noise ceiling needs two runs)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    ref = run_lauscher(args.audio, args.rerun_lauscher)
    audio, rate = read_audio(args.audio)
    params = CochleaParams()
    n_ch = params.n_channels
    ref_counts = np.bincount(ref["units"], minlength=n_ch)

    runs, cpu, wall = [], [], []
    for seed in range(args.seeds):
        c0, w0 = time.process_time(), time.perf_counter()
        spikes = audio_to_spikes(audio, rate, seed, params)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        runs.append(spikes)
    counts = [s.counts_per_channel() for s in runs]
    corr_ref = [correlation(c, ref_counts) for c in counts]
    corr_self = [correlation(counts[i], counts[i + 1]) for i in range(len(counts) - 1)]

    def profile(times_s):
        return np.histogram(times_s, bins=np.arange(0, len(audio) / rate + 0.01, 0.01))[0]

    corr_time = [correlation(profile(s.times_s), profile(ref["times_s"])) for s in runs]
    totals = [len(s.units) for s in runs]
    active = [int((c > 0).sum()) for c in counts]
    warm_cpu = float(np.median(cpu[1:]))
    warm_wall = float(np.median(wall[1:]))
    ref_cpu = float(ref["cpu_s"])

    def ms(values, digits=3):
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    rows = [
        ("per-channel spike-count correlation with lauscher", "1 (reference)", ms(corr_ref)),
        ("  same, ours vs ours (other seed: noise ceiling)", "", ms(corr_self)),
        ("time-profile correlation (10 ms bins) with lauscher", "1 (reference)", ms(corr_time)),
        ("total spikes", f"{len(ref['units'])}", ms(totals, 0)),
        ("active channels (of 700)", f"{int((ref_counts > 0).sum())}", ms(active, 0)),
        ("CPU time per clip, s (ours: warm transfer matrix)", f"{ref_cpu:.1f}", f"{warm_cpu:.2f}"),
        ("wall time per clip, s (ours: warm)", f"{float(ref['wall_s']):.1f}", f"{warm_wall:.2f}"),
        ("first clip of a new length, s (ours: builds the matrix)", "", f"{wall[0]:.2f}"),
        ("peak memory, GB", f"{float(ref['peak_rss_gb']):.1f}", f"{_peak_rss_gb():.1f}"),
        ("speed-up (CPU time, warm)", "", f"{ref_cpu / warm_cpu:.0f}x"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nclip: {args.audio} ({len(audio) / rate:.3f} s at {rate} Hz), {args.seeds} seeds")
    print(f"{'':{width}}  {'lauscher':>18}  {'biophys.auditory.cochlea':>18}")
    for name, a, b in rows:
        print(f"{name:{width}}  {a:>18}  {b:>18}")
    if ref.get("cached"):
        print("(lauscher result from the cache; --rerun-lauscher to measure it again)")
    return 0


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


if __name__ == "__main__":
    run_cli(main)
