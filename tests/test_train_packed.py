"""elmnet.train_packed: K points trained as one model write, per point, the run folder of
their solo `elmnet.train` runs: metrics.csv, result.json, run.json, final and best
parameters. Straight, stopped and resumed, and resumed from checkpoints at different
steps. The reference is each point's own solo run, trained one by one.

Float32 on the CPU. Tolerance: relative 1e-5 (absolute 1e-6 near zero) on every number;
the packed bank computes each neuron's step from the same operands as the solo bank, so
only the order of a few float sums may differ.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from task_files import write_enwik8_zip, write_shd_pair

from elmbridge.errors import UserError
from elmbridge.runs import read_metrics
from elmnet import train
from elmnet.train_packed import main, train_packed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RTOL, ATOL = 1e-5, 1e-6
# Dropout stays on (the SHD defaults, 0.2 in and recurrent): masks must be the solo ones.
COMMON = ["--task", "shd", "--steps", "6", "--eval-every", "2", "--log-every", "1",
          "--bin-ms", "100", "--val-pairs", "12", "--test-pairs", "16", "--eval-batch", "8",
          "--batch", "4", "--d-m", "2", "--no-progress"]  # fmt: skip
# Different seeds, N and k_c (and ρ and learning rate).
POINTS = {
    "a": ["--seed", "0", "--N", "7", "--k-c", "60"],
    "b": ["--seed", "1", "--N", "5", "--k-c", "30", "--rho", "0.5"],
    "c": ["--seed", "2", "--N", "4", "--k-c", "90", "--lr", "0.01"],
}


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=40, n_test=16)


def argv(shd_dir, name, out: Path, *extra) -> list[str]:
    return [*COMMON, "--data", str(shd_dir), *POINTS[name], "--out", str(out / name), *extra]


@pytest.fixture(scope="module")
def solo_runs(shd_dir, tmp_path_factory):
    """Each point's solo run, one after the other."""
    out = tmp_path_factory.mktemp("solo")
    for name in POINTS:
        assert train.main(argv(shd_dir, name, out)) == 0
    return out


def close(a, b, what: str) -> None:
    if isinstance(a, float | int) and isinstance(b, float | int):
        assert a == pytest.approx(b, rel=RTOL, abs=ATOL), what
    else:
        assert a == b, what


def assert_same_run(folder: Path, solo: Path) -> None:
    """Every file of the solo run's folder, compared (times and versions aside)."""
    rows, expected = read_metrics(folder / "metrics.csv"), read_metrics(solo / "metrics.csv")
    assert len(rows) == len(expected) > 5
    for row, ref in zip(rows, expected, strict=True):
        assert list(row) == list(ref)
        for key in row:
            if key != "elapsed_s":
                close(row[key], ref[key], f"{folder.name} step {ref['step']} {key}")
    result = json.loads((folder / "result.json").read_text())
    ref = json.loads((solo / "result.json").read_text())
    assert list(result) == list(ref)
    for key in ref:
        close(result[key], ref[key], f"{folder.name} result {key}")
    record = json.loads((folder / "run.json").read_text())
    ref = json.loads((solo / "run.json").read_text())
    for key in ("kind", "seed", "network", "parameters", "data"):
        assert record[key] == ref[key], key
    # The configuration is the solo one but for the folder's own path (not recorded).
    assert record["config"] == ref["config"]
    for name in ("checkpoint.pt", "best.pt"):
        got = torch.load(folder / name, weights_only=True)
        want = torch.load(solo / name, weights_only=True)
        assert got["step"] == want["step"]
        assert got["model"].keys() == want["model"].keys()
        for key, value in want["model"].items():
            torch.testing.assert_close(got["model"][key], value, rtol=RTOL, atol=ATOL,
                                       msg=f"{folder.name} {name} {key}")  # fmt: skip
    got = torch.load(folder / "checkpoint.pt", weights_only=True)
    want = torch.load(solo / "checkpoint.pt", weights_only=True)
    # The dropout generator ends where the solo run's ends: the same masks were drawn.
    assert torch.equal(got["rng"]["torch"], want["rng"]["torch"])
    for key, value in want["optimizer"]["state"].items():
        for field, tensor in value.items():
            torch.testing.assert_close(got["optimizer"]["state"][key][field], tensor,
                                       rtol=RTOL, atol=ATOL)  # fmt: skip


def test_pack_equals_solo_runs(shd_dir, solo_runs, tmp_path):
    out = tmp_path / "packed"
    results = train_packed([argv(shd_dir, name, out) for name in POINTS])
    assert all(r is not None for r in results)
    for name in POINTS:
        assert_same_run(out / name, solo_runs / name)
    # The runs trained: parameters moved, and the points differ from each other.
    first = torch.load(out / "a" / "checkpoint.pt", weights_only=True)["model"]
    from elmnet.config import ELMNetworkConfig
    from elmnet.network import ELMNetwork

    config = ELMNetworkConfig(**json.loads((out / "a" / "run.json").read_text())["network"])
    assert not torch.equal(first["hidden.w_s"], ELMNetwork(config).state_dict()["hidden.w_s"])


def test_stopped_pack_resumes_to_the_solo_runs(shd_dir, solo_runs, tmp_path):
    out = tmp_path / "stopped"
    # Stopped at step 3, between two validations: the checkpoint is of step 3. Through
    # the command line: common options, then one string per point.
    own = [" ".join([*POINTS[name], "--out", str(out / name)]) for name in POINTS]
    assert main([*COMMON, "--data", str(shd_dir), "--stop-after", "3", "--points", *own]) == 0
    assert all(not (out / n / "result.json").exists() for n in POINTS)
    assert all(torch.load(out / n / "checkpoint.pt", weights_only=True)["step"] == 3
               for n in POINTS)  # fmt: skip
    train_packed([argv(shd_dir, name, out) for name in POINTS])
    for name in POINTS:
        assert_same_run(out / name, solo_runs / name)


def test_points_at_different_steps_and_finished_points(shd_dir, solo_runs, tmp_path, capsys):
    out = tmp_path / "mixed"
    # a stopped solo at step 2, b at step 5, c finished solo before.
    assert train.main(argv(shd_dir, "a", out, "--stop-after", "2")) == 0
    assert train.main(argv(shd_dir, "b", out, "--stop-after", "5")) == 0
    shutil.copytree(solo_runs / "c", out / "c")
    finished_before = (out / "c" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    results = train_packed([argv(shd_dir, name, out) for name in POINTS])
    text = capsys.readouterr().out
    assert "finished before; skipped" in text and "solo up to the pack's 5" in text
    assert (out / "c" / "result.json").stat().st_mtime_ns == finished_before
    assert results[2] == json.loads((solo_runs / "c" / "result.json").read_text())
    for name in POINTS:
        assert_same_run(out / name, solo_runs / name)


def test_enwik8_pack_carries_each_points_state(tmp_path):
    data = tmp_path / "enwik8.zip"
    write_enwik8_zip(data, n_bytes=60_000)
    common = ["--task", "enwik8", "--data", str(data), "--steps", "5", "--eval-every", "5",
              "--log-every", "1", "--bptt", "8", "--batch", "2", "--d-m", "2", "--k-c", "50",
              "--val-bytes", "300", "--test-bytes", "300", "--val-batch", "2",
              "--no-progress"]  # fmt: skip
    points = {"a": ["--seed", "0", "--N", "6"], "b": ["--seed", "4", "--N", "3", "--rho", "0.3"]}
    for name, own in points.items():
        assert train.main([*common, *own, "--out", str(tmp_path / "solo" / name)]) == 0
    train_packed([[*common, *own, "--out", str(tmp_path / "packed" / name)]
                  for name, own in points.items()])  # fmt: skip
    for name in points:
        assert_same_run(tmp_path / "packed" / name, tmp_path / "solo" / name)
        carried = torch.load(tmp_path / "packed" / name / "checkpoint.pt", weights_only=True)
        assert carried["carried"] is not None  # the BPTT state went into the checkpoint


def test_unpackable_points_are_refused(shd_dir, tmp_path):
    a = argv(shd_dir, "a", tmp_path)
    with pytest.raises(UserError, match="must agree on --steps"):
        train_packed([a, [*argv(shd_dir, "b", tmp_path), "--steps", "8"]])
    with pytest.raises(UserError, match="must share d_m"):
        train_packed([a, [*argv(shd_dir, "b", tmp_path), "--d-m", "3"]])
    with pytest.raises(UserError, match="share a run folder"):
        train_packed([a, a])
    assert not list(tmp_path.iterdir())  # a refused pack leaves nothing behind
    with pytest.raises(UserError, match="usage"):
        main(["--task", "shd"])


def test_a_pack_that_cannot_resume_one_point_writes_nothing(shd_dir, solo_runs, tmp_path):
    shutil.copytree(solo_runs / "b", tmp_path / "b")
    (tmp_path / "b" / "result.json").unlink()  # unfinished, and its lr differs below
    with pytest.raises(UserError, match="another configuration"):
        train_packed([argv(shd_dir, "a", tmp_path),
                      argv(shd_dir, "b", tmp_path, "--lr", "0.02")])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
