"""The NeuronIO store layout: round trips, resumable slots, extension and refusals."""

import numpy as np
import pytest

from biophys import store
from elmbridge.errors import MissingDataError, UserError


def small_spec(n_time=50, protocol=None, **kw):
    n_seg = 3
    return store.StoreSpec(
        n_time=n_time,
        input_kind=["exc"] * n_seg + ["inh"] * n_seg,
        input_segment=list(range(n_seg)) * 2,
        segments={
            "section": ["dend[0]", "dend[0]", "apic[0]"],
            "x": [0.25, 0.75, 0.5],
            "tree": ["basal", "basal", "apical"],
            "path_distance_um": [10.0, 30.0, 50.0],
            "length_um": [20.0, 20.0, 40.0],
        },
        protocol=protocol or {"cell": "toy", "seed": 0},
        **kw,
    )


def record(rng, n_time=50, n_inputs=6, seed=0):
    return store.SimulationRecord(
        input_spikes=rng.random((n_time, n_inputs)) < 0.2,
        soma_v=rng.normal(-70, 3, n_time),
        spike_times=np.sort(rng.uniform(0, n_time, 4)),
        seed=seed,
    )


def test_pack_roundtrip_any_width():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 1278):
        x = rng.random((5, n)) < 0.3
        assert np.array_equal(store.unpack_inputs(store.pack_inputs(x), n), x)


def test_spike_train_bins_by_floor():
    times = np.array([[0.0, 0.999, 3.2, np.nan], [9.9, np.nan, np.nan, np.nan]])
    train = store.spike_train(times, n_time=10)
    assert train[0].tolist() == [1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert train[1].tolist() == [0] * 9 + [1]


def test_store_roundtrip_and_lazy_open(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.zarr"
    todo = store.prepare_store(path, small_spec(), n_simulations=3)
    assert todo == [0, 1, 2]
    recs = {i: record(rng, seed=i) for i in (0, 2)}
    for i, r in recs.items():
        store.write_simulation(path, i, r)
    ds = store.open_dataset(path)
    assert ds.sizes["simulation"] == 2
    assert ds["soma_v"].chunks is not None  # lazy (dask)
    assert ds.simulation.values.tolist() == [0, 2]
    packed = ds["input_spikes"].sel(simulation=2).values
    assert np.array_equal(store.unpack_inputs(packed, 6).astype(bool), recs[2].input_spikes)
    n = int(ds["n_spikes"].sel(simulation=2))
    assert np.array_equal(ds["spike_times"].sel(simulation=2).values[:n], recs[2].spike_times)
    assert ds["spike_times"].dtype == np.float64
    assert list(ds["input_kind"].values) == ["exc"] * 3 + ["inh"] * 3
    assert ds.attrs["protocol"] == {"cell": "toy", "seed": 0}
    assert store.prepare_store(path, small_spec(), n_simulations=3) == [1]


def test_store_without_finished_simulations_is_remade_for_another_protocol(tmp_path):
    path = tmp_path / "d.zarr"
    store.prepare_store(path, small_spec(n_time=50), n_simulations=2)
    other = small_spec(n_time=30, protocol={"cell": "toy", "seed": 1})
    assert store.prepare_store(path, other, n_simulations=3) == [0, 1, 2]
    ds = store.open_dataset(path, completed_only=False)
    assert ds.attrs["protocol"] == {"cell": "toy", "seed": 1}
    assert (ds.sizes["simulation"], ds.sizes["time"]) == (3, 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]


def test_extend_and_refuse_other_protocol(tmp_path):
    path = tmp_path / "d.zarr"
    store.prepare_store(path, small_spec(), n_simulations=2)
    store.write_simulation(path, 0, record(np.random.default_rng(0)))
    assert store.prepare_store(path, small_spec(), n_simulations=4) == [1, 2, 3]
    assert store.open_dataset(path, completed_only=False).sizes["simulation"] == 4
    with pytest.raises(UserError, match="another protocol"):
        store.prepare_store(path, small_spec(protocol={"cell": "other"}), n_simulations=4)


def test_refuses_foreign_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        store.prepare_store(tmp_path / "file", small_spec(), 1)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a zarr store"):
        store.prepare_store(tmp_path / "folder", small_spec(), 1)
    with pytest.raises(UserError, match="cannot create"):
        store.prepare_store(tmp_path / "file" / "sub.zarr", small_spec(), 1)
    with pytest.raises(MissingDataError, match=r"biophys\.simulate"):
        store.open_dataset(tmp_path / "absent.zarr")


def test_wrong_record_shape_is_clear(tmp_path):
    path = tmp_path / "d.zarr"
    store.prepare_store(path, small_spec(), 1)
    bad = record(np.random.default_rng(0), n_inputs=5)
    with pytest.raises(UserError, match=r"\(time, input\)"):
        store.write_simulation(path, 0, bad)


@pytest.mark.parametrize("kill_after", range(7))
def test_extension_killed_midway_is_redone_on_rerun(tmp_path, monkeypatch, kill_after):
    import zarr

    path = tmp_path / "d.zarr"
    store.prepare_store(path, small_spec(), n_simulations=2)
    store.write_simulation(path, 0, record(np.random.default_rng(0)))
    # A kill during the extension to 4, after `kill_after` arrays have grown.
    real_resize, calls = zarr.Array.resize, []

    def dying_resize(self, shape):
        if len(calls) == kill_after:
            raise KeyboardInterrupt
        calls.append(self.path)
        real_resize(self, shape)

    monkeypatch.setattr(zarr.Array, "resize", dying_resize)
    with pytest.raises(KeyboardInterrupt):
        store.prepare_store(path, small_spec(), n_simulations=4)
    monkeypatch.setattr(zarr.Array, "resize", real_resize)

    assert store.prepare_store(path, small_spec(), n_simulations=4) == [1, 2, 3]
    group = zarr.open_group(path, mode="r")
    for name in ("input_spikes", "soma_v", "spike_times", "n_spikes", "sim_seed", "completed"):
        assert group[name].shape[0] == 4, name
    assert group["simulation"][:].tolist() == [0, 1, 2, 3]
    store.write_simulation(path, 3, record(np.random.default_rng(1), seed=3))
    assert store.completed_simulations(path).tolist() == [0, 3]


def test_protocol_mismatch_names_the_differences_on_one_line(tmp_path):
    path = tmp_path / "d.zarr"
    store.prepare_store(path, small_spec(protocol={"cell": "toy", "p": {"a": 1, "b": 2}}), 1)
    store.write_simulation(path, 0, record(np.random.default_rng(0)))
    other = small_spec(protocol={"cell": "toy", "p": {"a": 1, "b": 3}, "new": True})
    with pytest.raises(UserError) as err:
        store.prepare_store(path, other, 1)
    message = str(err.value)
    assert "\n" not in message
    assert "new: store '<absent>', requested True" in message
    assert "p.b: store 2, requested 3" in message
    assert "p.a" not in message and "cell" not in message.split("(", 1)[1]


def test_history_appends_and_creation_leaves_no_staging(tmp_path):
    path = tmp_path / "d.zarr"
    store.prepare_store(path, small_spec(), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]
    store.append_history(path, {"run": 1})
    store.append_history(path, {"run": 2, "when": np.float64(1.5)})
    assert store.open_dataset(path).attrs["history"] == [{"run": 1}, {"run": 2, "when": 1.5}]
