"""Shared test fixtures: where the reference data beside the checkout lives."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`../shared` beside the checkout, or `$ELMBRIDGE_SHARED`."""
    return Path(os.environ.get("ELMBRIDGE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "data").is_dir():
        pytest.skip(f"reference data folder {path} not found (set ELMBRIDGE_SHARED)")
    return path


@pytest.fixture(scope="session")
def released_models_dir(shared) -> Path:
    return shared / "data" / "elmneuron-released-models"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One empty user cache for the whole session, so nothing leaks into ~/.cache.

    Session-wide rather than per test: compiled NEURON mechanisms live in the cache and
    a process can load a mechanism library only once. Subprocesses (dask workers, CLI
    runs) inherit it through the environment.
    """
    old = os.environ.get("ELMBRIDGE_CACHE")
    os.environ["ELMBRIDGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ELMBRIDGE_CACHE", None)
    else:
        os.environ["ELMBRIDGE_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def _l5pc_morphology():
    """Hay's cell1.asc from ../shared, so that no test downloads it.

    The toolkit looks for cell1.asc in $ELMBRIDGE_MORPHOLOGIES before downloading.
    """
    folder = shared_dir() / "data" / "morphologies"
    if not (folder / "cell1.asc").is_file() or "ELMBRIDGE_MORPHOLOGIES" in os.environ:
        yield
        return
    os.environ["ELMBRIDGE_MORPHOLOGIES"] = str(folder)
    yield
    os.environ.pop("ELMBRIDGE_MORPHOLOGIES", None)
