"""Channel kinetics of the NMODL files against the closed forms of docs/l5pc-model.md.

Each channel sits alone in a one-compartment cell; `finitialize(v)` runs its INITIAL
block, which evaluates the rate functions at v. The expected values are computed here
in numpy, directly from the equations of the document.
"""

import numpy as np
import pytest

QT = 2.3 ** ((34 - 21) / 10)
VOLTAGES = (-95.0, -80.0, -65.5, -50.0, -35.0, -20.0, 0.0, 25.0)


def _gate(alpha, beta, q=1.0, gate="m"):
    """Steady state and time constant of a gate from its rates (x∞ = α/(α+β), τ = 1/(α+β)/q)."""
    return {f"{gate}Inf": alpha / (alpha + beta), f"{gate}Tau": 1.0 / (alpha + beta) / q}


def na_transient(v, m_shift, h_shift):
    am = 0.182 * (v + m_shift) / (1 - np.exp(-(v + m_shift) / 6))
    bm = 0.124 * (-v - m_shift) / (1 - np.exp((v + m_shift) / 6))
    ah = -0.015 * (v + h_shift) / (1 - np.exp((v + h_shift) / 6))
    bh = -0.015 * (-v - h_shift) / (1 - np.exp(-(v + h_shift) / 6))
    return {**_gate(am, bm, QT), **_gate(ah, bh, QT, "h")}


def nap(v):
    am = 0.182 * (v + 38) / (1 - np.exp(-(v + 38) / 6))
    bm = 0.124 * (-v - 38) / (1 - np.exp((v + 38) / 6))
    ah = -2.88e-6 * (v + 17) / (1 - np.exp((v + 17) / 4.63))
    bh = 6.94e-6 * (v + 64.4) / (1 - np.exp(-(v + 64.4) / 2.63))
    return {
        "mInf": 1 / (1 + np.exp(-(v + 52.6) / 4.6)),
        "mTau": 6 / (am + bm) / QT,
        "hInf": 1 / (1 + np.exp((v + 48.8) / 10)),
        "hTau": 1 / (ah + bh) / QT,
    }


def k_pst(v):
    vs = v + 10
    mtau = np.where(vs < -50, 1.25 + 175.03 * np.exp(0.026 * vs), 1.25 + 13 * np.exp(-0.026 * vs))
    return {
        "mInf": 1 / (1 + np.exp(-(vs + 1) / 12)),
        "mTau": mtau / QT,
        "hInf": 1 / (1 + np.exp((vs + 54) / 11)),
        "hTau": (360 + (1010 + 24 * (vs + 55)) * np.exp(-(((vs + 75) / 48) ** 2))) / QT,
    }


def k_tst(v):
    vs = v + 10
    return {
        "mInf": 1 / (1 + np.exp(-vs / 19)),
        "mTau": (0.34 + 0.92 * np.exp(-(((vs + 71) / 59) ** 2))) / QT,
        "hInf": 1 / (1 + np.exp((vs + 66) / 10)),
        "hTau": (8 + 49 * np.exp(-(((vs + 73) / 23) ** 2))) / QT,
    }


def skv3_1(v):
    return {
        "mInf": 1 / (1 + np.exp((v - 18.7) / -9.7)),
        "mTau": 4 / (1 + np.exp(-(v + 46.56) / 44.14)),
    }


def im(v):
    a, b = 3.3e-3 * np.exp(0.1 * (v + 35)), 3.3e-3 * np.exp(-0.1 * (v + 35))
    return _gate(a, b, QT)


def ih(v):
    a = 0.00643 * (v + 154.9) / (np.exp((v + 154.9) / 11.9) - 1)
    b = 0.193 * np.exp(v / 33.1)
    return _gate(a, b)


def ca_hva(v):
    am = 0.055 * (-27 - v) / (np.exp((-27 - v) / 3.8) - 1)
    bm = 0.94 * np.exp((-75 - v) / 17)
    ah = 0.000457 * np.exp((-13 - v) / 50)
    bh = 0.0065 / (np.exp((-v - 15) / 28) + 1)
    return {**_gate(am, bm), **_gate(ah, bh, gate="h")}


def ca_lva(v):
    vs = v + 10
    return {
        "mInf": 1 / (1 + np.exp(-(vs + 30) / 6)),
        "mTau": (5 + 20 / (1 + np.exp((vs + 25) / 5))) / QT,
        "hInf": 1 / (1 + np.exp((vs + 80) / 6.4)),
        "hTau": (20 + 50 / (1 + np.exp((vs + 40) / 7))) / QT,
    }


CLOSED_FORMS = {
    "NaTa_t": lambda v: na_transient(v, 38, 66),
    "NaTs2_t": lambda v: na_transient(v, 32, 60),
    "Nap_Et2": nap,
    "K_Pst": k_pst,
    "K_Tst": k_tst,
    "SKv3_1": skv3_1,
    "Im": im,
    "Ih": ih,
    "Ca_HVA": ca_hva,
    "Ca_LVAst": ca_lva,
}


def _compartment(h, *mechs):
    sec = h.Section(name="kinetics")
    sec.L = sec.diam = 10.0
    for mech in mechs:
        sec.insert(mech)
    return sec


@pytest.mark.parametrize("channel", sorted(CLOSED_FORMS))
def test_steady_states_and_time_constants(h, channel):
    sec = _compartment(h, channel)
    seg = sec(0.5)
    for v in VOLTAGES:
        h.finitialize(v)
        expected = CLOSED_FORMS[channel](np.float64(v))
        for name, value in expected.items():
            got = getattr(seg, f"{name}_{channel}")
            assert got == pytest.approx(float(value), rel=1e-9), (channel, name, v)
        # INITIAL puts every gate at its steady state
        assert getattr(seg, f"m_{channel}") == pytest.approx(float(expected["mInf"]), rel=1e-9)


@pytest.mark.parametrize(
    ("channel", "singular_v"),
    [("NaTa_t", -38.0), ("NaTa_t", -66.0), ("NaTs2_t", -32.0), ("Nap_Et2", -17.0), ("Ih", -154.9)],
)
def test_rate_singularities_are_nudged(h, channel, singular_v):
    """At 0/0 voltages the rates are evaluated 1e-4 mV higher instead of returning NaN."""
    sec = _compartment(h, channel)
    h.finitialize(singular_v)
    expected = CLOSED_FORMS[channel](np.float64(singular_v + 1e-4))
    for name in ("mInf", "mTau"):
        got = getattr(sec(0.5), f"{name}_{channel}")
        assert np.isfinite(got)
        # only the gate whose rate is singular is nudged; the other stays within 1e-3
        assert got == pytest.approx(float(expected[name]), rel=1e-3)


def test_sk_e2_calcium_dependence(h):
    sec = _compartment(h, "SK_E2")
    for cai in (1e-9, 1e-7, 5e-5, 1e-4, 4.3e-4, 1e-3, 1e-2):
        sec(0.5).cai = cai  # no mechanism writes cai here, so it stays as set
        h.finitialize(-70)
        floor = max(cai, 1e-7)
        assert sec(0.5).zInf_SK_E2 == pytest.approx(1 / (1 + (0.00043 / floor) ** 4.8), rel=1e-9)


def test_calcium_shell_relaxes_and_integrates_ica(h):
    """dcai/dt = -1e4 ica gamma / (2 F depth) - (cai - minCai) / decay."""
    faraday = 96485.33212
    sec = _compartment(h, "CaDynamics_E2")
    sec.decay_CaDynamics_E2, sec.gamma_CaDynamics_E2 = 50.0, 0.05
    h.cai0_ca_ion = 5e-5
    h.dt = 0.025
    t = h.Vector().record(h._ref_t)
    cai = h.Vector().record(sec(0.5)._ref_cai)
    h.finitialize(-70)
    h.continuerun(100)
    t, cai = t.as_numpy().copy(), cai.as_numpy().copy()
    # no calcium current: exponential relaxation from cai0 to minCai
    np.testing.assert_allclose(cai, 1e-4 + (5e-5 - 1e-4) * np.exp(-t / 50.0), rtol=1e-6)

    sec2 = _compartment(h, "CaDynamics_E2", "Ca_HVA")
    sec2.gCa_HVAbar_Ca_HVA = 0.01
    sec2.decay_CaDynamics_E2, sec2.gamma_CaDynamics_E2 = 50.0, 0.05
    clamp = h.SEClamp(sec2(0.5))
    clamp.dur1, clamp.amp1, clamp.rs = 1e9, 0.0, 1e-3
    t = h.Vector().record(h._ref_t)
    cai = h.Vector().record(sec2(0.5)._ref_cai)
    ica = h.Vector().record(sec2(0.5)._ref_ica)
    h.dt = 0.005
    h.finitialize(-70)
    h.continuerun(20)
    cai, ica = cai.as_numpy().copy(), ica.as_numpy().copy()
    slope = np.diff(cai) / h.dt
    # cnexp integrates the linear ODE exactly over a step with ica held at its new value,
    # which the step's mean calcium reproduces to O(dt^2)
    mean_cai = 0.5 * (cai[:-1] + cai[1:])
    model = -1e4 * ica[1:] * 0.05 / (2 * faraday * 0.1) - (mean_cai - 1e-4) / 50.0
    assert np.abs(ica).max() > 0.1  # a real calcium current flowed
    np.testing.assert_allclose(slope, model, rtol=1e-6)
