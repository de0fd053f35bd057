"""simulate(): records, determinism, t = 0 inputs, release draws, spike times, bad input."""

import numpy as np
import pytest

from biophys import cells, protocol, simulation
from elmbridge.errors import UserError

N_INPUTS = 1278


@pytest.fixture(scope="module")
def desc():
    return cells.describe_cell("L5PC")


def test_spike_times_from_parabolic_peaks():
    t = np.arange(0, 60, 0.125)
    true = np.array([10.37, 25.81, 40.0625])
    v = np.full_like(t, -70.0)
    for t0 in true:  # a parabola exactly: the vertex is recovered to round-off
        near = np.abs(t - t0) < 0.3
        v[near] = 30.0 - 400.0 * (t[near] - t0) ** 2
    got = simulation.detect_spikes(v)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, true, atol=1e-9)

    # Gaussian-shaped spikes: sub-sample precision, far below the 0.125 ms sampling step
    v = -70.0 + sum(100.0 * np.exp(-(((t - t0) / 0.3) ** 2)) for t0 in true)
    np.testing.assert_allclose(simulation.detect_spikes(v), true, atol=0.01)
    # below -25 mV: not a spike; a flat top counts once, at its middle
    assert simulation.detect_spikes(np.minimum(v, -26.0)).size == 0
    flat = simulation.detect_spikes(np.minimum(v, 0.0))
    np.testing.assert_allclose(flat, true, atol=0.1)


def test_records_are_deterministic_and_forget_the_previous_run(desc):
    x = protocol.neuronio_inputs(desc, 80, seed=1)
    kw = {"seed": 1, "record_nexus": True, "record_dendrites": True}
    first = simulation.simulate("L5PC", x, **kw)
    simulation.simulate("L5PC", protocol.neuronio_inputs(desc, 50, seed=2), seed=2)
    again = simulation.simulate("L5PC", x, **kw)
    assert first.input_spikes.shape == (80, N_INPUTS) and first.input_spikes.dtype == bool
    assert np.array_equal(first.input_spikes, x.T)
    assert first.soma_v.shape == (80,) and first.nexus_v.shape == (80,)
    assert first.dend_v.shape == (80, desc.n_segments)
    assert first.spike_times.dtype == np.float64
    assert first.soma_v[0] == pytest.approx(cells.NEURONIO_PARAMETERS["v_init_mV"])
    for name in ("soma_v", "nexus_v", "dend_v", "spike_times"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert first.seed == 1


def _response(desc, rows, times, n_time=60):
    x = np.zeros((N_INPUTS, n_time), dtype=bool)
    for t in times:
        x[rows, t] = True
    return simulation.simulate("L5PC", x, seed=0).soma_v


def test_an_input_at_time_zero_acts_like_any_other(desc):
    """Bin 0 is delivered at t = 0 ms; the original code dropped such inputs for good."""
    rows = np.arange(0, 40)
    rest = _response(desc, [], [])
    at_zero = _response(desc, rows, [0, 30]) - rest
    at_one = _response(desc, rows, [1, 31]) - rest
    for start in (0, 30):
        a = at_zero[start : start + 25]
        b = at_one[start + 1 : start + 26]
        assert a.max() > 1.0  # a real EPSP, several mV
        assert a.max() == pytest.approx(b.max(), rel=0.05)
        assert np.argmax(a) == np.argmax(b)


def test_explicit_synchronous_input_fires_the_cell(desc):
    basal_exc = np.flatnonzero(
        (np.asarray(desc.input_kind) == "exc")
        & (np.asarray(desc.segments["tree"])[np.asarray(desc.input_segment)] == "basal")
    )
    x = np.zeros((N_INPUTS, 60), dtype=np.uint8)  # any 0/1 dtype
    x[basal_exc, 20] = 1
    rec = simulation.simulate("L5PC", x, seed=0)
    assert len(rec.spike_times) >= 1
    assert 20.0 < rec.spike_times[0] < 35.0
    assert rec.spike_times[0] != round(rec.spike_times[0] * 8) / 8  # sub-sample precision


def test_release_probability_is_seeded(desc):
    x = protocol.neuronio_inputs(desc, 60, seed=4)
    full = simulation.simulate("L5PC", x, seed=4)
    half = simulation.simulate("L5PC", x, seed=4, release_probability=0.5)
    half_again = simulation.simulate("L5PC", x, seed=4, release_probability=0.5)
    half_other = simulation.simulate("L5PC", x, seed=5, release_probability=0.5)
    none = simulation.simulate("L5PC", x, seed=4, release_probability=0.0)
    silent = simulation.simulate("L5PC", np.zeros_like(x), seed=4)
    assert np.array_equal(half.soma_v, half_again.soma_v)
    assert not np.array_equal(half.soma_v, half_other.soma_v)
    assert not np.array_equal(half.soma_v, full.soma_v)
    assert np.array_equal(none.soma_v, silent.soma_v)
    # the next default run releases every spike again: nothing carried over
    assert np.array_equal(simulation.simulate("L5PC", x, seed=4).soma_v, full.soma_v)


def test_cvode_agrees_with_fixed_steps_below_threshold(desc):
    x = protocol.neuronio_inputs(desc, 60, seed=6)
    x[:, :] &= np.random.default_rng(0).random(x.shape) < 0.3  # sparse: no output spike
    fixed = simulation.simulate("L5PC", x, seed=6)
    var = simulation.simulate("L5PC", x, seed=6, cvode=True)
    assert len(fixed.spike_times) == 0
    assert np.abs(fixed.soma_v - var.soma_v).max() < 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_spikes": np.zeros((10, 5))}, r"\(1278, T\)"),
        ({"input_spikes": np.zeros((N_INPUTS,))}, r"\(1278, T\)"),
        ({"input_spikes": np.zeros((N_INPUTS, 0))}, r"T >= 1"),
        ({"input_spikes": np.full((N_INPUTS, 5), 2)}, "only 0 and 1"),
        ({"input_spikes": np.full((N_INPUTS, 5), np.nan)}, "only 0 and 1"),
        ({"input_spikes": np.full((N_INPUTS, 5), "a")}, "0/1 numbers"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"dt_ms": 0.1}, "dt_ms"),
        ({"dt_ms": 0.0}, "dt_ms"),
        ({"release_probability": 1.5}, "release_probability"),
        ({"cell": "L6PC"}, "unknown cell"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, message):
    args = {"cell": "L5PC", "input_spikes": np.zeros((N_INPUTS, 5)), "seed": 0, **kwargs}
    cell, spikes = args.pop("cell"), args.pop("input_spikes")
    with pytest.raises(UserError, match=message):
        simulation.simulate(cell, spikes, **args)
