"""Dataset generation end to end with the real NEURON simulator (short simulations).

Skipped until `biophys.simulation` exists. The orchestration itself is tested fast with
a stand-in in `test_generate.py`; these check that the real cell, protocol and simulator
plug into it as the contract says.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("biophys.simulation")

from store_checks import assert_same_data, kill_once_stored

from biophys import generate as gen
from biophys import store
from biophys.cells import describe_cell
from biophys.protocol import neuronio_inputs, protocol_parameters
from biophys.simulation import simulate

REPO = Path(__file__).resolve().parents[1]
CELL = "L5PC"


@pytest.fixture(scope="module", autouse=True)
def _offline_morphology(shared):
    """Hay's cell1.asc from ../shared (offline); subprocesses and workers inherit it."""
    key = "ELMBRIDGE_MORPHOLOGIES"
    old = os.environ.get(key)
    os.environ[key] = str(shared / "data" / "morphologies")
    yield
    if old is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = old


def cli(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "biophys.simulate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        **kw,
    )


def test_real_store_matches_direct_simulation(tmp_path):
    path = tmp_path / "l5pc.zarr"
    settings = gen.SimulationSettings(cell=CELL, duration_ms=300, record_nexus=True)
    result = gen.generate(path, 2, settings, seed=4, workers=2)
    assert result.n_completed == 2

    cell = describe_cell(CELL)
    ds = store.open_dataset(path)
    assert ds.sizes["input"] == len(cell.input_kind)
    assert ds.sizes["segment"] == len(cell.segments["section"])
    assert ds.attrs["morphology_sha256"] == cell.morphology_sha256
    assert ds.attrs["mechanisms_hash"] == cell.mechanisms_hash
    expected = json.loads(json.dumps(protocol_parameters(cell.input_protocol)))
    assert ds.attrs["protocol_parameters"] == expected

    # Simulation 1, redone here in this process from its spawned seed, is bit-identical
    # to the one a worker process made.
    seed_1 = int(np.random.SeedSequence(4).spawn(2)[1].generate_state(1, np.uint64)[0]) >> 1
    assert int(ds["sim_seed"][1]) == seed_1
    inputs = neuronio_inputs(cell, 300, seed_1)
    stored = store.unpack_inputs(ds["input_spikes"][1].values, len(cell.input_kind))
    assert np.array_equal(stored.astype(bool), np.asarray(inputs, dtype=bool).T)
    direct = simulate(CELL, inputs, seed=seed_1, record_nexus=True)
    assert np.array_equal(ds["soma_v"][1].values, np.asarray(direct.soma_v, dtype=np.float32))
    assert np.array_equal(ds["nexus_v"][1].values, np.asarray(direct.nexus_v, dtype=np.float32))
    n = int(ds["n_spikes"][1])
    assert np.array_equal(ds["spike_times"][1].values[:n], np.sort(direct.spike_times))


def test_real_explicit_silent_inputs_give_no_spikes(tmp_path):
    cell = describe_cell(CELL)
    silent = np.zeros((len(cell.input_kind), 200), dtype=np.uint8)
    np.save(tmp_path / "silent.npy", silent)
    out = cli(["--cell", CELL, "--inputs", str(tmp_path / "silent.npy"), "--scheduler",
               "synchronous", "--out", str(tmp_path / "s.zarr")])  # fmt: skip
    assert out.returncode == 0, out.stderr
    ds = store.open_dataset(tmp_path / "s.zarr")
    assert ds.sizes["simulation"] == 1 and ds.sizes["time"] == 200
    assert int(ds["n_spikes"][0]) == 0
    assert not ds["input_spikes"].values.any()
    # At rest without input the soma stays near its resting potential, far from spiking.
    assert float(ds["soma_v"][0].max()) < -50.0


def test_real_cli_unknown_cell_is_one_line(tmp_path):
    out = cli(["--cell", "no-such-cell", "--out", str(tmp_path / "x.zarr")])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "L5PC" in lines[0]


@pytest.mark.slow
def test_real_resume_after_sigkill_is_bit_identical(tmp_path):
    killed, reference = tmp_path / "killed.zarr", tmp_path / "reference.zarr"
    n = 4
    args = ["--cell", CELL, "--n-sims", str(n), "--duration-ms", "200", "--seed", "9",
            "--workers", "2", "--out", str(killed)]  # fmt: skip
    n_before = kill_once_stored(
        [sys.executable, "-m", "biophys.simulate", *args], killed, 1, timeout_s=300, cwd=REPO
    )
    assert 1 <= n_before < n

    resumed = cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n_before} already stored, {n - n_before} to run" in resumed.stdout

    settings = gen.SimulationSettings(cell=CELL, duration_ms=200)
    gen.generate(reference, n, settings, seed=9, scheduler="synchronous")
    assert_same_data(killed, reference)
