"""Windowed surrogate data over stores: encoding, targets, splits, workers, errors."""

import pickle

import numpy as np
import pytest
import torch
import zarr
from toy_cell import make_toy_store, toy_spec

from biophys import store
from elmbridge.errors import MissingDataError, UserError
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from surrogate.data import (
    StoreReader,
    WindowDataset,
    check_inputs_fit,
    evaluation_windows,
    inspect_store,
    model_input,
    split_simulations,
)
from surrogate.fit import neuronio_loss
from surrogate.model_file import build_model


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
        # Spike counts as int8 (without input dropout), the same values.
        assert x.dtype == torch.int8
        assert np.array_equal(x.numpy().astype(np.float64), expected_x)
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


def toy_batch(info, input_dropout=0.0):
    ds = WindowDataset(info, info.simulations, n_windows=3, window_ms=200, min_start_ms=100,
                       seed=4, input_dropout=input_dropout)  # fmt: skip
    return [torch.stack(parts) for parts in zip(*(ds[i] for i in range(len(ds))), strict=True)]


def loss_and_grads(model, x, spike, soma):
    model.zero_grad()
    y, _ = model(model_input(model, x))
    loss = neuronio_loss(y, spike.to(y.dtype), soma.to(y.dtype))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_int8_windows_give_the_fits_loss_and_gradients(toy):
    """A float64 ELM neuron on the int8 training windows (the C++ product over int8
    spikes) against the same windows as float64 (the float64 product): the loss and
    every parameter gradient agree to 1e-10; a point neuron gets them as float."""
    path, _ = toy
    info = inspect_store(path)
    x, spike, soma = toy_batch(info)
    assert x.dtype == torch.int8 and x.abs().max() == 1 and (x != 0).any()
    torch.manual_seed(0)
    config = ELMConfig(d_in=info.n_inputs, d_m=5, d_tree=4, d_brch=6, routing="random",
                       w_s_init=0.3)  # fmt: skip
    model = ELMNeuron(config).double()
    loss_i8, grads_i8 = loss_and_grads(model, x, spike, soma)
    loss_f, grads_f = loss_and_grads(model, x.double(), spike, soma)
    assert len(grads_i8) == len(grads_f) > 3
    torch.testing.assert_close(loss_i8, loss_f, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads_i8, grads_f, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)

    n = info.n_inputs
    lif = build_model("lif", dict(kind="lif", d_in=n, groups=[0] * n, group_names=["basal-exc"]))
    assert model_input(lif, x).dtype == torch.float32
    loss_lif_i8, _ = loss_and_grads(lif, x, spike, soma)
    loss_lif_f, _ = loss_and_grads(lif, x.float(), spike, soma)
    assert torch.equal(loss_lif_i8, loss_lif_f)


def test_input_dropout_windows_stay_float(toy):
    """Dropout scales survivors by 1/(1 − p), not an integer: those windows stay float32
    and reach the model unchanged."""
    path, _ = toy
    info = inspect_store(path)
    x, _, _ = toy_batch(info, input_dropout=0.25)
    assert x.dtype == torch.float32
    survivors = x[x != 0].abs()
    assert survivors.numel() > 0
    torch.testing.assert_close(survivors, torch.full_like(survivors, 1 / 0.75))
    model = ELMNeuron(ELMConfig(d_in=info.n_inputs, d_m=3, d_tree=2, d_brch=4, routing="random"))
    assert model_input(model, x) is x
