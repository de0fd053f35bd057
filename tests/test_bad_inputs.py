"""Bad input everywhere: one clear line, exit status 2, no traceback, nothing left behind.

Each case runs a command's `main` in this process the way `run_cli` does (or calls the
API) and checks the exit status, that the message is one line (after argparse's usage
where argparse refuses), that nothing prints a traceback, and that the folder the case
works in is exactly as before. Files that could carry code (checkpoints, model files,
released models) are tried with a hostile pickle whose loading would create a marker
file. A few cases run the real entry points in subprocesses.

Categories: output paths, numbers, devices, data files, cluster addresses, debris of
refusals, full disks, hostile files.
"""

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from task_files import write_enwik8_zip, write_shd, write_shd_pair
from toy_cell import make_toy_store

from elmbridge import files, parallel, runs
from elmbridge.cli import run_cli
from elmbridge.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_GPU = not torch.cuda.is_available()
ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------------------
# Helpers


class Hostile:
    """An object whose unpickling creates `marker`: proof that a loader ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_pt(path: Path, marker: Path) -> Path:
    """A .pt file (torch's zip format) whose unpickling would create `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "x", "payload": Hostile(marker)}, path)
    return path


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refuse(main, argv, capsys, root: Path, match: str | None = None) -> str:
    """Run `main(argv)` as `run_cli` does; assert a clean refusal and return its line."""
    before = snapshot(root)
    with pytest.raises(SystemExit) as exc:
        run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    assert exc.value.code == 2, out
    assert "Traceback" not in out.err + out.out
    lines = out.err.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: usage, then "prog: error: …"
        assert ": error: " in lines[-1] and sum("error:" in line for line in lines) == 1
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    if match is not None:
        assert re.search(match, lines[-1]), lines[-1]
    assert snapshot(root) == before, "a refused command left files behind"
    return lines[-1]


def refuse_api(call, root: Path, match: str | None = None) -> str:
    """`call()` raises a one-line UserError and leaves `root` as it was."""
    before = snapshot(root)
    with pytest.raises(UserError) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message
    if match is not None:
        assert re.search(match, message), message
    assert snapshot(root) == before
    return message


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty folder to work in (default outputs such as runs/ land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=40, n_test=20)


@pytest.fixture(scope="module")
def enwik8_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("enwik8") / "enwik8.zip"
    write_enwik8_zip(path, n_bytes=1 << 16)
    return path


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "toy.zarr"
    make_toy_store(path, n_sims=8, n_time=1200)
    return path


# ---------------------------------------------------------------------------------------
# elmnet.train: numbers, devices, output paths, data, resume


def train_main(argv):
    from elmnet import train

    return train.main(argv)


SHD = ("--task shd-adding --N 8 --d-m 3 --k-c 60 --bin-ms 100 --dropout-in 0 --dropout-rec 0 "
       "--no-progress --batch 2").split()  # fmt: skip

BAD_TRAIN_OPTIONS = [
    (["--clip", "-1"], "--clip"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--steps", str(10**12)], "--steps"),
    (["--batch", "0"], "--batch"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--min-lr", "-1"], "--min-lr"),
    (["--min-lr", "1", "--lr", "0.1"], "--min-lr"),
    (["--dropout-in", "1"], "--dropout-in"),
    (["--dropout-in", "1.5"], "--dropout-in"),
    (["--dropout-rec", "-0.1"], "--dropout-rec"),
    (["--rho", "1.5"], "--rho"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--bin-ms", "0"], "--bin-ms"),
    (["--bin-ms", "-2"], "--bin-ms"),
    (["--eval-every", "0"], "--eval-every"),
    (["--log-every", "0"], "--log-every"),
    (["--warmup", "-1"], "--warmup"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--act-reg", "-1"], "--act-reg"),
    (["--epochs", "0"], "--epochs"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["--stop-after", "0"], "--stop-after"),
    (["--threads", "0"], "--threads"),
    (["--N", "0"], "--N"),
    (["--d-m", "0"], "--d-m"),
    (["--k-c", "-60"], "--k-c"),
    (["--val-pairs", "0"], "--val-pairs"),
    (["--eval-batch", "0"], "--eval-batch"),
    (["--bptt", "0"], "--bptt"),
    (["--test-bytes", "1"], "--test-bytes"),
    (["--budget", "1000", "--N", "8"], "--budget"),
    (["--resume", "--restart"], "--resume"),
    (["--steps", "many"], "invalid int"),
    (["--optimizer", "sgd"], "invalid choice"),
]


@pytest.mark.parametrize(("extra", "match"), BAD_TRAIN_OPTIONS, ids=lambda v: str(v))
def test_train_rejects_numbers_that_make_no_sense(extra, match, work, capsys):
    refuse(train_main, [*SHD, "--out", work / "run", *extra], capsys, work, match)


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("tpu", "device"),
        ("cuda:x", "device"),
        pytest.param(
            "cuda", "no CUDA GPU", marks=pytest.mark.skipif(not NO_GPU, reason="has a GPU")
        ),
    ],
)
def test_train_rejects_devices_in_one_line(device, match, work, capsys):
    refuse(train_main, [*SHD, "--out", work / "run", "--device", device], capsys, work, match)


def test_train_refuses_output_paths_before_reading_data(work, capsys):
    (work / "taken").write_text("mine")
    refuse(train_main, [*SHD, "--out", work / "taken"], capsys, work, "is a file")
    refuse(train_main, [*SHD, "--out", work / "taken" / "run"], capsys, work, "is a file")


@pytest.mark.skipif(ROOT, reason="root writes anywhere")
def test_train_refuses_a_read_only_parent(work, capsys):
    (work / "locked").mkdir(mode=0o500)
    refuse(train_main, [*SHD, "--out", work / "locked" / "run"], capsys, work, "read-only")


def _damaged_zips(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir()
    data = good.read_bytes()
    (folder / "html.zip").write_text("<html>404 Not Found</html>" * 100)
    (folder / "truncated.zip").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(folder / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "x" * 5000)
    corrupt = bytearray(data)
    corrupt[200:400] = bytes(200)  # inside the compressed text: CRC or inflate fails
    (folder / "corrupt.zip").write_bytes(bytes(corrupt))
    (folder / "tiny").write_bytes(b"abc")
    return {p.name: p for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("name", "match"),
    [("html.zip", "not a readable zip"), ("truncated.zip", "not a readable zip|damaged"),
     ("other.zip", "does not hold"), ("corrupt.zip", "damaged"), ("tiny", "only 3 bytes")],
)  # fmt: skip
def test_train_refuses_damaged_enwik8_files(name, match, enwik8_zip, tmp_path, capsys):
    paths = _damaged_zips(tmp_path / "data", enwik8_zip)
    argv = ["--task", "enwik8", "--N", "8", "--d-m", "3", "--k-c", "100", "--data", paths[name],
            "--out", tmp_path / "run", "--no-progress"]  # fmt: skip
    refuse(train_main, argv, capsys, tmp_path, match)


def _bad_shd(folder: Path, shd_dir: Path, kind: str) -> Path:
    folder.mkdir()
    shutil.copy(shd_dir / "shd_test.h5", folder / "shd_test.h5")
    train_file = folder / "shd_train.h5"
    if kind == "not hdf5":
        train_file.write_text("not an HDF5 file")
        return folder
    if kind == "missing":
        return folder
    write_shd(train_file, np.arange(40) % 20, seed=0)
    with h5py.File(train_file, "r+") as f:
        times = list(f["spikes/times"][:])
        times[3] = times[3].copy()
        times[3][0] = {"nan": np.nan, "inf": np.inf, "negative": -0.5}[kind]
        del f["spikes/times"]
        f.create_dataset("spikes/times", data=np.array(times, dtype=object),
                         dtype=h5py.vlen_dtype(np.float16))  # fmt: skip
    return folder


@pytest.mark.parametrize(
    ("kind", "match"),
    [("nan", "not finite"), ("inf", "not finite"), ("negative", "negative spike times"),
     ("not hdf5", "cannot read"), ("missing", "SHD files missing")],
)  # fmt: skip
def test_train_refuses_bad_shd_files(kind, match, shd_dir, tmp_path, capsys):
    data = _bad_shd(tmp_path / "data", shd_dir, kind)
    refuse(train_main, [*SHD, "--data", data, "--out", tmp_path / "run"], capsys, tmp_path, match)


@pytest.fixture(scope="module")
def stopped_run(shd_dir, tmp_path_factory):
    """A run folder of `SHD` stopped after one of two steps, and its command."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    argv = [*SHD, "--data", str(shd_dir), "--out", str(out), "--steps", "2"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train_main([*argv, "--stop-after", "1"])
    torch.set_num_threads(before)
    return out, argv


def _copy_run(stopped_run, tmp_path):
    out, argv = stopped_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return copy, [*argv[: argv.index("--out")], "--out", str(copy), "--steps", "2"]


def test_train_resume_never_runs_a_hostile_checkpoint(stopped_run, tmp_path, capsys):
    folder, argv = _copy_run(stopped_run, tmp_path)
    marker = tmp_path / "pwned"
    hostile_pt(folder / runs.CHECKPOINT_FILE, marker)
    refuse(train_main, argv, capsys, tmp_path, "pickled objects")
    assert not marker.exists()


def test_train_resume_refuses_a_truncated_checkpoint(stopped_run, tmp_path, capsys):
    folder, argv = _copy_run(stopped_run, tmp_path)
    data = (folder / runs.CHECKPOINT_FILE).read_bytes()
    (folder / runs.CHECKPOINT_FILE).write_bytes(data[: len(data) // 3])
    refuse(train_main, argv, capsys, tmp_path, "truncated")


def test_train_resume_refuses_a_checkpoint_of_another_model(stopped_run, tmp_path, capsys):
    folder, argv = _copy_run(stopped_run, tmp_path)
    saved = runs.load_torch(folder / runs.CHECKPOINT_FILE)
    saved["model"] = {"readout.weight": torch.zeros(3, 3)}
    runs.save_torch(saved, folder / runs.CHECKPOINT_FILE)
    refuse(train_main, argv, capsys, tmp_path, "does not fit this run.*--restart")


def test_train_start_that_never_checkpointed_does_not_block_the_next(shd_dir, tmp_path):
    """A run.json alone (a killed or refused start) must not refuse the corrected command."""
    out = tmp_path / "run"
    runs.RunFolder(out).start("elmnet-train", {"task": "shd-adding", "lr": 123.0}, seed=0)
    train_main([*SHD, "--data", str(shd_dir), "--out", str(out), "--steps", "1"])
    assert runs.run_status(out).finished


# ---------------------------------------------------------------------------------------
# elmnet.demo


def demo_main(argv):
    from elmnet import demo

    return demo.main(argv)


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--duration-ms", "0"], "--duration-ms"), (["--duration-ms", "-5"], "--duration-ms"),
     (["--duration-ms", str(10**12)], "--duration-ms"), (["--seed", "-1"], "--seed"),
     (["--duration-ms", "1e12"], "invalid int")],
)  # fmt: skip
def test_demo_rejects_numbers(extra, match, work, capsys):
    refuse(demo_main, ["--out", work / "demo.png", *extra], capsys, work, match)


def test_demo_out_is_the_image_file(work, capsys):
    (work / "folder").mkdir()
    (work / "file").write_text("")
    refuse(demo_main, ["--out", work / "folder"], capsys, work, "is a folder")
    refuse(demo_main, ["--out", work / "picture"], capsys, work, "must end in .png")
    refuse(demo_main, ["--out", work / "file" / "x.png"], capsys, work, "under the file")


def test_demo_says_where_it_saved(work, capsys, monkeypatch):
    from elmnet import demo

    monkeypatch.setattr(demo, "load_released", _no_released)
    demo.main(["--out", str(work / "figs" / "demo.png"), "--duration-ms", "100"])
    out = capsys.readouterr().out
    assert (work / "figs" / "demo.png").is_file()
    assert f"plot saved to {work / 'figs' / 'demo.png'}" in out


def _no_released(source):
    from elmbridge.errors import MissingDataError

    raise MissingDataError("offline")


# ---------------------------------------------------------------------------------------
# surrogate.fit and surrogate.ablate


def fit_main(argv):
    from surrogate import fit

    return fit.main(argv)


def fit_args(store, out):
    return ["--data", store, "--cell", "toy", "--out", out, "--d-m", "6", "--d-tree", "4",
            "--d-brch", "4", "--val-fraction", "0.25", "--test-fraction", "0.25",
            "--max-spikes", "100", "--batch-size", "4", "--epochs", "1",
            "--batches-per-epoch", "1"]  # fmt: skip


BAD_FIT_OPTIONS = [
    (["--val-fraction", "1"], "val_fraction"),
    (["--val-fraction", "-0.1"], "val_fraction"),
    (["--val-fraction", "nan"], "val_fraction"),
    (["--test-fraction", "0"], "test_fraction"),
    (["--test-fraction", "1.5"], "test_fraction"),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"], "leave simulations"),
    (["--epochs", "0"], "epochs"),
    (["--batches-per-epoch", "-1"], "batches_per_epoch"),
    (["--batch-size", "0"], "batch_size"),
    (["--batch-size", str(10**9)], "typo"),
    (["--lr", "0"], "learning rate"),
    (["--lr", "nan"], "learning rate"),
    (["--n-sims", "0"], "n_sims"),
    (["--duration-ms", str(10**12)], "duration_ms"),
    (["--d-m", "0"], "d_m"),
    (["--d-tree", "0"], "d_tree"),
    (["--window-ms", "0"], "window_ms|burn-in"),
    (["--burn-in-ms", "-1"], "burn-in"),
    (["--min-spikes", "5", "--max-spikes", "1"], "min_spikes"),
    (["--seed", "-1"], "seed"),
    (["--workers", "-1"], "--workers"),
    (["--device", "tpu"], "device"),
    (["--preset", "huge"], "invalid choice"),
    (["--epochs", "1.5"], "invalid int"),
]


@pytest.mark.parametrize(("extra", "match"), BAD_FIT_OPTIONS, ids=lambda v: str(v))
def test_fit_rejects_numbers_before_any_work(extra, match, toy_store, work, capsys):
    refuse(fit_main, [*fit_args(toy_store, work / "fit"), *extra], capsys, work, match)


def test_fit_refuses_output_paths(toy_store, work, capsys):
    (work / "taken").write_text("")
    refuse(fit_main, fit_args(toy_store, work / "taken"), capsys, work, "is a file")
    refuse(fit_main, fit_args(toy_store, work / "taken" / "x"), capsys, work, "is a file")


@pytest.mark.skipif(NO_GPU is False, reason="has a GPU")
def test_fit_refuses_cuda_without_a_gpu(toy_store, work, capsys):
    argv = [*fit_args(toy_store, work / "fit"), "--device", "cuda"]
    refuse(fit_main, argv, capsys, work, "no CUDA GPU")


def _tiny_config(store):
    from surrogate.fit import preset_config

    return preset_config(
        cell="toy", data=str(store), d_m=6, d_tree=4, d_brch=4, val_fraction=0.25,
        test_fraction=0.25, max_spikes=100, batch_size=4, epochs=1, batches_per_epoch=1,
    )  # fmt: skip


def _opened_fit(store, folder):
    """A fit folder with its run record (as after a start), no epoch trained."""
    from surrogate.fit import open_run

    open_run(_tiny_config(store), runs.RunFolder(folder), resume=False)
    return folder


def test_fit_resume_never_runs_a_hostile_checkpoint(toy_store, tmp_path):
    from surrogate.fit import fit

    folder = _opened_fit(toy_store, tmp_path / "fit")
    marker = tmp_path / "pwned"
    hostile_pt(folder / runs.CHECKPOINT_FILE, marker)
    refuse_api(lambda: fit(_tiny_config(toy_store), folder, resume=True, progress=False),
               tmp_path, "pickled objects")  # fmt: skip
    assert not marker.exists()


def test_fit_resume_refuses_a_checkpoint_of_another_model(toy_store, tmp_path):
    from surrogate.fit import fit

    folder = _opened_fit(toy_store, tmp_path / "fit")
    runs.save_torch({"model": {}, "optimizer": {}, "scaler": {}, "state": {}},
                    folder / runs.CHECKPOINT_FILE)  # fmt: skip
    refuse_api(lambda: fit(_tiny_config(toy_store), folder, resume=True, progress=False),
               tmp_path, "does not fit")  # fmt: skip


def test_fit_start_that_never_finished_an_epoch_does_not_block_the_next(toy_store, tmp_path):
    from surrogate.fit import fit

    folder = tmp_path / "fit"
    runs.RunFolder(folder).start("surrogate-fit", {"lr": 1.0}, seed=0)  # a refused start
    fit(_tiny_config(toy_store), folder, progress=False)
    assert runs.run_status(folder).finished


def ablate_main(argv):
    from surrogate import ablate

    return ablate.main(argv)


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--d-m", "0"], "--d-m"), (["--d-m", "5", "5"], "--d-m"),
     (["--d-m", "5", "--val-fraction", "2"], "val_fraction"),
     (["--d-m", "5", "--runs-dir", "FILE"], "is a file"),
     (["--d-m", "5", "--device", "gpu"], "device")],
)  # fmt: skip
def test_ablate_refuses_before_the_first_fit(extra, match, toy_store, work, capsys):
    (work / "FILE").write_text("")
    extra = [str(work / "FILE") if e == "FILE" else e for e in extra]
    argv = ["--data", toy_store, "--cell", "toy", "--epochs", "1", *extra]
    refuse(ablate_main, argv, capsys, work, match)


# ---------------------------------------------------------------------------------------
# Model files and surrogate.evaluate


def evaluate_main(argv):
    from surrogate import evaluate

    return evaluate.main(argv)


@pytest.fixture(scope="module")
def model_files(toy_store, tmp_path_factory):
    """A good model file, and bad ones: hostile, truncated, foreign, weights that do not fit."""
    from elmnet.neuron import ELMNeuron
    from surrogate.data import inspect_store
    from surrogate.model_file import MODEL_FORMAT, save_model

    folder = tmp_path_factory.mktemp("models")
    config = _tiny_config(toy_store).elm_config(inspect_store(toy_store).n_inputs)
    save_model(ELMNeuron(config), folder / "good.pt", epoch=1)
    hostile_pt(folder / "hostile.pt", folder / "pwned")
    data = (folder / "good.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    runs.save_torch({"weights": torch.zeros(2)}, folder / "foreign.pt")
    other = ELMNeuron(config.__class__(**{**config.to_dict(), "d_m": 7}))
    runs.save_torch(
        {"format": MODEL_FORMAT, "elm_config": config.to_dict(),
         "state_dict": other.state_dict()}, folder / "misfit.pt",
    )  # fmt: skip
    (folder / "empty.pt").write_bytes(b"")
    (folder / "text.pt").write_text("just text")
    return folder


@pytest.mark.parametrize(
    ("name", "match"),
    [("hostile.pt", "pickled objects"), ("truncated.pt", "truncated"),
     ("foreign.pt", "not a surrogate model file"), ("misfit.pt", "do not fit"),
     ("empty.pt", "not a readable"), ("text.pt", "not a readable")],
)  # fmt: skip
def test_bad_model_files_are_one_line(name, match, model_files, toy_store, work, capsys):
    from surrogate.model_file import load_model_file

    refuse_api(lambda: load_model_file(model_files / name), work, match)
    argv = ["--model", model_files / name, "--data", toy_store, "--out", work / "report"]
    refuse(evaluate_main, argv, capsys, work, match)
    assert not (model_files / "pwned").exists()


def test_a_run_folder_with_a_hostile_best_model(model_files, toy_store, tmp_path, capsys):
    folder = _opened_fit(toy_store, tmp_path / "fit")
    marker = tmp_path / "pwned"
    hostile_pt(folder / runs.BEST_FILE, marker)
    argv = ["--model", folder, "--out", tmp_path / "report"]
    refuse(evaluate_main, argv, capsys, tmp_path, "pickled objects")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--out", "FILE"], "is a file"), (["--out", "FILE/sub"], "under the file"),
     (["--device", "tpu"], "device"), (["--window-ms", "0"], "burn-in"),
     (["--burn-in-ms", "600"], "burn-in"), (["--min-spikes", "-1"], "min_spikes"),
     (["--split", "test"], "--split test"), (["--data", "nowhere.zarr"], "nowhere.zarr"),
     (["--split", "most"], "invalid choice")],
)  # fmt: skip
def test_evaluate_refuses_bad_options(extra, match, model_files, toy_store, work, capsys):
    (work / "FILE").write_text("")
    extra = [e.replace("FILE", str(work / "FILE")) for e in extra]
    argv = ["--model", model_files / "good.pt", "--data", toy_store, *extra]
    if "--out" not in extra:
        argv += ["--out", work / "report"]
    refuse(evaluate_main, argv, capsys, work, match)


def test_evaluate_needs_data_for_a_model_file(model_files, work, capsys):
    refuse(evaluate_main, ["--model", model_files / "good.pt"], capsys, work, "--data")


# ---------------------------------------------------------------------------------------
# Released models (elmnet/released.py is another developer's file for now)


def _released_folder(folder: Path, marker: Path, config_text: str = '{"num_memory": 20}'):
    folder.mkdir(parents=True)
    (folder / "model_config.json").write_text(config_text)
    hostile_pt(folder / "neuronio_best_model_state.pt", marker)
    return folder


def test_a_hostile_released_model_never_runs(tmp_path):
    from elmnet.released import load_released

    marker = tmp_path / "pwned"
    folder = _released_folder(tmp_path / "my_model", marker)
    with pytest.raises(Exception):  # noqa: B017 - what matters here is the marker
        load_released(folder)
    assert not marker.exists()


def test_a_hostile_released_model_is_one_line(tmp_path):
    from elmnet.released import load_released

    folder = _released_folder(tmp_path / "my_model", tmp_path / "pwned")
    refuse_api(lambda: load_released(folder), tmp_path, "pickled objects")


def test_an_invalid_released_config_is_one_line(tmp_path):
    from elmnet.released import load_released

    folder = _released_folder(tmp_path / "my_model", tmp_path / "pwned", "{not json")
    refuse_api(lambda: load_released(folder), tmp_path, "model_config.json")


# ---------------------------------------------------------------------------------------
# biophys.simulate and cluster addresses


def simulate_main(argv):
    from biophys import simulate

    return simulate.main(argv)


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--scheduler", "host"], "missing port"),
     (["--scheduler", "tcp://host:notaport"], "not a scheduler address"),
     (["--scheduler", "foo://host:8786"], "unknown scheme"),
     (["--scheduler", "tcp://host:99999"], "port 99999"),
     (["--scheduler", "::::"], "not a scheduler address"),
     (["--duration-ms", "1e12"], "longer than"), (["--duration-ms", "0"], "positive whole"),
     (["--duration-ms", "2.5"], "whole"), (["--dt-ms", "0"], "dt must be"),
     (["--dt-ms", "-0.025"], "dt must be"), (["--release-probability", "2"], "release"),
     (["--n-sims", "0"], "number of simulations"), (["--workers", "0"], "workers"),
     (["--n-sims", "100000000"], "more than one store should hold"),
     (["--inputs", "EMPTY"], "empty file"), (["--inputs", "TEXT"], "cannot read"),
     (["--inputs", "OBJECTS"], "cannot read"), (["--inputs", "nowhere.npy"], "does not exist"),
     (["--out", "FILE"], "is a file"), (["--out", "FILE/x.zarr"], "under the file")],
)  # fmt: skip
def test_simulate_refuses_before_any_simulation(extra, match, work, capsys):
    (work / "EMPTY.npy").write_bytes(b"")
    (work / "TEXT.npy").write_text("0 1 0 1")
    marker = work / "pwned"
    np.save(work / "OBJECTS.npy", np.array([Hostile(marker)], dtype=object), allow_pickle=True)
    (work / "FILE").write_text("")
    names = {"EMPTY": "EMPTY.npy", "TEXT": "TEXT.npy", "OBJECTS": "OBJECTS.npy"}
    extra = [str(work / names[e]) if e in names else e.replace("FILE", str(work / "FILE"))
             for e in extra]  # fmt: skip
    argv = ["--out", work / "s.zarr", "--n-sims", "1", "--duration-ms", "100", *extra]
    if "--out" in extra:
        argv = argv[2:]
    refuse(simulate_main, argv, capsys, work, match)
    assert not marker.exists()


def validate_main(argv):
    from biophys import validate

    return validate.main(argv)


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--dt-ms", "0"], "--dt-ms must be a positive"), (["--dt-ms", "-1"], "positive"),
     (["--dt-ms", "0.03"], "must divide 0.125"), (["--settle-ms", "0"], "--settle-ms must be"),
     (["--step-ms", "0"], "--step-ms must be"), (["--step-ms", "1e9"], "above 60 s"),
     (["--celsius", "100"], "physiological"), (["--far-sd", "0"], "--far-sd"),
     (["--settle-ms", "nan"], "--settle-ms"), (["--out", "FILE"], "is a file")],
)  # fmt: skip
def test_validate_refuses_before_any_simulation(extra, match, work, capsys):
    (work / "FILE").write_text("")
    extra = [e.replace("FILE", str(work / "FILE")) for e in extra]
    argv = ["--out", str(work / "val"), *extra] if "--out" not in extra else extra
    refuse(validate_main, argv, capsys, work, match)


def test_dask_client_refuses_a_malformed_address():
    with pytest.raises(UserError, match="not a scheduler address"):
        with parallel.dask_client("tcp://host:port"):
            pass


# ---------------------------------------------------------------------------------------
# Benchmarks


@pytest.mark.parametrize(
    ("module", "extra", "match"),
    [("elm_neuron_speed", ["--device", "tpu"], "device"),
     ("elm_neuron_speed", ["--batch", "0"], "--batch"),
     ("elm_neuron_speed", ["--steps", "-1"], "--steps"),
     ("elm_neuron_speed", ["--batch", "100000", "--steps", "100000"], "more than"),
     ("elm_network_speed", ["--device", "cuda:x"], "device"),
     ("elm_network_speed", ["--threads", "0"], "--threads"),
     ("elm_network_speed", ["--repeats", "0"], "--repeats"),
     ("released_on_store", ["--data", "STORE", "--device", "tpu"], "device"),
     ("released_on_store", ["--data", "STORE", "--out", "FILE"], "is a file"),
     ("biophys_speed", ["--duration-ms", str(10**9)], "--duration-ms"),
     ("biophys_speed", ["--scaling", "a,b"], "--scaling"),
     ("biophys_speed", ["--scaling", "0"], "--scaling")],
)  # fmt: skip
def test_benchmarks_refuse_in_one_line(module, extra, match, toy_store, work, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    (work / "FILE").write_text("")
    names = {"STORE": str(toy_store), "FILE": str(work / "FILE")}
    refuse(main, [names.get(e, e) for e in extra], capsys, work, match)


@pytest.mark.skipif(not NO_GPU, reason="has a GPU")
@pytest.mark.parametrize("module", ["elm_neuron_speed", "elm_network_speed"])
def test_benchmarks_say_the_same_about_a_missing_gpu(module, work, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    line = refuse(main, ["--device", "cuda"], capsys, work)
    assert line == "error: --device cuda: PyTorch sees no CUDA GPU here; use --device cpu"


# ---------------------------------------------------------------------------------------
# Full disks: every writer says what happened in one line and leaves the old file


def _full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_full_disk_in_json_text_and_csv_writes(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    files.write_json(path, {"a": 1})
    monkeypatch.setattr(Path, "write_text", _full)
    with pytest.raises(UserError, match=r"No space left on device.*intact") as exc:
        files.write_json(path, {"a": 2})
    assert "\n" not in str(exc.value)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(UserError, match="No space left"):
        files.write_csv(tmp_path / "t.csv", [{"a": 1}])
    with pytest.raises(UserError, match="No space left"):
        files.write_text(tmp_path / "t.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_full_disk_while_logging_metrics(tmp_path, monkeypatch):
    log = runs.MetricsLog(tmp_path / "metrics.csv")
    log.log(step=1, loss=0.5)
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(UserError, match=r"metrics\.csv.*No space left"):
        log.log(step=2, loss=0.4, extra=1.0)  # a new column: the file is rewritten


def test_full_disk_while_saving_a_figure(tmp_path, monkeypatch):
    import matplotlib.figure

    from elmnet import demo

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _full)
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(UserError, match=r"demo\.png.*No space left"):
        demo.plot_demo(x, np.zeros(10), np.zeros(10), "t", tmp_path / "demo.png")


# ---------------------------------------------------------------------------------------
# The real entry points: no traceback, exit status 2


@pytest.mark.parametrize(
    ("module", "args", "match"),
    [("elmnet.train", ["--task", "shd-adding", "--clip", "-1"], "--clip"),
     ("biophys.simulate", ["--out", "s.zarr", "--scheduler", "tcp://h:x"], "scheduler"),
     ("benchmarks.elm_neuron_speed", ["--device", "tpu"], "device"),
     ("elmnet.demo", ["--out", "."], "is a folder")],
)  # fmt: skip
def test_entry_points_print_one_line(module, args, match, cli, tmp_path):
    done = cli(module, *args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(match, lines[0])
    assert list(tmp_path.iterdir()) == []
