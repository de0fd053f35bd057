"""The shared infrastructure: atomic writes, verified downloads, CLI errors."""

import hashlib
import subprocess
import sys

import pytest

from elmbridge import download, files
from elmbridge.errors import MissingDataError, UserError


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    files.write_json(target, {"x": 1})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert files.read_json(target) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_gives_the_permissions_of_a_plain_new_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    files.write_text(atomic, "x")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_fetch_verifies_checksum_and_reports_offline(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello")
    good = hashlib.sha256(b"hello").hexdigest()
    dest = tmp_path / "cache" / "dest.bin"
    assert download.fetch(src.as_uri(), dest, good, what="test file") == dest
    assert dest.read_bytes() == b"hello"
    with pytest.raises(MissingDataError, match="sha256"):
        download.fetch(src.as_uri(), tmp_path / "bad.bin", "0" * 64, what="test file")
    assert not (tmp_path / "bad.bin").exists()
    with pytest.raises(MissingDataError, match="by hand"):
        download.fetch("http://127.0.0.1:9/none", tmp_path / "x", None, what="x", timeout_s=2)


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ELMBRIDGE_CACHE", str(tmp_path / "c"))
    assert download.cache_dir("models") == tmp_path / "c" / "models"


def test_cli_prints_user_errors_without_traceback():
    code = (
        "from elmbridge.cli import run_cli\n"
        "from elmbridge.errors import UserError\n"
        "def main(argv):\n"
        "    raise UserError('the thing was wrong; do this instead')\n"
        "run_cli(main)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: the thing was wrong; do this instead"
    assert issubclass(UserError, ValueError)


def _square(x):
    return x * x


def test_parallel_map_local_cluster_and_inprocess():
    from elmbridge.parallel import dask_client, map_unordered

    for scheduler in ("synchronous", None):
        with dask_client(scheduler, n_workers=2) as client:
            out = dict(map_unordered(_square, range(7), client=client, desc="t", max_in_flight=3))
        assert out == {i: i * i for i in range(7)}


def test_parallel_map_bad_scheduler_is_clear():
    from elmbridge.parallel import dask_client

    with (
        pytest.raises(UserError, match="cannot reach the Dask scheduler"),
        dask_client("tcp://127.0.0.1:9", connect_timeout_s=1),
    ):
        pass


def _slow_square(x):
    import time

    time.sleep(0.5)
    return x * x


def test_parallel_map_stops_when_the_local_cluster_loses_every_worker():
    """A local cluster whose workers are all gone never gets new ones: the map stops with
    a one-line error after the stated time instead of waiting forever."""
    from elmbridge.parallel import dask_client, map_unordered

    with dask_client(None, n_workers=1, processes=False) as client:
        results = map_unordered(_slow_square, range(6), client=client, desc="squares",
                                max_in_flight=2, workerless_timeout_s=1.0, poll_s=0.2)  # fmt: skip
        first = next(results)
        assert first[1] == first[0] ** 2
        client.cluster.scale(0)  # every worker leaves, as if killed
        with pytest.raises(UserError, match="squares: every worker process") as err:
            list(results)
        assert "\n" not in str(err.value)
