"""Dataset generation: layout, seeds, resume after SIGKILL, extension, CLI errors.

The orchestration is exercised with a fast, deterministic stand-in for NEURON defined
here (`FAKE`): a toy cell with 4 segments and 8 inputs, Bernoulli inputs and a leaky
integrate-and-fire soma. The same tests against the real simulator live in
`test_generate_neuron.py`.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_checks import assert_same_data, kill_once_stored

from biophys import generate as gen
from biophys import store
from elmbridge.errors import UserError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# ---------------------------------------------------------------------------------------
# The stand-in simulator (top level, so that Dask workers can unpickle it)

FAKE_CELLS = ("toy", "toy-ampa")
N_SEG = 4


@dataclass(frozen=True)
class ToyCell:
    name: str
    morphology_name: str
    morphology_sha256: str
    mechanisms_hash: str
    synapse_model: str
    input_protocol: str
    input_kind: tuple
    input_segment: tuple
    segments: dict
    parameters: dict


def fake_describe_cell(name, morphology_path=None):
    if name not in FAKE_CELLS:
        raise UserError(f"unknown cell {name!r}; choose one of {', '.join(FAKE_CELLS)}")
    return ToyCell(
        name=name,
        morphology_name="toy.asc",
        morphology_sha256="0" * 64,
        mechanisms_hash="toy-mechanisms",
        synapse_model="ampa" if name.endswith("ampa") else "ampa_nmda",
        input_protocol="ampa" if name.endswith("ampa") else "nmda",
        input_kind=("exc",) * N_SEG + ("inh",) * N_SEG,
        input_segment=tuple(range(N_SEG)) * 2,
        segments={
            "section": ("dend[0]", "dend[0]", "apic[0]", "apic[1]"),
            "x": (0.25, 0.75, 0.5, 0.5),
            "tree": ("basal", "basal", "apical", "apical"),
            "path_distance_um": (10.0, 30.0, 60.0, 120.0),
            "length_um": (20.0, 20.0, 40.0, 40.0),
        },
        parameters={"tau_ms": 20.0, "threshold_mV": -55.0},
    )


def fake_protocol_parameters(variant):
    return {"variant": variant, "exc_hz": {"nmda": 60.0, "ampa": 90.0}[variant], "inh_hz": 20.0}


def fake_inputs(n_inputs, duration_ms, seed, variant):
    p = fake_protocol_parameters(variant)
    rate_hz = np.where(np.arange(n_inputs) < n_inputs // 2, p["exc_hz"], p["inh_hz"])
    rng = np.random.default_rng(seed)
    return rng.random((n_inputs, duration_ms)) < rate_hz[:, None] / 1000.0


def fake_simulate(inputs, seed, release_probability, record_nexus, record_dendrites):
    """A leaky integrate-and-fire soma driven by released inputs; spikes interpolated."""
    rng = np.random.default_rng([seed, 1])
    released = inputs & (rng.random(inputs.shape) < release_probability)
    n_exc = inputs.shape[0] // 2
    drive = 6.0 * released[:n_exc].sum(0) - 4.0 * released[n_exc:].sum(0)
    v, soma, spikes = -70.0, [], []
    for t, d in enumerate(drive):
        soma.append(v)
        new = v + (-70.0 - v) / 20.0 + d
        if new >= -55.0:
            spikes.append(t + (-55.0 - v) / (new - v))
            new = -70.0
        v = new
    soma = np.array(soma)
    dend = soma[:, None] + np.arange(N_SEG)[None, :] if record_dendrites else None
    return store.SimulationRecord(
        input_spikes=inputs.T.copy(),
        soma_v=soma,
        spike_times=np.array(spikes),
        seed=seed,
        nexus_v=soma + 5.0 if record_nexus else None,
        dend_v=dend,
    )


def fake_run_job(job):
    delay = float(os.environ.get("FAKE_SIM_DELAY_S", "0"))
    if delay:
        time.sleep(delay)
    if str(job.index) == os.environ.get("FAKE_FAIL_AT"):
        raise UserError(f"simulation {job.index} was given values the simulator refuses")
    s = job.settings
    inputs = job.input_spikes()
    if inputs is None:
        inputs = fake_inputs(2 * N_SEG, s.duration_ms, job.seed, s.input_variant)
    return fake_simulate(
        inputs, job.seed, s.release_probability, s.record_nexus, s.record_dendrites
    )


FAKE = gen.Simulator(fake_describe_cell, fake_protocol_parameters, fake_run_job)

# ---------------------------------------------------------------------------------------
# helpers


def settings(**kw):
    return gen.SimulationSettings(**{"cell": "toy", "duration_ms": 200, **kw})


def make(path, n_sims, seed=0, scheduler="synchronous", **kw):
    inputs = kw.pop("inputs", None)
    workers = kw.pop("workers", None)
    return gen.generate(
        path,
        n_sims,
        settings(**kw),
        seed=seed,
        inputs=inputs,
        workers=workers,
        scheduler=scheduler,
        simulator=FAKE,
    )


FAKE_CLI = (
    "import sys\n"
    f"sys.path.insert(0, {str(TESTS)!r})\n"
    "import test_generate\n"
    "from biophys.simulate import main\n"
    "from elmbridge.cli import run_cli\n"
    "run_cli(lambda argv: main(argv, simulator=test_generate.FAKE))\n"
)


def cli(args, **kw):
    return subprocess.run(
        [sys.executable, "-c", FAKE_CLI, *args], capture_output=True, text=True, cwd=REPO, **kw
    )


# ---------------------------------------------------------------------------------------
# seeds and layout


def test_simulation_seed_is_spawned_child_state():
    n = 50
    children = np.random.SeedSequence(12345).spawn(n)
    expected = [int(c.generate_state(1, np.uint64)[0]) >> 1 for c in children]
    got = [gen.simulation_seed(12345, i) for i in range(n)]
    assert got == expected
    assert len(set(got)) == n
    assert all(0 <= s < 2**63 for s in got)
    assert gen.simulation_seed(12346, 0) != got[0]


def test_store_layout_attrs_and_content(tmp_path):
    path = tmp_path / "toy.zarr"
    result = make(path, 3, seed=7, record_nexus=True, record_dendrites=True)
    assert (result.n_simulations, result.n_completed, result.n_run) == (3, 3, 3)

    ds = store.open_dataset(path)
    assert dict(ds.sizes) == {
        "simulation": 3,
        "time": 200,
        "input_byte": 1,
        "spike": 100,
        "input": 8,
        "segment": N_SEG,
    }
    assert ds["dend_v"].dims == ("simulation", "time", "segment")
    assert ds["segment_tree"].values.tolist() == ["basal", "basal", "apical", "apical"]

    attrs = ds.attrs
    for key in (
        "cell",
        "morphology_name",
        "morphology_sha256",
        "mechanisms_hash",
        "protocol_parameters",
        "base_seed",
        "dt_ms",
        "duration_ms",
        "record_nexus",
        "record_dendrites",
        "software",
        "created_utc",
        "history",
    ):
        assert key in attrs, key
    assert attrs["software"]["numpy"] == np.__version__
    assert attrs["protocol_parameters"] == fake_protocol_parameters("nmda")
    protocol = attrs["protocol"]
    assert protocol["cell"]["name"] == "toy"
    assert protocol["inputs"] == {
        "source": "neuronio",
        "variant": "nmda",
        "parameters": fake_protocol_parameters("nmda"),
    }
    assert (protocol["duration_ms"], protocol["base_seed"], protocol["dt_ms"]) == (200, 7, 0.025)
    assert protocol["cvode"] is False and protocol["release_probability"] == 1.0
    assert protocol["record_nexus"] is True and protocol["record_dendrites"] is True
    assert len(attrs["history"]) == 1 and attrs["history"][0]["n_simulations_to_run"] == 3

    # Each slot holds the simulation of its own spawned seed, drawn independently here.
    for i in range(3):
        seed_i = int(np.random.SeedSequence(7).spawn(3)[i].generate_state(1, np.uint64)[0]) >> 1
        assert int(ds["sim_seed"][i]) == seed_i
        expected_inputs = fake_inputs(8, 200, seed_i, "nmda")
        stored = store.unpack_inputs(ds["input_spikes"][i].values, 8).astype(bool)
        assert np.array_equal(stored, expected_inputs.T)
        n = int(ds["n_spikes"][i])
        assert np.all(np.isfinite(ds["spike_times"][i].values[:n]))
        assert np.all(np.isnan(ds["spike_times"][i].values[n:]))

    # The summary rate is the spike count over simulated time, counted independently.
    times = ds["spike_times"].values
    assert result.mean_rate_hz == pytest.approx(np.isfinite(times).sum() / (3 * 0.2))


def test_local_cluster_gives_the_same_store_as_in_process(tmp_path):
    make(tmp_path / "a.zarr", 5, seed=3, scheduler="synchronous")
    make(tmp_path / "b.zarr", 5, seed=3, scheduler=None, workers=2)
    assert_same_data(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_extension_keeps_earlier_simulations(tmp_path):
    small, full = tmp_path / "small.zarr", tmp_path / "full.zarr"
    make(small, 3, seed=11)
    chunk = small / "soma_v" / "c" / "0" / "0"
    before = (chunk.read_bytes(), chunk.stat().st_mtime_ns)
    result = make(small, 6, seed=11)
    assert (result.n_run, result.n_completed) == (3, 6)
    assert (chunk.read_bytes(), chunk.stat().st_mtime_ns) == before  # not rewritten
    make(full, 6, seed=11)
    assert_same_data(small, full)
    assert len(store.open_dataset(small).attrs["history"]) == 2
    assert make(small, 6, seed=11).n_run == 0
    smaller = make(small, 4, seed=11)  # asking for fewer neither runs nor drops anything
    assert (smaller.n_run, smaller.n_simulations, smaller.n_completed) == (0, 6, 6)
    assert len(store.open_dataset(small).attrs["history"]) == 2


def test_extension_with_other_protocol_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    make(path, 2, seed=1)
    with pytest.raises(UserError, match=r"another protocol.*duration_ms: store 200, requested 100"):
        make(path, 4, seed=1, duration_ms=100)
    with pytest.raises(UserError, match=r"base_seed: store 1, requested 2"):
        make(path, 4, seed=2)
    with pytest.raises(UserError, match=r"inputs\.variant: store 'nmda', requested 'ampa'"):
        make(path, 4, seed=1, input_variant="ampa")
    assert store.open_dataset(path, completed_only=False).sizes["simulation"] == 2


def test_explicit_inputs_shared_and_per_simulation(tmp_path):
    rng = np.random.default_rng(0)
    per_sim = rng.random((3, 8, 50)) < 0.1
    np.save(tmp_path / "per_sim.npy", per_sim.astype(np.uint8))
    out = cli(["--cell", "toy", "--inputs", str(tmp_path / "per_sim.npy"), "--out",
               str(tmp_path / "p.zarr"), "--scheduler", "synchronous"])  # fmt: skip
    assert out.returncode == 0, out.stderr
    ds = store.open_dataset(tmp_path / "p.zarr")
    assert ds.sizes["simulation"] == 3 and ds.sizes["time"] == 50  # inferred from the file
    stored = store.unpack_inputs(ds["input_spikes"].values, 8).astype(bool)
    assert np.array_equal(stored, per_sim.transpose(0, 2, 1))
    assert ds.attrs["protocol"]["inputs"]["source"] == "explicit"

    shared = per_sim[0]
    path = tmp_path / "s.zarr"
    inputs = gen.ExplicitInputs(shared, source="test")
    make(path, 2, inputs=inputs, duration_ms=50, release_probability=0.5)
    ds = store.open_dataset(path)
    stored = store.unpack_inputs(ds["input_spikes"].values, 8).astype(bool)
    assert np.array_equal(stored, np.stack([shared.T, shared.T]))
    # Release draws differ between simulations: same inputs, different seeds.
    assert not np.array_equal(ds["soma_v"][0].values, ds["soma_v"][1].values)
    # The same inputs in another dtype and layout are the same protocol: resume works.
    again = gen.ExplicitInputs(np.asfortranarray(shared.astype(np.int64)), source="other")
    assert make(path, 3, inputs=again, duration_ms=50, release_probability=0.5).n_run == 1


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    with gen.store_lock(path), pytest.raises(UserError, match="another run is writing"):
        make(path, 1)
    assert make(path, 1).n_completed == 1


def test_leftover_staging_folder_is_harmless(tmp_path):
    staging = tmp_path / ".s.zarr.creating"
    staging.mkdir()
    (staging / "junk").write_text("from a killed run")
    assert make(tmp_path / "s.zarr", 1).n_completed == 1
    assert not staging.exists()


# ---------------------------------------------------------------------------------------
# resume after SIGKILL


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    killed, reference = tmp_path / "killed.zarr", tmp_path / "reference.zarr"
    n = 10
    args = ["--cell", "toy", "--n-sims", str(n), "--duration-ms", "120", "--seed", "5",
            "--record-nexus", "--release-probability", "0.7", "--workers", "2",
            "--out", str(killed)]  # fmt: skip
    env = {**os.environ, "FAKE_SIM_DELAY_S": "0.25"}
    n_before = kill_once_stored(
        [sys.executable, "-c", FAKE_CLI, *args], killed, 3, timeout_s=60, cwd=REPO, env=env
    )
    assert 3 <= n_before < n, "the kill came too late to test anything"

    resumed = cli(args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n_before} already stored, {n - n_before} to run" in resumed.stdout
    assert f"{n}/{n} simulations" in resumed.stdout
    history = zarr.open_group(killed, mode="r").attrs["history"]
    assert [h["n_simulations_to_run"] for h in history] == [n, n - n_before]

    make(reference, n, seed=5, duration_ms=120, record_nexus=True, release_probability=0.7)
    assert_same_data(killed, reference)


def test_failing_job_is_one_line_and_the_rerun_completes(tmp_path):
    path = tmp_path / "s.zarr"
    args = ["--cell", "toy", "--n-sims", "6", "--duration-ms", "100", "--workers", "1",
            "--out", str(path)]  # fmt: skip
    failed = cli(args, env={**os.environ, "FAKE_FAIL_AT": "4"})
    assert failed.returncode == 2
    last = failed.stderr.strip().splitlines()[-1]
    assert last == "error: simulation 4 was given values the simulator refuses"
    assert "Traceback" not in failed.stderr and "Compute Failed" not in failed.stderr
    kept = store.completed_simulations(path).tolist()
    assert 4 not in kept and set(kept) <= {0, 1, 2, 3, 5}

    rerun = cli(args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} already stored, {6 - len(kept)} to run" in rerun.stdout
    assert store.completed_simulations(path).tolist() == list(range(6))


def test_first_run_that_failed_does_not_pin_the_arguments(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    monkeypatch.setenv("FAKE_FAIL_AT", "0")
    with pytest.raises(UserError, match="simulation 0"):
        make(path, 1, duration_ms=100)
    monkeypatch.delenv("FAKE_FAIL_AT")
    # Nothing was finished, so corrected arguments start the store afresh.
    assert make(path, 2, duration_ms=150).n_completed == 2
    assert store.open_dataset(path).sizes["time"] == 150


# ---------------------------------------------------------------------------------------
# errors through the CLI


def run_main(capsys, args):
    """Run the CLI in-process; return (exit code, stderr)."""
    from biophys.simulate import main
    from elmbridge.cli import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda argv: main(argv, simulator=FAKE), args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture
def bad_paths(tmp_path):
    (tmp_path / "file.zarr").write_text("x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    zarr.open_group(tmp_path / "foreign.zarr", mode="w").attrs["x"] = 1
    np.save(tmp_path / "in_2d.npy", np.zeros((8, 50), np.uint8))
    np.save(tmp_path / "in_3d.npy", np.zeros((3, 8, 50), np.uint8))
    np.save(tmp_path / "rows.npy", np.zeros((7, 50), np.uint8))
    np.save(tmp_path / "values.npy", np.full((8, 50), 2, np.uint8))
    np.save(tmp_path / "floats.npy", np.zeros((8, 50)))
    make(tmp_path / "made.zarr", 1)
    return tmp_path


BAD_ARGS = {
    "unknown cell": (["--cell", "L6PC"], "unknown cell 'L6PC'; choose one of toy, toy-ampa"),
    "out is a file": (["--out", "{d}/file.zarr"], "is a file"),
    "out is a folder": (["--out", "{d}/notes"], "not a zarr store"),
    "foreign zarr": (["--out", "{d}/foreign.zarr"], "not a NeuronIO dataset"),
    "uncreatable": (["--out", "/proc/elmbridge-test/x.zarr"], "cannot create /proc/elmbridge"),
    "unwritable": (["--out", "/proc/x.zarr"], "cannot write to /proc"),
    "zero sims": (["--n-sims", "0"], "positive integer"),
    "sims not a number": (["--n-sims", "many"], "invalid int value"),
    "fractional ms": (["--duration-ms", "250.5"], "whole number of ms"),
    "negative duration": (["--duration-ms", "-5"], "whole number of ms"),
    "negative seed": (["--seed", "-1"], "non-negative"),
    "dt": (["--dt-ms", "0.03"], "does not divide 1 ms"),
    "release": (["--release-probability", "1.5"], "release probability"),
    "workers": (["--workers", "0"], "at least 1"),
    "workers and scheduler": (["--workers", "2", "--scheduler", "tcp://h:1"], "one or the other"),
    "inputs duration": (["--inputs", "{d}/in_2d.npy", "--duration-ms", "60"], "cover 50 ms"),
    "inputs sims": (["--inputs", "{d}/in_3d.npy", "--n-sims", "4"], "hold 3 simulations"),
    "inputs rows": (["--inputs", "{d}/rows.npy"], "7 rows, but toy has 8 inputs"),
    "inputs values": (["--inputs", "{d}/values.npy"], "other than 0 and 1"),
    "inputs dtype": (["--inputs", "{d}/floats.npy"], "dtype float64"),
    "inputs missing": (["--inputs", "{d}/absent.npy"], "does not exist"),
    "inputs and protocol": (["--inputs", "{d}/in_2d.npy", "--input-protocol", "ampa"], "replaces"),
    "other protocol": (
        ["--out", "{d}/made.zarr", "--duration-ms", "300"],
        "another protocol; it cannot be extended with these arguments (duration_ms: store 200",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARGS), ids=list(BAD_ARGS))
def test_bad_input_gives_one_line_and_exit_2(case, bad_paths, capsys):
    extra, message = BAD_ARGS[case]
    # Later options win in argparse, so each case overrides these defaults.
    args = ["--cell", "toy", "--out", str(bad_paths / "new.zarr")]
    args += [a.format(d=bad_paths) for a in extra]
    code, err = run_main(capsys, args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert not (bad_paths / "new.zarr").exists()


def test_missing_out_is_a_one_line_error(capsys):
    code, err = run_main(capsys, ["--cell", "toy"])
    assert code == 2
    assert err.strip().splitlines() == [
        "error: the following arguments are required: --out (see python -m biophys.simulate --help)"
    ]


def test_cli_error_in_a_real_process_has_no_traceback(tmp_path):
    out = cli(["--cell", "nope", "--out", str(tmp_path / "x.zarr")])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: unknown cell 'nope'; choose one of toy, toy-ampa"
    ]


def test_cli_prints_plan_and_summary(tmp_path):
    out = cli(["--cell", "toy", "--n-sims", "2", "--duration-ms", "100", "--out",
               str(tmp_path / "s.zarr"), "--scheduler", "synchronous"])  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("toy: 2 simulations of 100 ms (dt 0.025 ms, inputs: nmda")
    assert lines[1] == "0 already stored, 2 to run on this process (synchronous)"
    ds = store.open_dataset(tmp_path / "s.zarr")
    rate = float(ds["n_spikes"].sum()) / (2 * 0.1)
    assert lines[-1].endswith(f"2/2 simulations, mean firing rate {rate:.2f} Hz")
    assert str(tmp_path / "s.zarr") in lines[-1]


# ---------------------------------------------------------------------------------------
# package surface


def test_open_dataset_is_lazy_and_import_is_light(tmp_path):
    path = tmp_path / "s.zarr"
    make(path, 2, record_dendrites=True)
    code = (
        "import sys, biophys\n"
        f"ds = biophys.open_dataset({str(path)!r})\n"
        "import dask.array as da\n"
        "assert all(isinstance(v.data, da.Array) for v in ds.data_vars.values())\n"
        "assert 'neuron' not in sys.modules, 'import biophys loaded NEURON'\n"
        "print(ds.sizes['simulation'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


def test_measure_scaling_runs_with_any_simulator(tmp_path):
    from benchmarks.biophys_scaling import measure_scaling

    rows = measure_scaling(
        worker_counts=(1,), sims_per_worker=2, duration_ms=100, cell="toy", simulator=FAKE
    )
    (row,) = rows
    assert row["workers"] == 1 and row["n_sims"] == 2
    assert row["sim_s_per_wall_s"] == pytest.approx(0.2 / row["wall_s"])
    assert row["efficiency"] == pytest.approx(1.0)
