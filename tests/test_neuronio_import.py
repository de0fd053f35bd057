"""The NeuronIO pickle importer: round trip, float16 spike-time recovery, resume, safety."""

import fractions
import pickle

import numpy as np
import pytest
import zarr

from biophys import store
from elmbridge.errors import UserError
from surrogate.data import check_inputs_fit, inspect_store
from surrogate.neuronio_import import import_files, recover_spike_times

SECTION_TYPES = ["basal", "basal", "apical"]
SEGMENT_SECTION = [0, 0, 1, 2, 2, 2]
N_SEG, DURATION_S = 6, 6
N_TIME = DURATION_S * 1000
# Exact spike times on the 1/8 ms grid; late ones collide in float16 (4 ms spacing).
SPIKES = [101.125, 700.5, 2050.375, 4500.875, 5100.25, 5102.5, 5200.5, 5201.5]


def fake_simulation(rng, spikes):
    t_high = np.arange(0, N_TIME, 1 / 8, dtype=np.float64)
    v_high = np.full(t_high.shape, -70.0)
    for s in spikes:
        v_high += 100 * np.clip(1 - np.abs(t_high - s) / 0.5, 0, None)
    events = {}
    for kind in ("ex", "inh"):
        events[kind] = {
            np.int64(seg): sorted(rng.choice(N_TIME, 40, replace=False).astype(np.int64).tolist())
            for seg in range(N_SEG)
            if rng.random() < 0.8  # silent segments are absent, as in the originals
        }
    return {
        "recordingTimeHighRes": t_high.astype(np.float32),
        "somaVoltageHighRes": v_high.astype(np.float16),
        "recordingTimeLowRes": np.arange(N_TIME, dtype=np.float32),
        "somaVoltageLowRes": np.interp(np.arange(N_TIME), t_high, v_high).astype(np.float16),
        "nexusVoltageLowRes": rng.normal(-60, 5, N_TIME).astype(np.float16),
        "dendriticVoltagesLowRes": rng.normal(-65, 5, (N_SEG, N_TIME)).astype(np.float16),
        "exInputSpikeTimes": events["ex"],
        "inhInputSpikeTimes": events["inh"],
        "outputSpikeTimes": np.asarray(spikes).astype(np.float16),
    }


def write_file(path, n_sims, seed, extra_params=None, numpy_core=False):
    rng = np.random.default_rng(seed)
    sims = [fake_simulation(rng, SPIKES[: 4 + 2 * k]) for k in range(n_sims)]
    params = {
        "randomSeed": seed,
        "numSimulations": n_sims,
        "totalSimDurationInSec": DURATION_S,
        "excitatorySynapseType": "NMDA",
        "inhibitorySynapseType": "GABA_A",
        "useActiveDendrites": True,
        "Ih_vshift": 0,
        "allSectionsType": SECTION_TYPES,
        "allSegmentsType": [SECTION_TYPES[s] for s in SEGMENT_SECTION],
        "allSegments_SectionInd": SEGMENT_SECTION,
        "allSegmentsLength": [10.0, 10.0, 30.0, 5.0, 5.0, 5.0],
        "allSegments_DistFromSoma": [5.0, 15.0, 15.0, 102.5, 107.5, 112.5],
        **(extra_params or {}),
    }
    blob = pickle.dumps(
        {"Params": params, "Results": {"listOfSingleSimulationDicts": sims}}, protocol=2
    )
    if numpy_core:  # the module name numpy 1.x (and so the original files) wrote
        blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(blob)
    return sims


@pytest.fixture
def sources(tmp_path):
    folder = tmp_path / "neuronio"
    folder.mkdir()
    a = write_file(folder / "a_sim__seed_11.p", 2, seed=11, numpy_core=True)
    b = write_file(folder / "b_sim__seed_12.p", 3, seed=12)
    return folder, a + b


def test_round_trip_and_spike_time_recovery(sources, tmp_path):
    folder, sims = sources
    out = tmp_path / "nio.zarr"
    summary = import_files([folder], out, progress=False)
    assert summary == {"converted": 2, "skipped": 0, "simulations": 5, "float16_spike_times": 0}
    ds = store.open_dataset(out)
    assert ds.sizes["simulation"] == 5 and ds.sizes["time"] == N_TIME
    assert ds["sim_seed"].values.tolist() == [11, 11, 12, 12, 12]
    assert ds["input_kind"].values.tolist() == ["exc"] * N_SEG + ["inh"] * N_SEG
    assert ds["segment_section"].values.tolist() == [
        "dend[0]", "dend[0]", "dend[1]", "apic[0]", "apic[0]", "apic[0]",
    ]  # fmt: skip
    assert np.allclose(ds["segment_x"].values, [0.25, 0.75, 0.5, 1 / 6, 0.5, 5 / 6])
    assert ds["segment_tree"].values.tolist()[2:4] == ["basal", "apical"]
    for i, sim in enumerate(sims):
        one = ds.sel(simulation=i)
        spikes = store.unpack_inputs(one["input_spikes"].values, 2 * N_SEG)
        expected = np.zeros((N_TIME, 2 * N_SEG), np.uint8)
        for offset, key in ((0, "exInputSpikeTimes"), (N_SEG, "inhInputSpikeTimes")):
            for seg, times in sim[key].items():
                expected[times, offset + int(seg)] = 1
        assert np.array_equal(spikes, expected)
        assert np.array_equal(one["soma_v"].values, sim["somaVoltageLowRes"].astype(np.float32))
        assert np.array_equal(one["nexus_v"].values, sim["nexusVoltageLowRes"].astype(np.float32))
        n = int(one["n_spikes"])
        k = i if i < 2 else i - 2  # index within its file
        assert one["spike_times"].values[:n].tolist() == SPIKES[: 4 + 2 * k]
    assert "dend_v" not in ds
    check_inputs_fit(inspect_store(out), 2 * N_SEG, "neuronio")

    raw = tmp_path / "float16.zarr"
    import_files([folder], raw, spike_times="float16", dendrites=True, progress=False)
    ds16 = store.open_dataset(raw)
    last = ds16.sel(simulation=4)
    n = int(last["n_spikes"])
    assert last["spike_times"].values[:n].tolist() == np.float16(SPIKES).astype(float).tolist()
    # 5102.5 ms was stored as 5104; 5200.5 and 5201.5 ms both as 5200.
    assert last["spike_times"].values[n - 3 : n].tolist() == [5104.0, 5200.0, 5200.0]
    assert np.array_equal(
        last["dend_v"].values, sims[4]["dendriticVoltagesLowRes"].T.astype(np.float32)
    )
    with pytest.raises(UserError, match="imported with other options"):
        import_files([folder], raw, progress=False)  # float16 store, recover mode


def test_recovery_keeps_float16_when_unmatched():
    stored = np.float16([100.0, 5000.0])
    t = np.arange(0, 6000, 1 / 8)
    v = np.full(t.shape, -70.0)
    v[t == 100.0] = 10.0  # only the first spike is in the trace
    times, kept = recover_spike_times(stored, t, v)
    assert times.tolist() == [100.0, 5000.0] and kept == 1
    assert recover_spike_times(stored, None, None)[1] == 2


def test_resume_skips_done_files_and_finishes_partial_ones(sources, tmp_path):
    folder, _ = sources
    out = tmp_path / "nio.zarr"
    import_files([folder], out, progress=False)
    before = store.open_dataset(out)["soma_v"].values
    again = import_files([folder], out, progress=False)
    assert (again["skipped"], again["simulations"]) == (2, 0)
    # A kill while writing simulation 3 leaves it unfinished: only it is written again.
    zarr.open_group(out, mode="r+", zarr_format=3)["completed"][3] = False
    resumed = import_files([folder], out, progress=False)
    assert (resumed["converted"], resumed["skipped"], resumed["simulations"]) == (1, 1, 1)
    assert np.array_equal(store.open_dataset(out)["soma_v"].values, before)
    # A new file goes after the earlier ones.
    write_file(folder / "c_sim__seed_13.p", 1, seed=13)
    assert import_files([folder], out, progress=False)["simulations"] == 1
    assert store.open_dataset(out)["sim_seed"].values.tolist() == [11, 11, 12, 12, 12, 13]


def test_refuses_foreign_objects_and_files(tmp_path, cli):
    risky = tmp_path / "risky.p"
    write_file(risky, 1, seed=1, extra_params={"note": fractions.Fraction(1, 3)})
    with pytest.raises(UserError, match=r"fractions\.Fraction.*--trust-pickle"):
        import_files([risky], tmp_path / "x.zarr", progress=False)
    assert (
        import_files([risky], tmp_path / "x.zarr", trust_pickle=True, progress=False)["simulations"]
        == 1
    )
    other = tmp_path / "other.p"
    other.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    done = cli("surrogate.neuronio_import", other, "--out", tmp_path / "y.zarr")
    assert done.returncode == 2 and "not a NeuronIO file" in done.stderr
    done = cli("surrogate.neuronio_import", tmp_path / "absent.p", "--out", tmp_path / "y.zarr")
    assert done.returncode == 2 and "does not exist" in done.stderr
    good = tmp_path / "good"
    good.mkdir()
    write_file(good / "g.p", 2, seed=3)
    done = cli("surrogate.neuronio_import", good, "--out", tmp_path / "z.zarr")
    assert done.returncode == 0, done.stderr
    assert "1 files converted" in done.stdout and "2 in" in done.stdout
