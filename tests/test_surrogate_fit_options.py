"""The data-efficiency options of `surrogate.fit`: --test-data, --n-sims with --data,
--input-dropout, --select-by combined and --patience."""

import csv
import math

import numpy as np
import pytest
from toy_cell import make_toy_store

from biophys import store
from elmbridge import runs
from elmbridge.errors import UserError
from surrogate import fit as fit_module
from surrogate.config import combined_score, config_from_args
from surrogate.data import StoreReader, WindowDataset, inspect_store
from surrogate.evaluate import evaluate, load_model, run_simulations
from surrogate.fit import build_parser, fit, preset_config
from surrogate.model_file import load_model_file

TINY = dict(cell="toy", d_m=4, d_tree=4, d_brch=4, val_fraction=0.25, max_spikes=100,
            batch_size=4, lr=5e-3)  # fmt: skip


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    make_toy_store(root / "train.zarr", n_sims=8, n_time=1200)
    make_toy_store(root / "test.zarr", n_sims=3, n_time=1500, seed=7)
    return root


def rows(run_dir):
    with open(run_dir / runs.METRICS_FILE) as fh:
        return list(csv.DictReader(fh))


def test_input_dropout_deletes_spikes_at_its_rate_in_training_only(stores):
    info = inspect_store(stores / "train.zarr")
    p = 0.3
    plain = WindowDataset(info, [0, 1, 2], n_windows=6, seed=3)
    dropped = WindowDataset(info, [0, 1, 2], n_windows=6, seed=3, input_dropout=p)
    reader = StoreReader(info.path)
    kept = total = 0
    for i in range(len(plain)):
        # Same window either way; p = 0 is the store's data unchanged.
        assert plain.window(i) == dropped.window(i)
        sim, start = plain.window(i)
        raw, _, _ = reader.read(sim, start, start + 500)
        x, _, _ = plain[i]
        assert np.array_equal(x.numpy(), raw)
        y = dropped[i][0].numpy()
        spikes = raw != 0
        assert not (y[~spikes]).any()
        survivors = spikes & (y != 0)
        np.testing.assert_allclose(y[survivors], raw[survivors] / (1 - p), rtol=1e-6)
        kept, total = kept + survivors.sum(), total + spikes.sum()
    # The kept share is binomial(total, 1 − p): within 4 standard deviations.
    assert total > 2000
    sd = math.sqrt(p * (1 - p) / total)
    assert abs(kept / total - (1 - p)) < 4 * sd
    # Evaluation sees every spike: a dropout fit's test metrics are those of its best model
    # evaluated afresh on the undropped test simulations.
    config = preset_config(data=str(stores / "train.zarr"), epochs=1, batches_per_epoch=3,
                           test_fraction=0.25, input_dropout=0.5, **TINY)  # fmt: skip
    result = fit(config, stores / "dropout_run", progress=False)
    model, _ = load_model_file(stores / "dropout_run" / "best.pt")
    split = runs.RunFolder(stores / "dropout_run").record()["splits"]["test"]
    again = evaluate(model, info, split, n_boot=0, protocol=config.protocol())
    assert again["AUC"] == result["test_metrics"]["AUC"]
    assert again["soma_RMSE"] == result["test_metrics"]["soma_RMSE"]
    with pytest.raises(UserError, match="input_dropout"):
        preset_config(data=str(stores / "train.zarr"), input_dropout=1.0, **TINY)


def test_test_data_scores_every_simulation_of_another_store(stores, tmp_path):
    config = preset_config(data=str(stores / "train.zarr"), test_data=str(stores / "test.zarr"),
                           epochs=1, batches_per_epoch=2, **TINY)  # fmt: skip
    result = fit(config, tmp_path / "run", progress=False)
    record = runs.RunFolder(tmp_path / "run").record()
    splits = record["splits"]
    # All 8 training-store simulations go to training (6) and validation (round(8/4) = 2).
    assert splits["test"] == [] and len(splits["val"]) == 2
    assert sorted(splits["train"] + splits["val"]) == list(range(8))
    assert record["test_data"]["simulations"] == [0, 1, 2]
    split = result["test_metrics"]["split"]
    assert split["n_simulations"] == 3 and split["simulated_s"] == 3 * 1.5
    # Evaluating the run on its test store takes that whole store as "test".
    _, desc = load_model(tmp_path / "run")
    assert run_simulations(desc, inspect_store(stores / "test.zarr"), None) == ([0, 1, 2], "test")
    with pytest.raises(UserError, match="test set is the store"):
        run_simulations(desc, inspect_store(stores / "train.zarr"), None)
    assert fit(config, tmp_path / "run", resume=True, progress=False) == result


def test_test_data_of_another_layout_is_refused_before_anything_is_written(stores, tmp_path):
    wide = tmp_path / "wide.zarr"
    make_toy_store(wide, n_sims=2, n_segments=9, n_time=1200)
    other = tmp_path / "other_cell.zarr"
    spec = store.StoreSpec(**{**vars(inspect_spec(stores / "train.zarr")),
                              "protocol": {"cell": "other", "n_time": 1200}})  # fmt: skip
    store.prepare_store(other, spec, 1)
    from toy_cell import toy_simulation

    store.write_simulation(other, 0, toy_simulation(5, 8, 1200))
    for bad, what in ((wide, "input kinds and input segments"), (other, "cell")):
        config = preset_config(data=str(stores / "train.zarr"), test_data=str(bad), epochs=1,
                               batches_per_epoch=1, **TINY)  # fmt: skip
        with pytest.raises(UserError, match=what) as err:
            fit(config, tmp_path / "refused", progress=False)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "refused").exists()


def inspect_spec(path):
    from toy_cell import toy_spec

    return toy_spec(8, inspect_store(path).n_time)


def test_n_sims_with_data_uses_the_first_simulations(stores, tmp_path):
    args = build_parser().parse_args(["--data", str(stores / "train.zarr"), "--n-sims", "5"])
    config = config_from_args(args)
    assert config.first_sims == 5
    config = preset_config(**{**vars(config), **TINY, "epochs": 1, "batches_per_epoch": 1,
                              "test_fraction": 0.2})  # fmt: skip
    fit(config, tmp_path / "run", progress=False)
    record = runs.RunFolder(tmp_path / "run").record()
    assert sorted(s for split in record["splits"].values() for s in split) == [0, 1, 2, 3, 4]
    assert record["data"]["n_simulations"] == 5
    with pytest.raises(UserError, match="holds only 8"):
        fit(preset_config(**{**vars(config), "first_sims": 9}), tmp_path / "no", progress=False)
    with pytest.raises(UserError, match="--data"):
        preset_config(first_sims=3)


def test_combined_selection_picks_the_lowest_log_errors(stores, tmp_path):
    assert combined_score(0.9, 2.0) == pytest.approx(math.log(0.1) + math.log(2.0))
    assert combined_score(1.0, 2.0) == pytest.approx(math.log(1e-9) + math.log(2.0))
    assert math.isnan(combined_score(math.nan, 1.0))
    config = preset_config(data=str(stores / "train.zarr"), epochs=4, batches_per_epoch=3,
                           test_fraction=0.25, select_by="combined", **TINY)  # fmt: skip
    result = fit(config, tmp_path / "run", progress=False)
    history = rows(tmp_path / "run")
    score = [
        math.log(1 - float(r["val_AUC"])) + math.log(float(r["val_soma_RMSE"])) for r in history
    ]
    assert all(math.isfinite(v) for v in score)
    assert result["best_epoch"] == 1 + int(np.argmin(score))
    assert result["selected_by"] == "val_combined"


def scripted_validation(monkeypatch, values):
    """Make the fit's validation return `values[epoch]` as the soma RMSE, in order."""
    calls = []

    def validate(*args):
        rmse = values[len(calls)]
        calls.append(1)
        return {"val_loss": 1.0, "val_soma_RMSE": rmse, "val_AUC": 0.5}

    monkeypatch.setattr(fit_module, "validate", validate)
    return calls


def test_patience_stops_at_the_right_epoch_and_resumes(stores, tmp_path, monkeypatch):
    # RMSE 3, 2, 2.5, 2.4, 1 …: the best is epoch 2, and with patience 2 epochs 3 and 4
    # do not improve on it, so the fit stops after epoch 4 and never sees the 1.
    values = [3.0, 2.0, 2.5, 2.4, 1.0, 0.5, 0.4, 0.3]
    config = preset_config(data=str(stores / "train.zarr"), epochs=8, batches_per_epoch=1,
                           test_fraction=0.25, patience=2, select_by="soma_RMSE",
                           **TINY)  # fmt: skip
    scripted_validation(monkeypatch, values)
    whole = fit(config, tmp_path / "whole", progress=False)
    assert whole["epochs_run"] == 4 and whole["stopped_early"] and whole["best_epoch"] == 2
    assert [int(r["epoch"]) for r in rows(tmp_path / "whole")] == [1, 2, 3, 4]
    # In pieces of three epochs: the first stops after 3 (unfinished), the second stops
    # early after epoch 4 and tests, a third call reuses the result.
    calls = scripted_validation(monkeypatch, values)
    parts = tmp_path / "parts"
    assert fit(config, parts, stop_after_epochs=3, progress=False) is None
    result = fit(config, parts, resume=True, stop_after_epochs=3, progress=False)
    assert len(calls) == 4 and result["epochs_run"] == 4 and result["best_epoch"] == 2
    assert fit(config, parts, resume=True, progress=False) == result
    # Without patience every epoch runs.
    scripted_validation(monkeypatch, values)
    full = preset_config(**{**vars(config), "patience": None})
    assert fit(full, tmp_path / "full", progress=False)["epochs_run"] == 8
    with pytest.raises(UserError, match="patience"):
        preset_config(**{**vars(config), "patience": 0})


def test_a_fresh_fit_starts_its_spike_output_at_the_training_base_rate(tmp_path):
    import torch

    records = make_toy_store(tmp_path / "s.zarr", n_sims=4, n_time=1200, seed=3)
    info = inspect_store(tmp_path / "s.zarr")
    sims, start = [0, 1, 2], 500
    # Independent count: the 1 ms bins holding a spike time, from the records written.
    spikes = sum(len({int(t) for t in records[s].spike_times if start <= t < 1200}) for s in sims)
    assert spikes > 0
    p = spikes / (len(sims) * (1200 - start))
    logit = fit_module.spike_prior_logit(info, sims, start)
    assert logit == pytest.approx(math.log(p / (1 - p)))
    config = preset_config(data=str(tmp_path / "s.zarr"), **TINY)
    trainer = fit_module.Trainer(config.model_config(info), config, torch.device("cpu"),
                                 False, logit)  # fmt: skip
    bias = trainer.model.head.bias[fit_module.SPIKE].item()
    assert 1 / (1 + math.exp(-bias)) == pytest.approx(p, rel=1e-5)


def test_a_default_fit_is_scored_on_the_cells_held_out_test_store(monkeypatch, tmp_path):
    """Without --data or --test-data, the laptop fit trains and validates on every
    simulation of its default store and is tested on the cell's held-out store, made in
    the cache from a data seed of its own; the split mode and records that predate the
    option keep the test split of the training store."""
    from dataclasses import asdict

    from surrogate import stores as stores_module
    from surrogate.config import recorded_config

    made = []

    def fake_generate(cell, n_sims, duration_ms, seed, path):
        made.append((n_sims, duration_ms, seed))
        make_toy_store(path, n_sims=n_sims, n_time=duration_ms, seed=seed)

    monkeypatch.setattr(stores_module, "generate_store", fake_generate)
    small = dict(n_sims=2, duration_ms=1500, data_seed=1000, min_spike_bins=1, max_sims=4)
    monkeypatch.setattr(stores_module, "HELDOUT_TEST", small)
    values = {**TINY, "cell": "L5PC", "n_sims": 4, "duration_ms": 1200, "epochs": 1,
              "batches_per_epoch": 1}  # fmt: skip
    config = preset_config(**values)
    assert config.test_store == "heldout" and config.test_data is None
    resolved = stores_module.with_heldout_test(config)
    held_out = stores_module.default_store_path("L5PC", 2, 1500, 1000)
    assert resolved.test_data == str(held_out.resolve()) and made == [(2, 1500, 1000)]
    for unchanged in (
        preset_config(**values, test_store="split"),
        preset_config(**{**values, "data": str(held_out)}),
    ):
        assert stores_module.with_heldout_test(unchanged) == unchanged

    fit(config, tmp_path / "run", progress=False)
    record = runs.RunFolder(tmp_path / "run").record()
    assert record["splits"]["test"] == [] and len(record["splits"]["train"]) == 3
    assert record["test_data"]["store"] == str(held_out.resolve())
    assert record["test_data"]["simulations"] == [0, 1]
    assert made == [(2, 1500, 1000), (4, 1200, 0)]  # the test store was not made twice
    # Resuming the finished default fit reuses it, simulating nothing.
    assert fit(config, tmp_path / "run", resume=True, progress=False) is not None
    assert len(made) == 2

    old = asdict(preset_config(**values, test_store="split"))
    old.pop("test_store")  # a record from before the option: its fit used the split
    assert recorded_config(old)["test_store"] == "split"
    assert preset_config("paper").test_store == "split"
    with pytest.raises(UserError, match="test_store must be one of heldout, split"):
        preset_config(test_store="elsewhere")
