"""SHD, SHD-Adding and Enwik8 data on small files the tests write in the official formats."""

import gzip
import hashlib
import math
import zipfile

import numpy as np
import pytest
import torch
from task_files import write_enwik8_zip, write_shd, write_shd_pair

from elmbridge.errors import MissingDataError, UserError
from elmnet.tasks import enwik8, shd
from elmnet.tasks.shd_adding import N_CLASSES, SHDAdding, digit_sum

# A port nothing listens on: downloads fail at once, as offline.
OFFLINE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=60, n_test=20)


# ---------------------------------------------------------------------------------------
# SHD


def test_load_split_reads_the_official_layout(tmp_path):
    written = write_shd(tmp_path / "x.h5", [3, 17, 0], seed=5)
    split = shd.load_split(tmp_path / "x.h5")
    assert len(split) == 3 and split.labels.tolist() == [3, 17, 0]
    assert split.keys[17] == "sieben" and split.speakers.shape == (3,)
    for i in range(3):
        np.testing.assert_array_equal(split.times[i], written["times"][i])
        np.testing.assert_array_equal(split.units[i], written["units"][i])


@pytest.mark.parametrize("bin_ms, n_bins", [(2.0, 500), (10.0, 100), (3.0, 334)])
def test_binning_counts_every_spike_before_one_second(tmp_path, bin_ms, n_bins):
    written = write_shd(tmp_path / "x.h5", [4, 9], seed=6)
    binned = shd.load_split(tmp_path / "x.h5").binned(bin_ms)
    dense = binned.dense([0, 1])
    assert dense.shape == (2, n_bins, 700) and binned.n_bins == n_bins
    for i in range(2):
        expected = np.zeros((n_bins, 700))
        for t, u in zip(written["times"][i], written["units"][i], strict=True):
            t_ms = float(t) * 1000.0
            if t_ms < 1000.0:
                expected[int(t_ms // bin_ms), u] += 1
        np.testing.assert_array_equal(dense[i], expected)
        assert dense[i].sum() < len(written["times"][i])  # the tail past 1 s is cut


def test_shd_errors_say_how_to_get_the_files(tmp_path):
    with pytest.raises(MissingDataError, match=r"zenkelab\.org"):
        shd.load_split(tmp_path / "shd_train.h5")
    with pytest.raises(MissingDataError, match=r"shd_test\.h5"):
        shd.find_shd(tmp_path)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="cannot read"):
        shd.load_split(tmp_path / "bad.h5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["labels"] = np.zeros(3)
    with pytest.raises(UserError, match="not in the SHD layout"):
        shd.load_split(tmp_path / "other.h5")
    with pytest.raises(MissingDataError, match="--download"):
        shd.find_shd()  # the session's empty cache


def _publish_shd(site, shd_dir, corrupt=False):
    """A local 'website': the gzipped files and an md5sums.txt listing them."""
    site.mkdir()
    lines = []
    for name in ("shd_train.h5", "shd_test.h5"):
        data = gzip.compress((shd_dir / name).read_bytes())
        (site / f"{name}.gz").write_bytes(data)
        md5 = hashlib.md5(data).hexdigest()
        lines.append(f"{'0' * 32 if corrupt else md5}  {name}.gz")
    (site / "md5sums.txt").write_text("\n".join(lines) + "\n")
    return site.as_uri()


def test_download_checks_published_md5_and_unpacks(tmp_path, shd_dir):
    url = _publish_shd(tmp_path / "site", shd_dir)
    folder = shd.download_shd(tmp_path / "cache", base_url=url)
    for name in ("shd_train.h5", "shd_test.h5"):
        assert (folder / name).read_bytes() == (shd_dir / name).read_bytes()
        assert not (folder / f"{name}.gz").exists()
    bad = _publish_shd(tmp_path / "bad_site", shd_dir, corrupt=True)
    with pytest.raises(MissingDataError, match="MD5"):
        shd.download_shd(tmp_path / "cache2", base_url=bad)
    assert not list((tmp_path / "cache2").glob("*.h5*"))
    with pytest.raises(MissingDataError, match="not available offline"):
        shd.download_shd(tmp_path / "cache3", base_url=OFFLINE)


# ---------------------------------------------------------------------------------------
# SHD-Adding


def test_labels_are_digit_sums_ignoring_language():
    assert digit_sum(np.array([13, 9, 0, 19]), np.array([5, 19, 10, 9])).tolist() == [8, 18, 0, 18]
    assert N_CLASSES == 19


def make_task(shd_dir, **kw):
    train = shd.load_split(shd_dir / "shd_train.h5")
    test = shd.load_split(shd_dir / "shd_test.h5")
    return SHDAdding(train, test, **{"bin_ms": 10.0, **kw})


def test_splits_pairs_and_no_leakage(shd_dir):
    task = make_task(shd_dir)
    train, valid, test = (set(task.pools[s].tolist()) for s in ("train", "valid", "test"))
    assert train.isdisjoint(valid) and train | valid == set(range(60))
    assert len(valid) == 12  # 20 % of 60
    assert set(task.fixed_pairs["valid"].ravel()) <= valid
    assert set(task.fixed_pairs["test"].ravel()) <= test == set(range(20))
    assert task.fixed_pairs["test"].shape == (20, 2) and task.n_steps == 200
    # Test batches hold the test file's words: the bins equal the test file's binning.
    test_file = shd.load_split(shd_dir / "shd_test.h5").binned(10.0)
    train_file = shd.load_split(shd_dir / "shd_train.h5").binned(10.0)
    x, y = next(task.eval_batches("test", 8))
    pairs = task.fixed_pairs["test"][:8]
    np.testing.assert_array_equal(x[:, :100], test_file.dense(pairs[:, 0]))
    np.testing.assert_array_equal(x[:, 100:], test_file.dense(pairs[:, 1]))
    np.testing.assert_array_equal(
        y, digit_sum(test_file.labels[pairs[:, 0]], test_file.labels[pairs[:, 1]])
    )
    # Training batches only from the training pool: every half matches a pool sample.
    pool = {task.pools["train"][i]: train_file.dense([task.pools["train"][i]])[0].tobytes()
            for i in range(len(task.pools["train"]))}  # fmt: skip
    x, y = task.train_batch(seed=1, step=0, batch_size=16)
    for half in (x[:, :100], x[:, 100:]):
        for sample in half:
            assert sample.tobytes() in pool.values()
    assert ((0 <= y) & (y < N_CLASSES)).all()


def test_batches_are_reproducible_from_seed_and_step(shd_dir):
    task = make_task(shd_dir)
    a = task.train_batch(seed=3, step=7, batch_size=8)
    b = make_task(shd_dir).train_batch(seed=3, step=7, batch_size=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(task.train_batch(3, 8, 8)[0], a[0])
    assert not np.array_equal(task.train_batch(4, 7, 8)[0], a[0])
    again = make_task(shd_dir)
    np.testing.assert_array_equal(again.fixed_pairs["test"], task.fixed_pairs["test"])
    other = make_task(shd_dir, data_seed=1)
    assert not np.array_equal(other.fixed_pairs["test"], task.fixed_pairs["test"])
    assert other.pools["valid"].tolist() != task.pools["valid"].tolist()


def test_pairs_are_drawn_with_replacement(shd_dir):
    task = make_task(shd_dir, n_test_pairs=200)
    pairs = task.fixed_pairs["test"]
    assert (pairs[:, 0] == pairs[:, 1]).any()  # 20 samples, 200 pairs: same word twice
    assert len({tuple(p) for p in pairs}) < 200


def test_describe_records_files_and_splits(shd_dir):
    info = make_task(shd_dir).describe()
    assert (
        info["files"]["test"]["sha256"]
        == hashlib.sha256((shd_dir / "shd_test.h5").read_bytes()).hexdigest()
    )
    assert info["pool_sizes"] == {"train": 48, "valid": 12, "test": 20}


# ---------------------------------------------------------------------------------------
# Enwik8


@pytest.fixture(scope="module")
def enwik8_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("enwik8") / "enwik8.zip"
    return path, write_enwik8_zip(path)


def test_reads_zip_file_and_folder(enwik8_zip, tmp_path):
    path, text = enwik8_zip
    np.testing.assert_array_equal(enwik8.read_bytes(path), np.frombuffer(text, np.uint8))
    (tmp_path / "enwik8").write_bytes(text)
    assert enwik8.read_bytes(tmp_path / "enwik8").tobytes() == text
    assert enwik8.read_bytes(tmp_path).tobytes() == text
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("text8", text)
    with pytest.raises(UserError, match="does not hold a file named 'enwik8'"):
        enwik8.read_bytes(tmp_path / "other.zip")
    with pytest.raises(MissingDataError, match=r"mattmahoney\.net"):
        enwik8.read_bytes(tmp_path / "nothing.zip")
    with pytest.raises(MissingDataError, match="--download"):
        enwik8.find_enwik8()  # the session's empty cache


def test_standard_split_and_byte_vocabulary(enwik8_zip):
    path, text = enwik8_zip
    assert enwik8.split_sizes(100_000_000) == (90_000_000, 5_000_000, 5_000_000)
    data = enwik8.Enwik8.load(path)
    n = len(text)
    assert n >= 1 << 20
    assert (len(data.train), len(data.valid), len(data.test)) == (
        n - 2 * (n // 20),
        n // 20,
        n // 20,
    )
    assert data.vocab.tolist() == sorted(set(text))
    assert 0xC3 in data.vocab  # the UTF-8 of "ü" is two bytes, each a token
    joined = np.concatenate([data.train, data.valid, data.test])
    assert data.vocab[joined].tobytes() == text


def test_streams_are_contiguous_per_row():
    ids = np.arange(1000) % 251
    streams = enwik8.Streams(ids.astype(np.uint8), batch=4, bptt=30)
    assert len(streams) == math.ceil(249 / 30)
    inputs, targets = zip(*(streams.window(i) for i in range(len(streams))), strict=True)
    rows_in = torch.cat(inputs, 1)
    rows_target = torch.cat(targets, 1)
    for b in range(4):
        stream = torch.from_numpy(ids[b * 250 : (b + 1) * 250]).long()
        torch.testing.assert_close(rows_in[b], stream[:-1])
        torch.testing.assert_close(rows_target[b], stream[1:])


def test_bpc_of_uniform_model_is_log2_v(enwik8_zip):
    data = enwik8.Enwik8.load(enwik8_zip[0])
    V = data.n_tokens

    def uniform(x, state):
        return torch.zeros(*x.shape, V), state

    result = enwik8.evaluate_bpc(uniform, data.valid, batch=1, bptt=500, progress=False)
    assert result["bpc"] == pytest.approx(math.log2(V), rel=1e-6)  # float32 logits
    assert result["n_predictions"] == len(data.valid) - 1
    result = enwik8.evaluate_bpc(uniform, data.valid, batch=3, bptt=500, progress=False)
    assert result["n_predictions"] == 3 * (len(data.valid) // 3 - 1)


def test_bpc_carries_state_through_the_whole_split():
    """A model that knows the text and tracks its position only in the state: it is
    perfect exactly when the state is carried from every window to the next."""
    ids = np.random.default_rng(0).integers(0, 7, 2000).astype(np.uint8)
    text = torch.from_numpy(ids).long()

    def oracle(x, position):
        position = 0 if position is None else position
        steps = torch.arange(position, position + x.shape[1])
        logits = torch.full((1, x.shape[1], 7), -30.0)
        logits[0, torch.arange(x.shape[1]), text[steps + 1]] = 30.0
        assert torch.equal(x[0], text[steps])
        return logits, position + x.shape[1]

    result = enwik8.evaluate_bpc(oracle, ids, batch=1, bptt=64, progress=False)
    assert result["bpc"] < 1e-10 and result["n_predictions"] == 1999


def test_download_enwik8_checks_the_size(enwik8_zip, tmp_path):
    path, text = enwik8_zip
    url = path.as_uri()
    got = enwik8.download_enwik8(tmp_path / "a.zip", url=url, expected_bytes=len(text))
    assert got.read_bytes() == path.read_bytes()
    with pytest.raises(MissingDataError, match="not 100000000"):
        enwik8.download_enwik8(tmp_path / "b.zip", url=url)
    assert not (tmp_path / "b.zip").exists()
    with pytest.raises(MissingDataError, match="not available offline"):
        enwik8.download_enwik8(tmp_path / "c.zip", url=OFFLINE + "/enwik8.zip")
