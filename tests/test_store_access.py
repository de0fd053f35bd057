"""The store's read and bookkeeping functions, through which everyone else reaches data."""

import pickle

import numpy as np
import pytest
import zarr
from toy_cell import make_toy_store, toy_spec

from biophys import store
from elmbridge.errors import MissingDataError, UserError
from surrogate.data import count_completed_simulations, inspect_store


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy store of 4 simulations of which simulation 2 never finished."""
    path = tmp_path_factory.mktemp("access") / "toy.zarr"
    records = make_toy_store(path, n_sims=4, n_time=600)
    zarr.open_group(path, mode="r+", zarr_format=3)["completed"][2] = False
    return path, records


def test_metadata_lists_shapes_inputs_and_finished_simulations(toy):
    path, _ = toy
    meta = store.read_metadata(path)
    assert meta.n_time == 600
    assert meta.input_kind == ("exc",) * 8 + ("inh",) * 8
    assert meta.input_segment == tuple(range(8)) * 2
    assert meta.simulations == (0, 1, 3)
    assert meta.attrs["schema"] == store.SCHEMA
    assert store.data_identity(meta.attrs) == {
        "schema": store.SCHEMA,
        "protocol": {"cell": "toy", "n_time": 600},
    }
    assert store.recorded_cell(meta.attrs) == "toy"
    assert store.recorded_cell({"cell": "L5PC", "protocol": {"cell": "x"}}) == "L5PC"
    assert store.recorded_cell({"protocol": None}) is None
    info = inspect_store(path)
    assert info.cell == "toy" and info.protocol == {"cell": "toy", "n_time": 600}


def test_simulation_reader_returns_the_written_data(toy):
    path, records = toy
    reader = store.SimulationReader(path)
    assert (reader.n_time, reader.n_inputs) == (600, 16)
    inputs, spikes, soma = reader.read(3, 100, 350)
    rec = records[3]
    assert inputs.dtype == np.uint8 and inputs.shape == (250, 16)
    assert np.array_equal(inputs, rec.input_spikes[100:350].astype(np.uint8))
    assert np.array_equal(soma, np.asarray(rec.soma_v, np.float32)[100:350])
    whole = store.spike_train(np.asarray(rec.spike_times)[None], 600)[0]
    assert np.array_equal(spikes, whole[100:350])
    assert reader.read(0)[0].shape == (600, 16)
    copy = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(copy.read(3, 100, 350)[2], soma)
    with pytest.raises(UserError, match="has no simulation 9"):
        reader.read(9)


def test_attributes_for_bookkeeping_but_not_for_the_data(toy, tmp_path):
    path, _ = toy
    assert store.get_attribute(path, "my_log", {}) == {}
    store.set_attribute(path, "my_log", {"files": [{"name": "a.p", "count": 2}]})
    assert store.get_attribute(path, "my_log") == {"files": [{"name": "a.p", "count": 2}]}
    for name in store.RESERVED_ATTRIBUTES:
        with pytest.raises(UserError, match=r"written by biophys\.store only"):
            store.set_attribute(path, name, "x")
    assert store.read_metadata(path).attrs["protocol"] == {"cell": "toy", "n_time": 600}
    with pytest.raises(MissingDataError, match="no dataset"):
        store.get_attribute(tmp_path / "absent.zarr", "my_log")
    zarr.open_group(tmp_path / "foreign.zarr", mode="w", zarr_format=3)
    with pytest.raises(UserError, match="not a NeuronIO dataset"):
        store.set_attribute(tmp_path / "foreign.zarr", "my_log", 1)


def test_completed_count_is_zero_without_a_store(toy, tmp_path):
    path, _ = toy
    assert store.store_exists(path) and not store.store_exists(tmp_path / "absent.zarr")
    assert count_completed_simulations(path) == 3
    assert count_completed_simulations(tmp_path / "absent.zarr") == 0
    empty = tmp_path / "empty.zarr"
    store.prepare_store(empty, toy_spec(n_time=50), 2)
    assert count_completed_simulations(empty) == 0
