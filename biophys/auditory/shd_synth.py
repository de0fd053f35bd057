"""An SHD-compatible spiking data set from synthetic speech, made on this machine.

    python -m biophys.shd_synth --out data/shd_synth --n-speakers 24 --repeats 4

Every speaker (`biophys.auditory.speech`) says each of the 20 SHD words `--repeats` times; each
clip goes through the cochlea (`biophys.auditory.cochlea`) and becomes one sample of
`shd_train.h5` / `shd_test.h5` in the official layout (`biophys.auditory.shd_format`). As in SHD,
some speakers are held out: all their samples go to the test file, together with a
fraction of the other speakers' samples.

The run is deterministic in its arguments (and the espeak-ng version), runs in parallel on
Dask (`--workers`, or `--scheduler` for a cluster) with at most a few clips in flight, and
is resumable: each finished sample is saved at once to `<out>/.work/samples/`, so a killed
run continues where it stopped when given the same command again. The h5 files, a
statistics summary (`stats.json`) and a raster plot of a few samples (`raster.png`) are
written last, atomically.
"""

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biophys.auditory import shd_format, speech
from biophys.auditory.cochlea import CochleaParams, audio_to_spikes
from biophys.auditory.cochlea.basilar_membrane import BasilarMembraneParams
from elmbridge import files, parallel, provenance
from elmbridge.cli import run_cli
from elmbridge.errors import UserError

WORK_DIR = ".work"
SCHEMA = "elmbridge.shd_synth/1"
# Bump when a code change alters the samples, so that a resumed run never mixes samples
# made by two versions of the model.
MODEL_VERSION = 1


@dataclass(frozen=True)
class SynthConfig:
    """What decides the content of a synthetic SHD set.

    Attributes:
        n_speakers: number of synthetic speakers.
        repeats: repetitions of each word per speaker.
        n_test_speakers: speakers that appear only in the test file.
        test_fraction: fraction of the other speakers' samples also put in the test file.
        labels: the word ids to include (default all 20).
        seed: seed of speakers, repetitions, split and cochlear noise.
        cochlea: the cochlea model.
    """

    n_speakers: int = 24
    repeats: int = 4
    n_test_speakers: int = 4
    test_fraction: float = 0.1
    labels: tuple[int, ...] = tuple(range(len(speech.KEYS)))
    seed: int = 0
    cochlea: CochleaParams = field(default_factory=CochleaParams)

    def validate(self) -> None:
        if self.n_speakers < 2:
            raise UserError(f"need at least 2 speakers (one held out), got {self.n_speakers}")
        if self.repeats < 1:
            raise UserError(f"--repeats must be at least 1, got {self.repeats}")
        if not 1 <= self.n_test_speakers < self.n_speakers:
            raise UserError(
                f"--n-test-speakers must be between 1 and {self.n_speakers - 1} "
                f"(n_speakers - 1), got {self.n_test_speakers}"
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise UserError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        bad = [lab for lab in self.labels if not 0 <= lab < len(speech.KEYS)]
        if bad or not self.labels or len(set(self.labels)) != len(self.labels):
            raise UserError(
                f"--labels must be distinct word ids in 0..{len(speech.KEYS) - 1}, got "
                f"{list(self.labels)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SampleJob:
    """One clip to make: who says which word, its split and its seed."""

    index: int
    speaker: speech.Speaker
    label: int
    repeat: int
    split: str
    seed: int
    cochlea: CochleaParams


def plan(config: SynthConfig) -> tuple[list[speech.Speaker], list[SampleJob]]:
    """The speakers and the full, ordered list of samples (a function of the config)."""
    config.validate()
    speakers = speech.make_speakers(config.n_speakers, config.seed)
    rng = np.random.default_rng([config.seed, 0x5B117])
    held_out = set(rng.choice(config.n_speakers, config.n_test_speakers, replace=False).tolist())
    jobs = []
    for spk in speakers:
        items = [(lab, rep) for lab in config.labels for rep in range(config.repeats)]
        if spk.speaker_id in held_out:
            test = set(items)
        else:
            k = round(config.test_fraction * len(items))
            test = {items[i] for i in rng.permutation(len(items))[:k]}
        for lab, rep in items:
            jobs.append(
                SampleJob(
                    index=len(jobs),
                    speaker=spk,
                    label=lab,
                    repeat=rep,
                    split="test" if (lab, rep) in test else "train",
                    seed=config.seed,
                    cochlea=config.cochlea,
                )
            )
    return speakers, jobs


def make_sample(job: SampleJob) -> dict[str, np.ndarray]:
    """Synthesise one word and convert it to spikes (runs on a worker)."""
    audio = speech.speak_word(
        job.speaker, job.label, job.repeat, job.seed, int(job.cochlea.sample_rate_hz)
    )
    noise_seed = (job.seed, 0xC0C1EA, job.speaker.speaker_id, job.label, job.repeat)
    spikes = audio_to_spikes(audio, job.cochlea.sample_rate_hz, noise_seed, job.cochlea)
    return {
        "times_s": spikes.times_s.astype(shd_format.TIMES_DTYPE),
        "units": spikes.units.astype(shd_format.UNITS_DTYPE),
        "duration_s": np.float64(spikes.duration_s),
        # workers of a cluster may have another espeak-ng than the submitting machine
        "espeak_ng_version": np.str_(speech.espeak_version()),
    }


class SampleStore:
    """Finished samples, one small .npz file each, written atomically as they arrive.

    The folder also holds the run's config; a rerun with another config is refused so
    that samples of different runs never mix.
    """

    def __init__(self, root: Path, config: SynthConfig, espeak_version: str):
        self.root = root
        self.samples = root / "samples"
        self.samples.mkdir(parents=True, exist_ok=True)
        record = {
            "schema": SCHEMA,
            "model_version": MODEL_VERSION,
            "espeak_ng_version": espeak_version,
            "config": config.to_dict(),
        }
        config_file = root / "config.json"
        if config_file.exists():
            old = files.read_json(config_file)
            # JSON turns tuples into lists; compare in that form.
            if old != _json_roundtrip(record):
                raise UserError(
                    f"{root} holds samples of a run with other settings, another "
                    f"espeak-ng or an older model ({config_file}); use another --out "
                    "folder, or delete that one to start again"
                )
        else:
            files.write_json(config_file, record)

    def path(self, index: int) -> Path:
        return self.samples / f"{index:06d}.npz"

    def done(self) -> set[int]:
        return {int(p.stem) for p in self.samples.glob("*.npz")}

    def put(self, index: int, sample: dict[str, np.ndarray]) -> None:
        with files.atomic_path(self.path(index)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **sample)

    def get(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.path(index)) as data:
            return {k: data[k] for k in data.files}


def _json_roundtrip(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def generate(
    config: SynthConfig,
    out: str | os.PathLike,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """Make (or finish) the data set in `out`; returns its statistics.

    Args:
        config: what to make.
        out: output folder (created).
        scheduler: None for a local process pool, "synchronous" for this process, or the
            address of a Dask scheduler.
        n_workers: processes of the local pool (default: one per core).
        max_in_flight: clips submitted at once (default: twice the workers); bounds memory
            at roughly 1 GB per clip in flight for 700 channels.
    """
    out = Path(out)
    espeak = speech.espeak_version()  # fails early and clearly when espeak-ng is missing
    speakers, jobs = plan(config)
    store = SampleStore(out / WORK_DIR, config, espeak)
    done = store.done()
    todo = [job for job in jobs if job.index not in done]
    if todo:
        with parallel.dask_client(scheduler, n_workers) as client:
            for job, sample in parallel.map_unordered(
                make_sample,
                todo,
                client=client,
                desc=f"speech → spikes ({len(done)} of {len(jobs)} already done)",
                max_in_flight=max_in_flight,
            ):
                store.put(job.index, sample)
    samples = [store.get(job.index) for job in jobs]
    versions = {str(s["espeak_ng_version"]) for s in samples}
    if versions != {espeak}:
        raise UserError(
            f"the samples were spoken by espeak-ng {sorted(versions)}, but this machine has "
            f"{espeak}; install the same espeak-ng on all Dask workers and start again"
        )
    record = provenance.run_record(
        config.to_dict(),
        config.seed,
        data={
            "speech": f"espeak-ng {espeak}",
            "speakers": [s.to_dict() for s in speakers],
            "schema": SCHEMA,
        },
    )
    record["software"]["espeak-ng"] = espeak
    meta_info = {
        "gender": [s.gender for s in speakers],
        "age": [np.nan] * len(speakers),
        "body_height": [np.nan] * len(speakers),
    }
    for split in ("train", "test"):
        chosen = [job for job in jobs if job.split == split]
        shd_format.write_shd(
            out / f"shd_{split}.h5",
            times=[samples[j.index]["times_s"] for j in chosen],
            units=[samples[j.index]["units"] for j in chosen],
            labels=[j.label for j in chosen],
            speakers=[j.speaker.speaker_id for j in chosen],
            keys=speech.KEYS,
            meta_info=meta_info,
            attrs={
                "description": f"synthetic SHD ({split}): espeak-ng speech through the "
                "elmbridge cochlea",
                "provenance": record,
                "config": config.to_dict(),
                "seed": config.seed,
                "espeak_ng_version": espeak,
                "software": record["software"],
            },
        )
    stats = spike_statistics(jobs, samples, config.cochlea.n_channels)
    files.write_json(out / "stats.json", stats)
    plot_rasters(jobs, samples, out / "raster.png", config.cochlea.n_channels)
    return stats


def spike_statistics(
    jobs: list[SampleJob], samples: list[dict[str, np.ndarray]], n_channels: int
) -> dict[str, Any]:
    """Per-sample spike count, active channels and duration, summarised per split."""

    def summary(values: list[float]) -> dict[str, float]:
        v = np.asarray(values, dtype=float)
        return {
            "mean": float(v.mean()),
            "median": float(np.median(v)),
            "min": float(v.min()),
            "max": float(v.max()),
        }

    stats: dict[str, Any] = {"n_channels": n_channels}
    for split in ("train", "test", "all"):
        chosen = [j for j in jobs if split in ("all", j.split)]
        if not chosen:
            continue
        rows = [samples[j.index] for j in chosen]
        stats[split] = {
            "n_samples": len(chosen),
            "n_speakers": len({j.speaker.speaker_id for j in chosen}),
            "spikes_per_sample": summary([len(r["units"]) for r in rows]),
            "active_channels": summary([len(np.unique(r["units"])) for r in rows]),
            "duration_s": summary([float(r["duration_s"]) for r in rows]),
            "last_spike_s": summary([float(r["times_s"].max(initial=0.0)) for r in rows]),
        }
    return stats


def plot_rasters(
    jobs: list[SampleJob],
    samples: list[dict[str, np.ndarray]],
    path: Path,
    n_channels: int,
    n_panels: int = 6,
) -> None:
    """Raster plots of a few samples (distinct words and speakers), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Distinct speakers (one per panel) saying words spread over the label range.
    speakers = sorted({j.speaker.speaker_id for j in jobs})
    labels = sorted({j.label for j in jobs})
    wanted = [
        (speakers[k % len(speakers)], labels[round(k * (len(labels) - 1) / max(1, n_panels - 1))])
        for k in range(n_panels)
    ]
    by_key = {(j.speaker.speaker_id, j.label): j for j in jobs if j.repeat == 0}
    picked = [by_key[key] for key in wanted if key in by_key]
    fig, axes = plt.subplots(1, len(picked), figsize=(3 * len(picked), 3.4), sharey=True)
    for ax, job in zip(np.atleast_1d(axes), picked, strict=False):
        s = samples[job.index]
        ax.scatter(s["times_s"], s["units"], s=0.3, c="k", marker=".", linewidths=0)
        ax.set_title(
            f"'{speech.KEYS[job.label]}' (label {job.label})\n"
            f"speaker {job.speaker.speaker_id}, {job.speaker.variant}",
            fontsize=8,
        )
        ax.set_xlim(0, float(s["duration_s"]))
        ax.set_ylim(n_channels, 0)
        ax.set_xlabel("time (s)")
    np.atleast_1d(axes)[0].set_ylabel("channel (0 = base, high frequency)")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m biophys.shd_synth", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="data/shd_synth", help="output folder")
    p.add_argument("--n-speakers", type=int, default=24)
    p.add_argument("--repeats", type=int, default=4, help="repetitions of each word")
    p.add_argument(
        "--n-test-speakers", type=int, default=None, help="held-out speakers (default 1 in 6)"
    )
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument(
        "--labels", default=None, help="comma-separated word ids (default: all 20 words)"
    )
    p.add_argument("--channels", type=int, default=700, help="cochlea channels (SHD: 700)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="local processes (default: cores)")
    p.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address, or 'synchronous' to run in this process",
    )
    p.add_argument("--max-in-flight", type=int, default=None)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    if args.channels < 2:
        raise UserError(f"--channels must be at least 2, got {args.channels}")
    try:
        labels = (
            tuple(int(x) for x in args.labels.split(","))
            if args.labels
            else tuple(range(len(speech.KEYS)))
        )
    except ValueError as err:
        raise UserError(f"--labels must be comma-separated integers, got {args.labels!r}") from err
    n_test = args.n_test_speakers
    if n_test is None:
        n_test = max(1, args.n_speakers // 6)
    return SynthConfig(
        n_speakers=args.n_speakers,
        repeats=args.repeats,
        n_test_speakers=n_test,
        test_fraction=args.test_fraction,
        labels=labels,
        seed=args.seed,
        cochlea=CochleaParams(basilar_membrane=BasilarMembraneParams(n_channels=args.channels)),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    config.validate()
    stats = generate(
        config,
        args.out,
        scheduler=args.scheduler,
        n_workers=args.workers,
        max_in_flight=args.max_in_flight,
    )
    out = Path(args.out)
    print(f"wrote {out / 'shd_train.h5'} ({stats['train']['n_samples']} samples)")
    if "test" in stats:
        print(f"wrote {out / 'shd_test.h5'} ({stats['test']['n_samples']} samples)")
    print(f"statistics: {out / 'stats.json'}; raster plot: {out / 'raster.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
