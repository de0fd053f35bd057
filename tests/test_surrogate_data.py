"""Windowed surrogate data over stores: encoding, targets, splits, workers, errors."""

import pickle

import numpy as np
import pytest
import torch
import zarr
from toy_cell import make_toy_store, toy_spec

from biophys import store
from elmbridge.errors import MissingDataError, UserError
from surrogate.data import (
    StoreReader,
    WindowDataset,
    check_inputs_fit,
    evaluation_windows,
    inspect_store,
    split_simulations,
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.zarr"
    records = make_toy_store(path, n_sims=10, n_time=1200)
    return path, records


def test_window_items_match_the_records(toy):
    path, records = toy
    info = inspect_store(path)
    ds = WindowDataset(info, info.simulations, n_windows=20, window_ms=300, min_start_ms=400)
    for i in range(len(ds)):
        sim, start = ds.window(i)
        assert 400 <= start <= 1200 - 300
        x, spike, soma = ds[i]
        rec = records[sim]
        n_seg = rec.input_spikes.shape[1] // 2
        sign = np.r_[np.ones(n_seg), -np.ones(n_seg)]
        expected_x = rec.input_spikes[start : start + 300] * sign
        assert torch.equal(x, torch.from_numpy(expected_x.astype(np.float32)))
        times = rec.spike_times[(rec.spike_times >= start) & (rec.spike_times < start + 300)]
        assert np.flatnonzero(spike.numpy()).tolist() == sorted({int(t) - start for t in times})
        v = rec.soma_v[start : start + 300].astype(np.float32)
        expected_soma = (np.minimum(v, -55.0) + 67.7) * 0.1
        assert np.allclose(soma.numpy(), expected_soma, atol=1e-5)


def test_windows_are_reproducible_per_epoch(toy):
    info = inspect_store(toy[0])
    ds = WindowDataset(info, [1, 2, 3], n_windows=8, seed=5)
    first = [ds.window(i) for i in range(8)]
    assert first == [ds.window(i) for i in range(8)]
    ds.set_epoch(1)
    assert first != [ds.window(i) for i in range(8)]


def test_dataloader_workers_read_the_same_batches(toy):
    info = inspect_store(toy[0])
    ds = WindowDataset(info, info.simulations, n_windows=8, seed=2)

    def batches(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers)
        return [b[0] for b in loader]

    for a, b in zip(batches(0), batches(2), strict=True):
        assert torch.equal(a, b)
    # Under "spawn" workers get a pickled copy: it carries the path, not the open store.
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.reader._ds is None and ds.reader._ds is not None
    assert torch.equal(copy[3][0], ds[3][0])


def test_splits_partition_the_simulations_without_leaks(toy):
    sims = list(range(30))
    splits = split_simulations(sims, val_fraction=0.1, test_fraction=0.2, seed=3)
    sets = {k: set(v) for k, v in splits.items()}
    assert sets["train"] | sets["val"] | sets["test"] == set(sims)
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"])
    assert not sets["val"] & sets["test"]
    assert (len(sets["test"]), len(sets["val"]), len(sets["train"])) == (6, 3, 21)
    assert splits == split_simulations(sims, 0.1, 0.2, seed=3)
    assert splits != split_simulations(sims, 0.1, 0.2, seed=4)
    # Training windows come only from training simulations.
    info = inspect_store(toy[0])
    small = split_simulations(info.simulations, 0.2, 0.2, seed=0)
    ds = WindowDataset(info, small["train"], n_windows=200)
    assert {ds.window(i)[0] for i in range(200)} == set(small["train"])
    with pytest.raises(UserError, match="at least one training"):
        split_simulations([0, 1], 0.4, 0.4, seed=0)


def test_evaluation_windows_tile_the_simulation():
    windows = evaluation_windows(6000, 500, 150)
    # The published count: int(2 + (T − window) / (window − burn-in)) = 17 for 6 s.
    assert len(windows) == int(2 + (6000 - 500) / 350) == 17
    assert windows[0] == (0, 0, 500)
    assert windows[1] == (350, 500, 850)
    covered = np.zeros(6000, int)
    for start, keep_from, keep_to in windows:
        assert start + 500 >= keep_to and keep_from >= start
        covered[keep_from:keep_to] += 1
    assert covered.min() == covered.max() == 1
    assert evaluation_windows(300, 500, 150) == [(0, 0, 300)]


def test_clear_errors_for_missing_foreign_and_incompatible_stores(tmp_path, toy):
    with pytest.raises(MissingDataError, match="no dataset"):
        inspect_store(tmp_path / "absent.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    with pytest.raises(UserError, match="not a NeuronIO dataset"):
        inspect_store(tmp_path / "other.zarr")
    empty = tmp_path / "empty.zarr"
    store.prepare_store(empty, toy_spec(), 2)
    with pytest.raises(UserError, match="no completed simulation"):
        inspect_store(empty)
    info = inspect_store(toy[0])
    with pytest.raises(UserError, match="at least 5000 ms"):
        inspect_store(toy[0], min_time_ms=5000)
    with pytest.raises(UserError, match="expects 1278 inputs but the store"):
        check_inputs_fit(info, 1278, "neuronio")
    check_inputs_fit(info, 16, "neuronio")  # exc block then inh block of the same segments
    mixed = tmp_path / "mixed.zarr"
    spec = toy_spec()
    spec.input_kind = ["exc", "inh"] * 8
    store.prepare_store(mixed, spec, 1)
    store.write_simulation(
        mixed, 0, store.SimulationRecord(np.zeros((1500, 16)), [0.0] * 1500, [], 0)
    )
    with pytest.raises(UserError, match="neuronio routing needs the inputs ordered"):
        check_inputs_fit(inspect_store(mixed), 16, "neuronio")
    check_inputs_fit(inspect_store(mixed), 16, "random")
    with pytest.raises(UserError, match="has no simulation 99"):
        StoreReader(toy[0]).read(99)
