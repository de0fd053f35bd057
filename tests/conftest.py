"""Shared test fixtures: where the reference data beside the checkout lives."""

import gc
import os
import shutil
import subprocess
import sys
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


@pytest.fixture
def cli():
    """Run `python -m MODULE ARGS...` in a subprocess that imports this checkout.

    Returns a function (module, *args, cwd=None, timeout=600) -> CompletedProcess with
    text stdout/stderr; it does not raise on a non-zero exit.
    """

    def run(module: str, *args, cwd=None, timeout: float = 600, env=None):
        paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        full_env.update({"MPLBACKEND": "Agg", **(env or {})})
        return subprocess.run(
            [sys.executable, "-m", module, *map(str, args)],
            capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout,
        )  # fmt: skip

    return run


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


@pytest.fixture(scope="module")
def h():
    """NEURON's `h` with the toolkit's mechanisms loaded and no L5PC in memory.

    NEURON integrates every section that exists, so single-compartment tests must not
    share the process's cached L5PC.
    """
    from biophys.cells import forget_model
    from biophys.mechanisms import load_mechanisms

    load_mechanisms()
    from neuron import h

    h.load_file("stdrun.hoc")
    forget_model()
    gc.collect()
    return h


@pytest.fixture
def one_torch_thread():
    """Tiny matmuls per step: extra threads only contend on a busy CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The C++ loops need a compiler; CI installs g++ (.ci/run), elsewhere their tests skip.
NO_COMPILER = shutil.which("c++") is None and shutil.which("g++") is None


@pytest.fixture(scope="session")
def cpp_extension():
    """The C++ loops, built once per session into the toolkit cache (a failed build fails
    the test with the build's error, rather than silently testing the eager fallback)."""
    from elmnet import cpp_loop

    ext = cpp_loop.extension()
    assert ext is not None, cpp_loop.build_error()
    return ext
