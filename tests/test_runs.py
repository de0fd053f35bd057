"""The run folder every training loop writes (`elmbridge.runs`) and what loops share."""

import copy
import math
import os
import pickle

import pytest
import torch

from elmbridge import runs
from elmbridge.errors import MissingDataError, UserError
from elmbridge.training import (
    clip_gradients,
    cosine_lr,
    load_optimizer_state,
    new_optimizer,
    resolve_device,
)


def test_a_run_folder_goes_from_new_to_finished(tmp_path):
    folder = runs.RunFolder(tmp_path / "run")
    status = runs.run_status(folder.path)
    assert not status.exists and not status.finished and status.result is None
    folder.start("test-loop", {"lr": 0.1, "steps": 10}, seed=3, data={"store": "x"}, extra=1)
    record = folder.record()
    assert record["kind"] == "test-loop" and record["seed"] == 3 and record["extra"] == 1
    assert record["config"] == {"lr": 0.1, "steps": 10} and "torch" in record["software"]
    folder.save_checkpoint({"step": 4, "w": torch.arange(3.0)})
    status = runs.run_status(folder.path)
    assert status.exists and status.resumable and not status.finished
    assert torch.equal(folder.load_checkpoint()["w"], torch.arange(3.0))
    folder.finish({"test": 0.75})
    status = runs.run_status(folder.path)
    assert status.finished and status.result == {"test": 0.75} and not status.resumable
    assert status.kind == "test-loop" and status.config["steps"] == 10


def test_resume_with_another_config_names_the_differences(tmp_path):
    folder = runs.RunFolder(tmp_path)
    folder.start("t", {"lr": 0.1, "steps": 10, "device": "cpu"}, seed=0)
    folder.check_same_config({"lr": 0.1, "steps": 10, "device": "cuda"}, ignore={"device"})
    with pytest.raises(UserError, match=r"lr: 0\.1 → 0\.2; steps: 10 → None"):
        folder.check_same_config({"lr": 0.2, "device": "cpu"})


def test_start_refuses_foreign_folders_and_files(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a run folder"):
        runs.RunFolder(tmp_path / "busy").start("t", {}, seed=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        runs.RunFolder(tmp_path / "file" / "run").start("t", {}, seed=0)
    assert not (tmp_path / "file" / "run").exists()


def test_earlier_layouts_are_renamed(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"config": {"a": 1}, "seed": 0}')
    (tmp_path / "test.json").write_text('{"test": 0.5}')
    assert runs.run_status(tmp_path).finished  # read as they are, nothing renamed
    assert (tmp_path / "config.json").exists()
    folder = runs.RunFolder(tmp_path)
    assert "renamed config.json → run.json, test.json → result.json" in capsys.readouterr().out
    assert folder.record()["config"] == {"a": 1} and folder.result() == {"test": 0.5}


class _Payload:
    """Unpickling this would create a file: proof that the loader ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_hostile_checkpoint_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    folder = runs.RunFolder(tmp_path / "run")
    folder.start("t", {}, seed=0)
    torch.save({"step": 1, "payload": _Payload(str(marker))}, folder.checkpoint_path())
    with pytest.raises(UserError, match="pickled objects, which are never loaded"):
        folder.load_checkpoint()
    with open(tmp_path / "best.pt", "wb") as fh:
        pickle.dump(_Payload(str(marker)), fh)
    with pytest.raises(UserError):
        runs.load_torch(tmp_path / "best.pt")
    assert not marker.exists()


def test_truncated_and_missing_checkpoints_are_one_line(tmp_path):
    path = tmp_path / "c.pt"
    runs.save_torch({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="not a readable checkpoint") as err:
        runs.load_torch(path)
    assert "\n" not in str(err.value)
    with pytest.raises(MissingDataError):
        runs.load_torch(tmp_path / "absent.pt")


def test_best_tracker_keeps_the_best_and_ignores_nan():
    best = runs.BestTracker(higher_is_better=False)
    assert best.update(math.nan, 1)  # the first is the best so far, even undefined
    assert best.update(2.0, 2)  # a finite value replaces an undefined one
    assert not best.update(math.nan, 3) and not best.update(2.5, 4)
    assert best.update(1.0, 5) and (best.value, best.step) == (1.0, 5)
    again = runs.BestTracker.from_state(best.state_dict())
    assert not again.update(1.0, 6) and again.update(0.5, 7)
    assert runs.BestTracker(True).update(0.1, 0)


def test_metrics_log_drops_rows_past_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.csv"
    log = runs.MetricsLog(path)
    log.log(step=10, split="train", loss=1.5)
    log.log(step=20, split="train", loss=1.0)
    log.log(step=20, split="valid", loss=1.2, value=0.4)  # a new column rewrites the file
    log.log(step=30, split="train", loss=0.8)
    resumed = runs.MetricsLog(path, resume_step=20)
    assert [r["step"] for r in runs.read_metrics(path)] == [10, 20, 20]
    resumed.log(step=30, split="train", loss=0.8)
    rows = runs.read_metrics(path)
    assert rows[-1] == {"step": 30, "split": "train", "loss": 0.8, "value": ""}
    assert rows[2]["value"] == 0.4


def test_full_disk_during_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.save_torch({"step": 1}, path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match=r"No space left on device.*is intact"):
        runs.save_torch({"step": 2}, path)
    monkeypatch.undo()
    assert runs.load_torch(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_cosine_schedule_against_its_closed_form():
    total, lr, warmup = 1000, 2e-3, 100
    assert cosine_lr(0, total, lr, warmup) == pytest.approx(lr / warmup)
    assert cosine_lr(warmup - 1, total, lr, warmup) == pytest.approx(lr)
    for step in (100, 325, 550, 999, 1000, 1500):
        progress = min(1.0, (step - warmup) / (total - warmup))
        expected = 1e-5 + 0.5 * (lr - 1e-5) * (1 + math.cos(math.pi * progress))
        assert cosine_lr(step, total, lr, warmup, min_lr=1e-5) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_bad_devices_are_one_line(name):
    with pytest.raises(UserError, match="device"):
        resolve_device(name)


def test_cuda_without_a_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device(None).type == "cpu" and resolve_device("cpu").type == "cpu"


def test_read_only_parent_is_refused_before_any_work(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match="read-only"):
        runs.RunFolder(locked / "run").check_writable()


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_a_resumed_optimiser_keeps_its_fused_kernel(name):
    """torch's load_state_dict takes `fused` from the saved groups: a checkpoint of an
    older, unfused run would switch the kernel (and the rounding) on resume."""

    def steps(params, optimizer, first, count):
        for i in range(first, first + count):
            params[0].grad = torch.sin(torch.arange(5.0) * (i + 1))
            optimizer.step()

    params = [torch.nn.Parameter(torch.linspace(-1, 1, 5))]
    optimizer = new_optimizer(name, params, lr=0.1, weight_decay=0.01)
    assert optimizer.param_groups[0]["fused"] is True
    steps(params, optimizer, 0, 3)
    saved, at_save = copy.deepcopy(optimizer.state_dict()), params[0].detach().clone()
    saved["param_groups"][0]["fused"] = None  # as an unfused run saved it
    steps(params, optimizer, 3, 2)

    resumed = [torch.nn.Parameter(at_save.clone())]
    again = new_optimizer(name, resumed, lr=0.1, weight_decay=0.01)
    load_optimizer_state(again, saved)
    assert again.param_groups[0]["fused"] is True
    steps(resumed, again, 3, 2)
    assert torch.equal(resumed[0], params[0])
    adamax = new_optimizer("adamax", resumed, lr=0.1).param_groups[0]
    assert adamax.get("fused") is None and adamax["foreach"] is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adamax_on_the_multi_tensor_kernel_is_the_loop_to_the_bit(dtype):
    """`new_optimizer("adamax")` takes torch's multi-tensor kernel: after several steps,
    the same parameters as torch's one-tensor-at-a-time Adamax, bit for bit (a resumed
    run may switch between them)."""

    def run(make):
        params = [torch.nn.Parameter(torch.linspace(-1, 1, n, dtype=dtype)) for n in (5, 300)]
        optimizer = make(params)
        for i in range(6):
            for p in params:
                p.grad = torch.sin(torch.arange(p.numel(), dtype=dtype) * (i + 1))
            optimizer.step()
        return params

    ours = run(lambda ps: new_optimizer("adamax", ps, lr=0.05, weight_decay=0.01))
    theirs = run(lambda ps: torch.optim.Adamax(ps, lr=0.05, weight_decay=0.01, foreach=False))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_gradients_is_clip_grad_norm_to_the_bit(dtype):
    """The multi-tensor clipping against torch's one-tensor-at-a-time loop: the same
    total norm and clipped gradients, bit for bit; parameters without a gradient skipped."""
    g = torch.Generator().manual_seed(5)
    shapes = [(1000,), (7, 3), (50, 40, 3), (3,)]
    grads = [10 * torch.randn(s, generator=g, dtype=dtype) for s in shapes]

    def params():
        ps = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in shapes]
        for p, grad in zip(ps[:-1], grads, strict=False):  # the last has no gradient
            p.grad = grad.clone()
        return ps

    ours, theirs = params(), params()
    norm = clip_gradients(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=False)
    assert torch.equal(norm, expected) and norm > 1.0
    for a, b in zip(ours[:-1], theirs[:-1], strict=True):
        assert torch.equal(a.grad, b.grad)
    assert ours[-1].grad is None
