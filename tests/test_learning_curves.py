"""benchmarks.learning_curves: the published network's accuracy against steps, end to end
on the small SHD files of tests/task_files.py, and --test-curve's rows checked against an
independent scoring of the saved best model."""

import csv
import json

import pytest
import torch
from task_files import write_shd_pair

from benchmarks import learning_curves
from elmbridge.errors import UserError
from elmnet.config import ELMNetworkConfig
from elmnet.network import ELMNetwork
from elmnet.tasks.shd import load_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=40, n_test=12)


def test_curves_are_trained_tabled_and_plotted(shd_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["--curve", "shd:100:4", "--curve", "shd-adding:100:4", "--eval-every", "2",
            "--data", str(shd_dir), "--runs-dir", str(runs), "--scheduler", "synchronous",
            "--threads", "1", "--no-progress"]  # fmt: skip
    assert learning_curves.main(argv) == 0
    with open(runs / "curves.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["split"] for r in rows} == {"valid", "test", "train"}
    rows = [r for r in rows if r["split"] != "train"]
    # two curves × two evaluations (steps 2 and 4) × validation and test
    assert sorted((r["task"], r["step"], r["split"]) for r in rows) == sorted(
        (t, s, p) for t in ("shd", "shd-adding") for s in ("2", "4") for p in ("valid", "test")
    )
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert (runs / "learning_curves.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "valid acc" in out and "test acc" in out

    # The test row of the best step equals the test score of best.pt (published network,
    # scored here by hand: the last step's argmax against the labels).
    (folder,) = [p for p in runs.iterdir() if p.name.startswith("shd_N96")]
    result = json.loads((folder / "result.json").read_text())
    best_step = result["best_step"]
    curve = {int(r["step"]): float(r["accuracy"]) for r in rows
             if r["task"] == "shd" and r["split"] == "test"}  # fmt: skip
    assert curve[best_step] == pytest.approx(result["test"])
    state = torch.load(folder / "best.pt", weights_only=True)
    net = ELMNetwork(ELMNetworkConfig.from_dict(state["config"]))
    net.load_state_dict(state["model"])
    net.eval()
    test = load_split(shd_dir / "shd_test.h5")
    from elmnet.tasks.shd_classify import SHDClassify

    task = SHDClassify(test, test, bin_ms=100.0, val_fraction=0.5)
    correct = total = 0
    with torch.no_grad():
        for x, y in task.eval_batches("test", 64):
            logits = net(torch.from_numpy(x))[0][:, -1]
            correct += int((logits.argmax(-1) == torch.from_numpy(y)).sum())
            total += len(y)
    assert total == 12 and correct / total == pytest.approx(result["test"])


@pytest.mark.parametrize("bad", ["shd:10", "mnist:10:5", "shd:0:5", "shd:10:0", "shd:x:5"])
def test_bad_curves_are_one_line_errors(bad):
    with pytest.raises(UserError, match="--curve"):
        learning_curves.parse_curve(bad)


def test_a_run_resumes_with_the_test_curve_switched_on(shd_dir, tmp_path):
    """--test-curve adds rows only: a run started without it resumes with it (the sweeps'
    points are resumed by the learning-curve command and the other way round)."""
    from elmnet import train

    out = tmp_path / "run"
    base = ["--task", "shd", "--data", str(shd_dir), "--out", str(out), "--N", "4", "--d-m",
            "2", "--k-c", "60", "--bin-ms", "100", "--steps", "4", "--eval-every", "2",
            "--no-progress"]  # fmt: skip
    assert train.main([*base, "--stop-after", "2"]) == 0
    assert train.main([*base, "--test-curve"]) == 0
    rows = train.read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows if r["split"] == "test_curve"] == [4]
    assert (out / "result.json").is_file()
