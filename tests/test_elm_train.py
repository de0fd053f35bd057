"""Tiny end-to-end training runs of both tasks on small files written by the tests."""

import json
import math

import pytest
import torch
from task_files import write_enwik8_zip, write_shd_pair

from elmbridge.errors import MissingDataError, UserError
from elmnet import train
from elmnet.config import ELMNetworkConfig
from elmnet.params import network_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=80, n_test=30)


@pytest.fixture(scope="module")
def enwik8_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("enwik8") / "enwik8.zip"
    write_enwik8_zip(path)
    return path


SHD_ARGS = (
    "--task shd-adding --N 16 --d-m 3 --k-c 60 --bin-ms 50 --dropout-in 0 --dropout-rec 0 "
    "--no-progress"
).split()
ENWIK8_ARGS = (
    "--task enwik8 --N 16 --d-m 4 --k-c 100 --bptt 50 --lr 5e-3 --val-bytes 5000 "
    "--test-bytes 3000 --no-progress"
).split()


def losses(out, split="train"):
    return [r["loss"] for r in train.read_metrics(out / "metrics.csv") if r["split"] == split]


def test_shd_adding_learns_and_records_the_run(shd_dir, tmp_path):
    out = tmp_path / "run"
    args = [*SHD_ARGS, "--data", shd_dir, "--out", out, "--steps", "300", "--eval-every", "150",
            "--log-every", "25"]  # fmt: skip
    assert train.main(list(map(str, args))) == 0
    curve = losses(out)
    assert len(curve) == 12
    # From chance (ln 19 = 2.94) towards and below the digit-sum prior (2.66 nats).
    assert curve[0] > 2.85 and sum(curve[-4:]) / 4 < curve[0] - 0.15
    assert losses(out, "valid")[-1] < math.log(19) - 0.2
    record = json.loads((out / "run.json").read_text())
    assert record["seed"] == 0 and "torch" in record["software"]
    assert set(record["data"]["files"]) == {"train", "test"}
    assert len(record["data"]["files"]["test"]["sha256"]) == 64
    assert record["parameters"]["N"] == 16 and record["parameters"]["k_c"] == 60
    test = json.loads((out / "result.json").read_text())
    assert test["metric"] == "accuracy" and 0 <= test["test"] <= 1 and test["n"] == 30
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "best.pt", "metrics.csv"}


def test_enwik8_learns_and_tests_with_carried_state(enwik8_zip, tmp_path):
    out = tmp_path / "run"
    args = [*ENWIK8_ARGS, "--data", enwik8_zip, "--out", out, "--steps", "150",
            "--eval-every", "75", "--log-every", "25"]  # fmt: skip
    assert train.main(list(map(str, args))) == 0
    curve = losses(out)
    V = json.loads((out / "run.json").read_text())["data"]["vocabulary_size"]
    assert curve[0] > 0.8 * math.log(V) and curve[-1] < 0.6 * curve[0]
    valid = [r["value"] for r in train.read_metrics(out / "metrics.csv") if r["split"] == "valid"]
    assert valid[-1] < math.log2(V) - 2.0
    test = json.loads((out / "result.json").read_text())
    assert test["metric"] == "bpc" and test["test"] < math.log2(V) - 2.0
    assert test["n"] == 3000 - 1  # batch 1: every byte of the prefix but the first


def test_resume_continues_exactly(enwik8_zip, tmp_path):
    """Stopping after 30 steps and running the same command again gives the very run that
    went straight through: weights, carried state, dropout stream and metrics."""
    common = [*ENWIK8_ARGS, "--data", enwik8_zip, "--steps", "50", "--eval-every", "20",
              "--log-every", "10", "--dropout-rec", "0.2", "--test-bytes", "500"]  # fmt: skip
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert train.main(list(map(str, [*common, "--out", straight]))) == 0
    assert train.main(list(map(str, [*common, "--out", stopped, "--stop-after", "30"]))) == 0
    assert not (stopped / "result.json").exists()
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["step"] == 30
    assert train.main(list(map(str, [*common, "--out", stopped, "--resume"]))) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 50
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    for x, y in zip(a["carried"], b["carried"], strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)

    def rows(out):
        return [{k: v for k, v in r.items() if k != "elapsed_s"}
                for r in train.read_metrics(out / "metrics.csv")]  # fmt: skip

    assert rows(straight) == rows(stopped)
    assert json.loads((straight / "result.json").read_text()) == json.loads(
        (stopped / "result.json").read_text()
    )


def test_budget_sets_n(shd_dir, tmp_path):
    out = tmp_path / "run"
    args = [*SHD_ARGS[:2], "--data", shd_dir, "--out", out, "--budget", "40000", "--d-m", "5",
            "--k-c", "60", "--bin-ms", "100", "--steps", "2", "--no-progress"]  # fmt: skip
    assert train.main(list(map(str, args))) == 0
    parameters = json.loads((out / "run.json").read_text())["parameters"]
    config = ELMNetworkConfig.for_task("shd-adding", d_m=5, k_c=60, N=1)
    per_neuron = config.k_e + config.k_c
    readout = network_parameters(config).readout
    assert parameters["N"] == (40000 - readout) // per_neuron
    assert parameters["P"] <= 40000 < parameters["P"] + per_neuron


def test_clear_errors(shd_dir, tmp_path, cli):
    def run(*extra):
        return train.main(list(map(str, [*SHD_ARGS, "--out", tmp_path / "r", *extra])))

    with pytest.raises(MissingDataError, match="SHD files missing"):
        run("--data", tmp_path / "nowhere")
    with pytest.raises(UserError, match="either --N or --budget"):
        run("--data", shd_dir, "--budget", "50000")
    with pytest.raises(UserError, match="multiple of the 30 branches"):
        run("--data", shd_dir, "--k-c", "45")
    with pytest.raises(UserError, match="no checkpoint"):
        run("--data", shd_dir, "--resume")
    run("--data", shd_dir, "--steps", "2", "--test-pairs", "4")
    with pytest.raises(UserError, match="another configuration"):
        run("--data", shd_dir, "--steps", "3", "--test-pairs", "4")
    # The command line prints one line and exits with 2, no traceback.
    result = cli("elmnet.train", "--task", "shd-adding", "--data", tmp_path / "no", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: SHD files missing") and "Traceback" not in result.stderr
