"""Shared checks for the resumable dataset writers: bit-identity and kill-mid-run."""

import contextlib
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from biophys import store


def assert_same_data(path_a, path_b):
    """Every variable and coordinate of two stores is bit-identical (attrs aside)."""
    a = store.open_dataset(path_a, completed_only=False)
    b = store.open_dataset(path_b, completed_only=False)
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        x, y = a[name].values, b[name].values
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "f":
            assert np.array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")), name
        else:
            assert np.array_equal(x, y), name


def kill_once_stored(command, path, n_stored, timeout_s, **popen):
    """Start `command`, SIGKILL it once the store at `path` holds `n_stored` simulations.

    Returns how many simulations the store holds after the kill. Fails the test if the
    run ends on its own or stores too little within `timeout_s` seconds.
    """
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **popen,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (path / "zarr.json").exists() and len(store.completed_simulations(path)) >= n_stored:
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended (status {proc.returncode}) before it was killed")
            time.sleep(0.02)
        else:
            pytest.fail(f"the run did not store {n_stored} simulations within {timeout_s} s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the client, the store's only writer
        proc.wait()
        # Its Dask workers exit once their nanny loses its parent; make sure of it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return len(store.completed_simulations(path))
