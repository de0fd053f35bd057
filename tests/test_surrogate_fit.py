"""Fitting surrogates: a tiny end-to-end fit, resume, run records, errors, ablation."""

import csv
import json

import pytest
import torch
import zarr
from toy_cell import make_toy_store

from elmbridge import runs
from elmbridge.errors import MissingDataError, UserError
from surrogate import ablate, stores
from surrogate import fit as fit_module
from surrogate.data import inspect_store
from surrogate.evaluate import load_model, run_simulations
from surrogate.fit import fit, preset_config

TINY = dict(cell="toy", d_m=6, d_tree=4, d_brch=4, val_fraction=0.25, test_fraction=0.25,
            max_spikes=100, batch_size=4)  # fmt: skip


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "toy.zarr"
    make_toy_store(path, n_sims=8, n_time=1200)
    return path


def rows(run_dir):
    with open(run_dir / runs.METRICS_FILE) as fh:
        return list(csv.DictReader(fh))


def test_tiny_fit_improves_and_records_the_run(toy_store, tmp_path):
    config = preset_config(data=str(toy_store), epochs=3, batches_per_epoch=12, lr=5e-3, **TINY)
    run_dir = tmp_path / "run"
    result = fit(config, run_dir, progress=False)
    history = rows(run_dir)
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    losses = [float(r["train_loss"]) for r in history]
    assert losses[-1] < 0.8 * losses[0]
    assert float(history[-1]["val_loss"]) < float(history[0]["val_loss"])
    record = runs.RunFolder(run_dir).record()
    assert record["config"]["lr"] == 5e-3 and record["seed"] == 0
    assert record["data"]["attrs_hash"] and record["data"]["store"] == str(toy_store.resolve())
    assert "torch" in record["software"]
    assert sorted(s for split in record["splits"].values() for s in split) == list(range(8))
    assert result["test_metrics"]["n_simulations"] == len(record["splits"]["test"]) == 2
    assert 0 <= result["test_metrics"]["AUC"] <= 1
    assert (run_dir / runs.REPORT_DIR / "report.png").is_file()
    assert runs.run_status(run_dir).result == json.loads(json.dumps(result))
    # The best model is the one of the lowest validation RMSE.
    rmse = [float(r["val_soma_RMSE"]) for r in history]
    assert result["best_epoch"] == 1 + rmse.index(min(rmse))
    # The fit is a run directory that evaluate loads, and refuses to be overwritten.
    with pytest.raises(UserError, match="--resume"):
        fit(config, run_dir, progress=False)
    with pytest.raises(UserError, match=r"epochs: 3 → 4"):
        fit(preset_config(data=str(toy_store), epochs=4, batches_per_epoch=12, lr=5e-3, **TINY),
            run_dir, resume=True, progress=False)  # fmt: skip
    assert fit(config, run_dir, resume=True, progress=False) == result
    # Generation history added to the store (a resumed or extended biophys run) keeps
    # the run's splits valid; a remade protocol does not.
    zarr.open_group(toy_store, mode="r+", zarr_format=3).attrs["history"] = ["resumed"]
    _, desc = load_model(run_dir)
    assert run_simulations(desc, inspect_store(toy_store), None)[1] == "test"
    desc["run"]["data"]["protocol_hash"] = "other"
    with pytest.raises(UserError, match="remade with another protocol"):
        run_simulations(desc, inspect_store(toy_store), None)


def test_resume_continues_from_the_checkpoint(toy_store, tmp_path, monkeypatch):
    config = preset_config(data=str(toy_store), epochs=2, batches_per_epoch=4, **TINY)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    fit(config, whole, progress=False)
    assert fit(config, parts, stop_after_epochs=1, progress=False) is None
    assert len(rows(parts)) == 1 and runs.run_status(parts).result is None
    # Then a kill in the middle of epoch 2: its partial training is lost, nothing else.
    calls = []

    def dying_loss(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_loss(*args)

    real_loss = fit_module.neuronio_loss
    monkeypatch.setattr(fit_module, "neuronio_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        fit(config, parts, resume=True, progress=False)
    monkeypatch.undo()
    assert len(rows(parts)) == 1
    fit(config, parts, resume=True, progress=False)
    timing = {"train_s", "elapsed_s"}
    same = [{k: v for k, v in r.items() if k not in timing} for r in rows(parts)]
    assert same == [{k: v for k, v in r.items() if k not in timing} for r in rows(whole)]
    a = torch.load(whole / runs.CHECKPOINT_FILE, weights_only=True)
    b = torch.load(parts / runs.CHECKPOINT_FILE, weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["state"]["epochs_done"] == b["state"]["epochs_done"] == 2


def test_best_epoch_falls_back_to_the_validation_loss(capsys):
    nan = float("nan")
    selector = fit_module.EpochSelector("soma_RMSE")
    assert selector.is_best({"epoch": 1, "val_loss": 0.5, "val_soma_RMSE": nan})
    assert selector.key == "loss" and "validation loss" in capsys.readouterr().out
    assert not selector.is_best({"epoch": 2, "val_loss": 0.6, "val_soma_RMSE": 1.0})
    assert selector.is_best({"epoch": 3, "val_loss": 0.4, "val_soma_RMSE": 9.0})
    selector = fit_module.EpochSelector("AUC")
    assert selector.is_best({"epoch": 1, "val_loss": 0.5, "val_AUC": 0.7})
    assert not selector.is_best({"epoch": 2, "val_loss": 0.1, "val_AUC": 0.6})
    assert selector.is_best({"epoch": 3, "val_loss": 0.9, "val_AUC": 0.8})
    # The choice survives a checkpoint.
    again = fit_module.EpochSelector("AUC", selector.state_dict())
    assert not again.is_best({"epoch": 4, "val_loss": 0.9, "val_AUC": 0.75})
    assert fit_module.EpochSelector("AUC").is_best({"epoch": 1, "train_loss": 1.0})  # no val


def test_default_store_is_generated_when_missing(monkeypatch, tmp_path, capsys):
    made = []

    def fake_generate(cell, n_sims, duration_ms, seed, path):
        made.append(path)
        make_toy_store(path, n_sims=n_sims, n_time=duration_ms)

    monkeypatch.setattr(stores, "generate_store", fake_generate)
    config = preset_config(n_sims=4, duration_ms=1100, **{**TINY, "cell": "L5PC"})
    info, seconds = stores.ensure_data(config)
    assert len(made) == 1 and info.path == made[0] and seconds is not None
    assert "Generating 4 simulations of 1100 ms" in capsys.readouterr().out
    assert stores.ensure_data(config)[1] is None and len(made) == 1  # reused

    monkeypatch.undo()
    monkeypatch.setattr(stores.importlib.util, "find_spec", lambda name: None)
    other = preset_config(n_sims=3, duration_ms=1100, **{**TINY, "cell": "L5PC"})
    with pytest.raises(MissingDataError, match=r"biophys\.simulate"):
        stores.ensure_data(other)


def test_cli_errors_are_one_line(cli, tmp_path, toy_store):
    done = cli("surrogate.fit", "--data", tmp_path / "absent.zarr", "--out", tmp_path / "r")
    assert done.returncode == 2 and "no dataset at" in done.stderr
    assert "Traceback" not in done.stderr
    # A model fitted on 16 inputs cannot evaluate a 1278-input store.
    run_dir = tmp_path / "small"
    config = preset_config(data=str(toy_store), epochs=1, batches_per_epoch=1, **TINY)
    fit(config, run_dir, progress=False)
    wide = tmp_path / "wide.zarr"
    make_toy_store(wide, n_sims=1, n_segments=639, n_time=1000)
    done = cli("surrogate.evaluate", "--model", run_dir, "--data", wide)
    assert done.returncode == 2 and "expects 16 inputs but the store" in done.stderr
    assert "Traceback" not in done.stderr
    _, desc = load_model(run_dir)
    with pytest.raises(UserError, match="not the store the model was fitted on"):
        run_simulations(desc, inspect_store(wide), "test")
    assert run_simulations(desc, inspect_store(toy_store), None) == (
        runs.RunFolder(run_dir).record()["splits"]["test"],
        "test",
    )


def test_ablation_fits_and_reuses_runs(toy_store, tmp_path, capsys):
    args = ["--data", toy_store, "--d-m", "2", "4", "--epochs", "1", "--batches-per-epoch", "2",
            "--d-tree", "4", "--d-brch", "4", "--max-spikes", "100", "--val-fraction", "0.25",
            "--test-fraction", "0.25", "--batch-size", "2",
            "--runs-dir", tmp_path / "abl"]  # fmt: skip
    ablate.main([str(a) for a in args])
    table = list(csv.DictReader(open(tmp_path / "abl" / "ablation.csv")))
    assert [int(r["d_m"]) for r in table] == [2, 4]
    # Branch-ELM parameter count: d_s + (d_tree + d_m)·2d_m + 2d_m + 2d_m·d_m + d_m + 2d_m + 2.
    assert [int(r["n_parameters"]) for r in table] == [
        16 + (4 + d) * 2 * d + 2 * d + 2 * d * d + d + 2 * d + 2 for d in (2, 4)
    ]
    assert (tmp_path / "abl" / "ablation.png").is_file()
    capsys.readouterr()
    ablate.main([str(a) for a in args])
    assert capsys.readouterr().out.count("reusing its result") == 2


@pytest.mark.slow
def test_default_fit_with_the_real_simulator(cli, tmp_path):
    """`python -m surrogate.fit --cell L5PC` end to end, shrunk: NEURON makes the data.

    The default store goes to the session's cache (conftest), which also holds the
    compiled mechanisms and the morphology the simulator needs.
    """
    pytest.importorskip("biophys.simulation")
    done = cli(
        "surrogate.fit", "--cell", "L5PC", "--n-sims", 6, "--duration-ms", 1200,
        "--epochs", 1, "--batches-per-epoch", 3, "--out", tmp_path / "run", timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Generating 6 simulations" in done.stdout
    result = runs.run_status(tmp_path / "run").result
    assert result["test_metrics"]["n_simulations"] == 1
    assert result["data_generation_s"] > 0


def test_warm_start_from_a_released_model(tmp_path, released_models_dir):
    """--init loads the released weights (a fit with a vanishing learning rate keeps
    them), and a released model of another architecture is refused before any file."""
    wide = tmp_path / "wide.zarr"
    make_toy_store(wide, n_sims=4, n_segments=639, n_time=1100)
    source = str(released_models_dir / "num_memory_20")
    base = dict(data=str(wide), cell="toy", epochs=1, batches_per_epoch=1, batch_size=1,
                val_fraction=0.25, test_fraction=0.25, max_spikes=1000, init=source)  # fmt: skip
    with pytest.raises(UserError, match=r"d_m 20 \(ours 10\)"):
        fit(preset_config(**base, d_m=10), tmp_path / "misfit", progress=False)
    assert not (tmp_path / "misfit").exists()
    fit(preset_config(**base, lr=1e-30), tmp_path / "warm", progress=False)
    from elmnet.released import load_released
    from surrogate.model_file import load_model_file

    fitted, _ = load_model_file(tmp_path / "warm" / "best.pt")
    released = load_released(source).state_dict()
    for key, value in fitted.state_dict().items():
        torch.testing.assert_close(value, released[key], rtol=0, atol=1e-6, msg=key)
