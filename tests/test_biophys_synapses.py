"""Synapse mechanisms: peak normalisation, Mg2+ block, t = 0 events, seeded release."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from biophys.simulation import _seed_release

MG_MM = 1.0


def double_exp(t, tau_r, tau_d, gmax):
    """Closed form of one event at t = 0, normalised analytically to a peak of gmax."""
    tp = tau_r * tau_d / (tau_d - tau_r) * math.log(tau_d / tau_r)
    peak = math.exp(-tp / tau_d) - math.exp(-tp / tau_r)
    t = np.asarray(t)
    return np.where(t >= 0, gmax * (np.exp(-t / tau_d) - np.exp(-t / tau_r)) / peak, 0.0)


def mg_block(v):
    return 1.0 / (1.0 + np.exp(-0.08 * v) * MG_MM / 3.57)


def _run(h, syn, refs, events, tstop, v_init=-70.0, dt=0.025):
    """Deliver `events` (ms) to `syn` right after finitialize; record `refs` every step.

    With fixed steps NEURON evaluates conductances and currents from the states at the
    start of a step and records them at its end: sample k of an assigned variable holds
    its value at t[k - 1]. Tests therefore compare `x[1:]` with closed forms at `t[:-1]`.
    """
    nc = h.NetCon(None, syn)
    nc.weight[0] = 1.0
    h.dt = dt
    h.CVode().active(0)
    t = h.Vector().record(h._ref_t)
    vecs = [h.Vector().record(ref) for ref in refs]
    h.finitialize(v_init)
    for ev in events:
        nc.event(ev)
    h.continuerun(tstop)
    return t.as_numpy().copy(), [v.as_numpy().copy() for v in vecs]


def _compartment(h):
    sec = h.Section(name="syn")
    sec.L = sec.diam = 20.0
    sec.insert("pas")
    return sec


@pytest.mark.parametrize(
    ("tau_r", "tau_d", "gmax", "e"), [(0.3, 3.0, 0.0004, 0.0), (0.2, 8.0, 0.001, -80.0)]
)
def test_double_exp_peak_is_gmax(h, tau_r, tau_d, gmax, e):
    """AMPA (0.4 nS) and GABA_A (1 nS): one event at t = 0, and another later."""
    sec = _compartment(h)
    syn = h.DoubleExpSyn(sec(0.5))
    syn.tau_r, syn.tau_d, syn.gmax, syn.e = tau_r, tau_d, gmax, e
    t, (g, i, v) = _run(h, syn, [syn._ref_g, syn._ref_i, sec(0.5)._ref_v], [0.0, 60.0], 120.0)
    expected = double_exp(t, tau_r, tau_d, gmax) + double_exp(t - 60.0, tau_r, tau_d, gmax)
    # atol: t accumulates round-off, so the sample at the second event may fall 1e-12 ms early
    np.testing.assert_allclose(g[1:], expected[:-1], rtol=1e-9, atol=1e-9 * gmax)
    # the sampled maximum approaches gmax (exact at the analytic peak time)
    assert g[t < 60].max() == pytest.approx(gmax, rel=1e-3)
    assert g[t >= 60].max() == pytest.approx(gmax, rel=1e-3)
    np.testing.assert_allclose(i[1:], g[1:] * (v[:-1] - e), rtol=1e-12, atol=1e-18)


def test_ampa_nmda_peaks_and_mg_block(h):
    sec = _compartment(h)
    syn = h.AmpaNmdaSyn(sec(0.5))
    refs = [syn._ref_g_AMPA, syn._ref_g_NMDA, syn._ref_mgblock, sec(0.5)._ref_v]
    for v_hold in (-90.0, -60.0, -30.0, 0.0, 20.0):
        sec.e_pas = v_hold
        sec.g_pas = 1.0  # a huge leak pins the voltage near e_pas
        t, (g_ampa, g_nmda, block, v) = _run(h, syn, refs, [0.0], 400.0, v_init=v_hold)
        t0, v0 = t[:-1], v[:-1]
        np.testing.assert_allclose(block[1:], mg_block(v0), rtol=1e-12)
        ampa = double_exp(t0, 0.3, 3.0, 0.0004)
        np.testing.assert_allclose(g_ampa[1:], ampa, rtol=1e-9, atol=1e-15)
        unblocked = double_exp(t0, 2.0, 70.0, 0.0004)
        np.testing.assert_allclose(g_nmda[1:], unblocked * mg_block(v0), rtol=1e-9, atol=1e-15)
        assert g_ampa.max() == pytest.approx(0.0004, rel=1e-3)
        assert (g_nmda / block).max() == pytest.approx(0.0004, rel=1e-3)
        assert v.min() > v_hold - 0.01
    assert mg_block(-90.0) < 0.01 < 0.9 < mg_block(20.0)


def test_event_at_time_zero_does_not_silence_the_synapse(h):
    """The original synapses dropped an event at exactly t = 0, and every later one."""
    sec = _compartment(h)
    syn = h.AmpaNmdaSyn(sec(0.5))
    t, (g0,) = _run(h, syn, [syn._ref_g_AMPA], [0.0, 20.0, 40.0], 61.0)
    t, (g1,) = _run(h, syn, [syn._ref_g_AMPA], [1.0, 21.0, 41.0], 61.0)
    shift = round(1.0 / h.dt)
    np.testing.assert_allclose(g0[:-shift], g1[shift:], rtol=1e-9, atol=1e-15)
    assert g0[t < 20].max() == pytest.approx(0.0004, rel=1e-3)


def _release_pattern(h, syn, n_events, p, seed):
    """Which of `n_events` events (40 ms apart) released, from the jump in state B."""
    _seed_release(SimpleNamespace(synapses=[syn]), seed, p)
    times = np.arange(n_events) * 40.0 + 5.0
    nc = h.NetCon(None, syn)
    nc.weight[0] = 1.0
    h.dt = 0.1
    h.CVode().active(0)
    after = h.Vector(times + 0.5)
    b = h.Vector().record(syn._ref_B, after)
    h.finitialize(-70)
    for ev in times:
        nc.event(ev)
    h.continuerun(times[-1] + 1.0)
    return b.as_numpy().copy()[:n_events] > 0.5  # 1 event: B = factor * exp(-0.5/3) ≈ 1.7


def test_release_probability_is_seeded_and_close_to_p(h):
    sec = _compartment(h)
    syn = h.DoubleExpSyn(sec(0.5))
    n, p = 1500, 0.3
    first = _release_pattern(h, syn, n, p, seed=11)
    again = _release_pattern(h, syn, n, p, seed=11)
    other = _release_pattern(h, syn, n, p, seed=12)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    sd = math.sqrt(p * (1 - p) / n)
    for pattern in (first, other):
        assert abs(pattern.mean() - p) < 4 * sd


def test_full_release_draws_no_random_numbers(h):
    sec = _compartment(h)
    syn = h.DoubleExpSyn(sec(0.5))
    syn.release_rng.set_seq(0)
    assert _release_pattern(h, syn, 50, 1.0, seed=3).all()
    assert syn.release_rng.get_seq() == 0
    syn2 = h.DoubleExpSyn(sec(0.5))
    _release_pattern(h, syn2, 50, 0.5, seed=3)
    assert syn2.release_rng.get_seq() == 50


def test_epsp_clamp_current_peaks_at_imax(h):
    """Hay's EPSP-shaped current: a double exponential from `onset`, peak exactly imax."""
    sec = _compartment(h)
    stim = h.EpspClamp(sec(0.5))
    stim.onset, stim.tau_r, stim.tau_d, stim.imax = 10.0, 0.5, 5.0, 0.5
    h.dt = 0.025
    t = h.Vector().record(h._ref_t)
    i = h.Vector().record(stim._ref_i)
    h.finitialize(-70)
    h.continuerun(60)
    t, i = t.as_numpy().copy(), i.as_numpy().copy()
    # an explicit function of time, evaluated in the middle of each fixed step
    expected = double_exp(t[:-1] + h.dt / 2 - 10.0, 0.5, 5.0, 0.5)
    np.testing.assert_allclose(i[1:], expected, rtol=1e-9, atol=1e-12)
    assert i.max() == pytest.approx(0.5, rel=1e-3)
