"""The cochlea model against closed forms, reference loops and small exact cases."""

import numpy as np
import pytest
from scipy import integrate

from biophys.auditory.cochlea import CochleaParams, audio_to_spikes
from biophys.auditory.cochlea import basilar_membrane as bm
from biophys.auditory.cochlea import bushy_cell as bc
from biophys.auditory.cochlea import hair_cell as hc
from biophys.auditory.cochlea.audio import check_audio, normalise_and_window
from elmbridge.errors import UserError

BM = bm.BasilarMembraneParams()


# --- basilar membrane ---------------------------------------------------------------


@pytest.mark.parametrize("freq_hz", [80.0, 1000.0, 9000.0])
@pytest.mark.parametrize("x_cm", [0.4, 1.7, 3.5])
def test_phase_integral_matches_quadrature_of_wave_number(freq_hz, x_cm):
    omega = 2 * np.pi * freq_hz

    def part(fn):
        return integrate.quad(lambda x: fn(bm.wave_number(BM, omega, x)), 0, x_cm, limit=400)[0]

    expected = 2 * bm.wave_number(BM, omega, 0.0) / BM.alpha + part(np.real) + 1j * part(np.imag)
    got = bm.phase_integral(BM, omega, x_cm)
    assert got == pytest.approx(expected, rel=1e-7)


def test_tonotopy_peak_moves_from_apex_to_base_with_frequency():
    freqs = np.geomspace(100.0, 15000.0, 25)
    response = bm.velocity_response(BM, 2 * np.pi * freqs)
    peak_channel = np.argmax(np.abs(response), axis=0)
    assert np.all(np.diff(peak_channel) < 0), peak_channel
    # the range spans most of the membrane: low tones near the apex, high near the base
    assert peak_channel[0] > 0.8 * BM.n_channels and peak_channel[-1] < 0.1 * BM.n_channels


def test_velocity_of_periodic_tone_is_steady_state_response():
    # A tone that is periodic in the FFT window has the exact steady-state response
    # |v|·cos(ωt + arg v); the BM output is that response at every second sample.
    params = bm.BasilarMembraneParams(n_channels=60)
    rate = 48_000.0
    n = bm.fft_length(2400, rate)
    t = np.arange(n) / rate
    freq = 150 * rate / n  # on an FFT bin
    out = bm.velocity(np.cos(2 * np.pi * freq * t), rate, params, n_fft=n)
    v = bm.velocity_response(params, np.array([2 * np.pi * freq]))[:, 0]
    expected = np.abs(v)[:, None] * np.cos(2 * np.pi * freq * t[None, ::2] + np.angle(v)[:, None])
    assert out.shape == (60, n // 2)
    np.testing.assert_allclose(out, expected, atol=2e-5 * np.abs(v).max())


def test_fft_length_is_even_fast_and_long_enough():
    import scipy.fft

    for n in (1, 1000, 12_001, 38_172, 57_601):
        m = bm.fft_length(n, 48_000)
        assert m >= n and m % 2 == 0 and scipy.fft.next_fast_len(m // 2) == m // 2


# --- hair cell ----------------------------------------------------------------------


def _meddis_reference(stimulus: np.ndarray, rate: float, p: hc.HairCellParams) -> np.ndarray:
    """Plain float64 loop over the Euler equations, one channel at a time."""
    dt = 1 / rate
    out = np.empty_like(stimulus, dtype=float)
    for ch, s_ch in enumerate(stimulus):
        s0 = p.a
        k0 = p.g * s0 / (s0 + p.b)
        q = p.y * p.m / (p.y + k0 * p.l / (p.l + p.r))
        c = k0 * q / (p.l + p.r)
        w = p.r * c / p.x
        for n, s in enumerate(s_ch):
            k = p.g * (s + p.a) / (s + p.a + p.b) if s + p.a > 0 else 0.0
            dq = p.y * max(p.m - q, 0.0) + p.x * w - k * q
            dc = k * q - (p.l + p.r) * c
            dw = p.r * c - p.x * w
            q, c, w = q + dt * dq, c + dt * dc, w + dt * dw
            out[ch, n] = p.h * c * dt
    return out


def test_hair_cell_matches_reference_loop():
    rng = np.random.default_rng(3)
    stimulus = rng.normal(0, 200, size=(3, 3000))
    p = hc.HairCellParams()
    got = hc.release_probability(stimulus, 24_000, p)
    np.testing.assert_allclose(got.T, _meddis_reference(stimulus, 24_000, p), rtol=1e-10)


def test_hair_cell_adapts_to_its_closed_form_equilibrium():
    p = hc.HairCellParams()
    rate = 24_000
    levels = np.array([0.0, 20.0, 100.0, 1000.0])
    stimulus = np.repeat(levels[:, None], int(3.0 * rate), axis=1)
    stimulus[:, : int(0.05 * rate)] = 0.0  # silence, then a step
    prob = hc.release_probability(stimulus, rate, p)
    rate_hz = prob * rate
    eq = p.equilibrium(levels)["rate_hz"]
    rest = p.equilibrium(0.0)["rate_hz"]
    np.testing.assert_allclose(rate_hz[0], rest, rtol=1e-12)  # starts at rest
    np.testing.assert_allclose(rate_hz[-1], eq, rtol=1e-6)  # adapts to equilibrium
    onset = rate_hz[int(0.05 * rate) : int(0.06 * rate)].max(axis=0)
    assert np.all(onset[1:] > 1.5 * eq[1:])  # onset rate well above the steady state
    assert np.all(np.diff(eq) > 0)  # and the steady state grows with the level


def test_hair_cell_rejects_too_coarse_steps():
    with pytest.raises(UserError, match="48 kHz"):
        hc.release_probability(np.zeros((2, 10)), 4000, hc.HairCellParams())


# --- fibres and bushy cells ---------------------------------------------------------


def test_fibres_refractory_timing_is_exact_for_certain_spikes():
    p = bc.BushyCellParams()
    rate = 24_000
    counts = bc.fibre_spike_counts(np.ones((80, 2)), rate, p, np.random.default_rng(0))
    # all fibres fire at 0, are silent for 23 steps and fire again at 24, 48, 72
    expected = np.zeros(80, dtype=int)
    expected[::24] = p.n_fibres
    np.testing.assert_array_equal(counts[:, 0], expected)


def test_fibre_rate_matches_dead_time_renewal_closed_form():
    p = bc.BushyCellParams()
    rate, prob, n_steps = 24_000, 0.02, 20_000
    counts = bc.fibre_spike_counts(np.full((n_steps, 50), prob), rate, p, np.random.default_rng(1))
    dead = bc.refractory_steps(p.fibre_refractory_s, rate)
    # mean inter-spike interval of one fibre: (dead - 1) silent steps + 1/p
    expected = p.n_fibres / (dead - 1 + 1 / prob)
    got = counts[1000:].mean()
    assert got == pytest.approx(expected, rel=0.01)
    assert counts.max() <= p.n_fibres


def test_bushy_rate_is_monotonic_in_drive_and_refractory_limited():
    p = bc.BushyCellParams()
    rate, n_steps = 24_000, 4800
    levels = np.arange(0, 41)
    counts = np.repeat(levels[None, :], n_steps, axis=0)
    steps, units = bc.bushy_spikes(counts, rate, p)
    n_spikes = np.bincount(units, minlength=levels.size)
    assert n_spikes[0] == 0
    assert np.all(np.diff(n_spikes) >= 0) and n_spikes[-1] > 0
    # at saturating drive the interval is the refractory period plus one step
    top = steps[units == levels.size - 1]
    assert np.all(np.diff(top) == bc.refractory_steps(p.refractory_s, rate) + 1)


def test_synaptic_drive_matches_reference_loop():
    p = bc.BushyCellParams()
    rate = 24_000
    counts = np.random.default_rng(2).integers(0, 5, size=(500, 3))
    decay = np.exp(-1 / rate / p.tau_syn_s)
    current, expected = np.zeros(3), np.empty((500, 3))
    for n in range(500):
        current = current * decay + counts[n]
        expected[n] = current * p.weight / p.n_fibres / rate
    np.testing.assert_allclose(bc.synaptic_drive(counts, rate, p), expected, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:.*parseAll.*")  # inside Brian2's parser, not ours
def test_bushy_numpy_loop_equals_brian2_network():
    p = bc.BushyCellParams()
    rate = 24_000
    prob = np.random.default_rng(4).uniform(0, 0.03, size=(3000, 40))
    counts = bc.fibre_spike_counts(prob, rate, p, np.random.default_rng(5))
    ours = bc.bushy_spikes(counts, rate, p)
    theirs = bc.bushy_spikes_brian2(counts, rate, p, target="numpy")
    assert ours[0].size > 50
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


# --- the whole pipeline -------------------------------------------------------------

SMALL = CochleaParams(basilar_membrane=bm.BasilarMembraneParams(n_channels=80))


def _tone(freq_hz: float, duration_s: float = 0.3, rate: int = 48_000) -> np.ndarray:
    return np.sin(2 * np.pi * freq_hz * np.arange(int(duration_s * rate)) / rate)


def test_tone_spikes_in_its_tonotopic_channels_and_seed_is_reproducible():
    spikes = audio_to_spikes(_tone(1000.0), 48_000, seed=7, params=SMALL)
    again = audio_to_spikes(_tone(1000.0), 48_000, seed=7, params=SMALL)
    other = audio_to_spikes(_tone(1000.0), 48_000, seed=8, params=SMALL)
    np.testing.assert_array_equal(spikes.times_s, again.times_s)
    np.testing.assert_array_equal(spikes.units, again.units)
    assert not np.array_equal(spikes.units, other.units)
    response = np.abs(bm.velocity_response(SMALL.basilar_membrane, np.array([2 * np.pi * 1e3])))
    best = int(np.argmax(response))
    counts = spikes.counts_per_channel()
    assert abs(int(np.argmax(counts)) - best) <= 0.1 * SMALL.n_channels
    assert np.all(np.diff(spikes.times_s) >= 0)
    assert 0 <= spikes.times_s.min() and spikes.times_s.max() < spikes.duration_s
    assert spikes.binned(0.01).sum() == spikes.units.size


def test_normalise_and_window_sets_level_and_tapers():
    x = normalise_and_window(np.ones(1000), rms=0.3)
    assert x[0] == 0 and x[-1] == 0
    assert x[500] == pytest.approx(0.3, rel=1e-4)
    assert np.allclose(x, x[::-1])


@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.zeros(0), 48_000, "empty"),
        (np.array([0.1, np.nan, 0.2]), 48_000, "NaN or infinite"),
        (np.array([0.1, np.inf, 0.2]), 48_000, "NaN or infinite"),
        (np.zeros(100), 48_000, "silent"),
        (np.ones(100), 22_050, "resample"),
        (np.ones((100, 2)), 48_000, "mono"),
    ],
)
def test_bad_audio_is_a_clear_user_error(audio, rate, match):
    with pytest.raises(UserError, match=match):
        check_audio(audio, rate, 48_000)
    with pytest.raises(UserError, match=match):
        audio_to_spikes(audio, rate, seed=0, params=SMALL)
