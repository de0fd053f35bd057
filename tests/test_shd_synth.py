"""The synthetic SHD generator: official layout (read with plain h5py), resume, errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from biophys.auditory import shd_synth, speech
from elmbridge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
needs_espeak = pytest.mark.skipif(
    shutil.which(speech.ESPEAK) is None and os.environ.get("CI") != "true",
    reason="espeak-ng is not installed (apt-get install -y espeak-ng)",
)
# Small but complete: 3 speakers (one held out), 3 words in both languages, 2 repeats,
# a 24-channel cochlea so that a run takes seconds.
SMALL_ARGS = [
    "--n-speakers", "3", "--repeats", "2", "--labels", "0,7,13", "--channels", "24",
    "--seed", "5",
]  # fmt: skip


def _cli(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "biophys.shd_synth", *args],
        cwd=REPO,
        env=env or os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _read_plain(path: Path) -> dict:
    """Read an SHD file the way SHD users do: h5py only, no code of this project."""
    with h5py.File(path, "r") as f:
        return {
            "times": [np.asarray(t) for t in f["spikes/times"]],
            "units": [np.asarray(u) for u in f["spikes/units"]],
            "labels": f["labels"][:],
            "speaker": f["extra/speaker"][:],
            "keys": [k.decode() if isinstance(k, bytes) else k for k in f["extra/keys"][:]],
            "gender": list(f["extra/meta_info/gender"][:]),
            "age": f["extra/meta_info/age"][:],
            "body_height": f["extra/meta_info/body_height"][:],
            "dtypes": (
                f["spikes/times"].dtype.metadata["vlen"],
                f["spikes/units"].dtype.metadata["vlen"],
            ),
            "attrs": dict(f.attrs),
        }


@needs_espeak
def test_small_set_has_official_layout_and_held_out_speakers(tmp_path):
    out = tmp_path / "set"
    shd_synth.main([*SMALL_ARGS, "--out", str(out), "--scheduler", "synchronous"])
    train, test = _read_plain(out / "shd_train.h5"), _read_plain(out / "shd_test.h5")
    assert len(train["labels"]) + len(test["labels"]) == 3 * 3 * 2
    for part in (train, test):
        assert part["keys"] == list(speech.KEYS) and part["keys"][13] == "drei"
        n = len(part["labels"])
        assert len(part["times"]) == len(part["units"]) == len(part["speaker"]) == n
        assert np.issubdtype(part["dtypes"][0], np.floating)
        assert np.issubdtype(part["dtypes"][1], np.integer)
        assert np.issubdtype(part["labels"].dtype, np.integer)
        assert set(part["labels"].tolist()) <= {0, 7, 13}
        for t, u in zip(part["times"], part["units"], strict=True):
            assert t.size == u.size > 0
            assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 1.5
            assert u.min() >= 0 and u.max() < 24
        assert len(part["gender"]) == len(part["age"]) == len(part["body_height"]) == 3
        record = json.loads(part["attrs"]["provenance"])
        assert record["seed"] == 5 and record["config"]["n_speakers"] == 3
        assert part["attrs"]["espeak_ng_version"] == speech.espeak_version()
        assert "numpy" in json.loads(part["attrs"]["software"])
    held_out = set(test["speaker"].tolist()) - set(train["speaker"].tolist())
    assert len(held_out) == 1  # one speaker only in test, like SHD's two of twelve
    assert (out / "raster.png").stat().st_size > 1000
    stats = json.loads((out / "stats.json").read_text())
    assert stats["all"]["n_samples"] == 18
    # the same folder with other settings is refused, so samples of two runs never mix
    changed = [a if a != "5" else "6" for a in SMALL_ARGS]  # another seed
    with pytest.raises(UserError, match="other settings"):
        shd_synth.main([*changed, "--out", str(out), "--scheduler", "synchronous"])


@needs_espeak
def test_killed_run_resumes_to_the_same_result(tmp_path):
    # Uninterrupted, on a local Dask cluster of two processes.
    whole = tmp_path / "whole"
    done = _cli([*SMALL_ARGS, "--out", str(whole), "--workers", "2"])
    assert done.wait(timeout=300) == 0, done.stderr.read()
    # Killed (SIGKILL: no cleanup at all) once a few samples are stored, then rerun.
    part = tmp_path / "part"
    samples = part / shd_synth.WORK_DIR / "samples"
    run = _cli([*SMALL_ARGS, "--out", str(part), "--scheduler", "synchronous"])
    deadline = time.time() + 120
    while len(list(samples.glob("*.npz"))) < 4 and time.time() < deadline:
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    n_before = len(list(samples.glob("*.npz")))
    assert 4 <= n_before < 18 and not (part / "shd_train.h5").exists()
    rerun = _cli([*SMALL_ARGS, "--out", str(part), "--scheduler", "synchronous"])
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    assert f"{n_before} of 18 already done" in rerun.stderr.read()
    for name in ("shd_train.h5", "shd_test.h5"):
        a, b = _read_plain(whole / name), _read_plain(part / name)
        for key in ("labels", "speaker", "age"):
            np.testing.assert_array_equal(a[key], b[key])
        assert a["keys"] == b["keys"] and a["gender"] == b["gender"]
        for ta, tb in zip(a["times"], b["times"], strict=True):
            np.testing.assert_array_equal(ta, tb)
        for ua, ub in zip(a["units"], b["units"], strict=True):
            np.testing.assert_array_equal(ua, ub)


def test_cli_errors_are_one_line(tmp_path):
    proc = _cli(["--n-speakers", "1", "--out", str(tmp_path / "x")])
    assert proc.wait(timeout=60) == 2
    err = proc.stderr.read().strip()
    assert err.startswith("error:") and "speakers" in err and "\n" not in err
    env = {**os.environ, "PATH": str(tmp_path)}  # no espeak-ng on PATH
    proc = _cli([*SMALL_ARGS, "--out", str(tmp_path / "y")], env=env)
    assert proc.wait(timeout=60) == 2
    assert "Debian package 'espeak-ng'" in proc.stderr.read()


def test_split_plan_is_deterministic_and_holds_out_speakers():
    config = shd_synth.SynthConfig(n_speakers=12, repeats=4, n_test_speakers=2, seed=1)
    _, jobs = shd_synth.plan(config)
    assert shd_synth.plan(config)[1] == jobs
    assert len(jobs) == 12 * 20 * 4
    test_only = {j.speaker.speaker_id for j in jobs if j.split == "test"} - {
        j.speaker.speaker_id for j in jobs if j.split == "train"
    }
    assert len(test_only) == 2
    seen_in_test = [j for j in jobs if j.split == "test" and j.speaker.speaker_id not in test_only]
    assert len(seen_in_test) == 10 * round(0.1 * 80)
