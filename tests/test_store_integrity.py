"""Damaged stores are detected, refused by readers, and repaired by the simulate command.

Each damage of the issue: a chunk deleted, truncated or corrupted, and an array's
metadata deleted. The repair reruns the writer (the stand-in simulator of
`test_generate`) and must give back the bit-identical original.
"""

import json
import shutil

import numpy as np
import pytest
from store_checks import assert_same_data
from test_generate import make

from biophys import store
from elmbridge.errors import UserError
from surrogate.data import StoreReader, inspect_store


def chunk_of(path, array, simulation):
    """The chunk file holding `simulation` of `array` (one chunk per simulation)."""
    files = sorted((path / array / "c" / str(simulation)).rglob("*"))
    files = [f for f in files if f.is_file()]
    assert len(files) == 1, files
    return files[0]


def delete(path):
    chunk_of(path, "soma_v", 1).unlink()


def truncate(path):
    chunk = chunk_of(path, "input_spikes", 1)
    chunk.write_bytes(chunk.read_bytes()[:10])


def corrupt(path):
    chunk = chunk_of(path, "spike_times", 1)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def delete_metadata(path):
    (path / "soma_v" / "zarr.json").unlink()


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "original.zarr"
    make(path, 3, duration_ms=120)
    return path


@pytest.mark.parametrize("damage", [delete, truncate, corrupt])
def test_damaged_chunks_are_found_refused_and_recomputed(damage, original, tmp_path, capsys):
    path = tmp_path / "s.zarr"
    shutil.copytree(original, path)
    assert store.find_damaged(path) == {}
    damage(path)
    (why,) = store.find_damaged(path).values()
    assert list(store.find_damaged(path)) == [1]
    with pytest.raises(UserError, match=r"simulation 1: .*biophys\.simulate") as err:
        store.open_dataset(path)
    assert "\n" not in str(err.value)
    reader = StoreReader(inspect_store(path).path)
    reader.read(0)
    with pytest.raises(UserError, match="simulation 1"):
        reader.read(1)
    capsys.readouterr()
    result = make(path, 3, duration_ms=120)  # the same command again
    out = capsys.readouterr().out
    assert f"simulation 1 is damaged ({why}); it will be recomputed" in out
    assert result.n_run == 1
    assert store.find_damaged(path) == {}
    assert_same_data(original, path)


def test_deleted_array_metadata_is_restored(original, tmp_path, capsys):
    path = tmp_path / "s.zarr"
    shutil.copytree(original, path)
    delete_metadata(path)
    with pytest.raises(UserError, match=r"lacks the metadata of its array\(s\) soma_v"):
        store.open_dataset(path)
    with pytest.raises(UserError, match="soma_v"):
        inspect_store(path)
    capsys.readouterr()
    result = make(path, 3, duration_ms=120)
    assert "restored the metadata of the deleted array(s) soma_v" in capsys.readouterr().out
    # The chunks were still there: restoring the metadata recovers every simulation.
    assert result.n_run == 0
    assert_same_data(original, path)


def test_broken_root_metadata_is_one_line(original, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(original, path)
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type"')
    with pytest.raises(UserError, match=r"root metadata .* is damaged") as err:
        store.open_dataset(path)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="root metadata"):
        make(path, 3, duration_ms=120)


def test_a_store_without_checksums_adopts_them(original, tmp_path, capsys):
    """Stores written before checksums existed are trusted once, then checked."""
    path = tmp_path / "old.zarr"
    shutil.copytree(original, path)
    shutil.rmtree(path / "checksum")
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["arrays"]
    (path / "zarr.json").write_text(json.dumps(meta))
    assert store.find_damaged(path) == {}  # nothing to check against
    capsys.readouterr()
    assert make(path, 3, duration_ms=120).n_run == 0
    assert "predates checksums" in capsys.readouterr().out
    corrupt(path)
    assert list(store.find_damaged(path)) == [1]


def test_the_checksum_covers_every_array_of_a_simulation():
    base = {"soma_v": np.zeros(5, np.float32), "n_spikes": np.asarray(2, np.int32)}
    digest = store.simulation_digest(base)
    assert digest != 0 and store.simulation_digest(dict(reversed(base.items()))) == digest
    changed = {**base, "soma_v": np.r_[np.zeros(4), 1e-7].astype(np.float32)}
    assert store.simulation_digest(changed) != digest
    assert store.simulation_digest({**base, "n_spikes": np.asarray(2, np.int64)}) != digest


def test_a_fit_refuses_a_damaged_store_before_writing(original, tmp_path):
    from surrogate.fit import fit, preset_config

    path = tmp_path / "s.zarr"
    shutil.copytree(original, path)
    corrupt(path)
    config = preset_config(data=str(path), cell="toy", window_ms=50, min_start_ms=10,
                           burn_in_ms=10, skip_ms=10, d_tree=4, d_brch=2)  # fmt: skip
    with pytest.raises(UserError, match="simulation 1"):
        fit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_writing_a_simulation_is_one_line(original, tmp_path, monkeypatch):
    import zarr

    path = tmp_path / "s.zarr"
    shutil.copytree(original, path)
    record = store.SimulationRecord(
        input_spikes=np.zeros((120, 8), bool), soma_v=np.zeros(120), spike_times=np.array([]),
        seed=1,
    )  # fmt: skip

    def full(self, key, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", full)
    with pytest.raises(UserError, match=r"simulation 2 .*No space left.*resume") as err:
        store.write_simulation(path, 2, record)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert store.find_damaged(path) == {}
    assert_same_data(original, path)
