"""Basilar-membrane velocity: the hydrodynamic long-wave cochlea of Sieroka et al. (2006).

The cochlea is a fluid-filled duct of height ``h`` divided by the basilar membrane (BM),
position ``x`` in cm from the base (stapes, x = 0) towards the apex. Each BM point is a
damped oscillator with stiffness ``s(x) = c0·exp(-α·x) - a``, mass ``m`` and damping
``r(x) = de·sqrt(c0·m)·exp(-α·x/2)``, so its dynamic stiffness at angular frequency ω is

    ξ(ω, x) = s(x) - m·ω² - i·ω·r(x).

In the long-wave (shallow-water) limit the pressure difference across the BM obeys
``p'' + g² p = 0`` with local wave number ``g(ω, x) = ω·sqrt(ρ / (h·ξ))``. Its uniform
(Bessel-type) WKB solution travelling towards the apex is

    p(ω, x) = sqrt(G / g) · H0⁽¹⁾(G),    G(ω, x) = 2·g(ω, 0)/α + ∫₀ˣ g(ω, x') dx',

where ``2·g(ω, 0)/α`` is the phase an ideal exponential membrane (stiffness c0·exp(-α·x),
no mass, damping or offset) accumulates from x = -∞ to the base, as in the reference
converter (`lauscher`) that made SHD. The integral has a closed form (below). The BM
velocity per unit stapes input is

    v(ω, x) = 2ω / ξ(ω, x) · p(ω, x) / p(ω, 0) · Z(ω),
    Z(ω) = i·sqrt(2·c0/h) · H0⁽²⁾(z) / H1⁽²⁾(z),   z = (2ω/α)·sqrt(2/(h·c0)),

where Z is the input impedance of the exponential membrane at the stapes. Parameters are
in the cgs units of the paper; the reference uses ρ = 1 and omits ρ from Z.

Closed form of the phase integral: with t = exp(α·x/2) and K = a + m·ω²,
``Q(t) = t²·ξ = c0 - i·ω·r0·t - K·t²`` and

    ∫₀ˣ g dx' = (2ω/α)·sqrt(ρ/h) · (i/√K) · [Log W(t) - Log W(1)],
    W(t) = -2i·√K·√Q(t) - 2K·t - i·ω·r0.

For ω > 0, Im Q < 0 so the principal √Q has Re > 0 and Im W < -ω·r0 < 0: W never crosses
the branch cut of the principal logarithm and the expression is continuous in x.

The model is solved in the frequency domain. `TransferMatrix` holds v(ω_k, x_c) for the
bins of a real FFT of a fixed (fast) length, cached per length; `velocity` applies it to a
clip and returns the BM velocity at half the audio sample rate, as the reference does
(every second sample of the full-rate response).

Reference: Sieroka N, Dosch HG, Rupp A (2006) Semirealistic models of the cochlea.
J Acoust Soc Am 120(1):297-304.
"""

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import special

# Below this magnitude of exp(i·(G(x) - G(0))) a channel's response at that frequency is
# zero to double precision: the wave has died out before reaching x. Skipping the Hankel
# functions there halves the cost of building a transfer matrix.
_NEGLIGIBLE = 1e-18
_BLOCK = 1024  # frequencies per block when building a transfer matrix


@dataclass(frozen=True)
class BasilarMembraneParams:
    """Sieroka (2006) model parameters (cgs units), defaults as used to make SHD.

    Attributes:
        n_channels: number of BM positions (output channels), base first.
        length_cm: position of the last channel; channels lie at linspace(0, length_cm).
        a: stiffness offset, dyn/cm³.
        alpha: stiffness decay rate along the BM, 1/cm.
        rho: fluid density, g/cm³.
        c0: stiffness at the base, dyn/cm³.
        de: damping coefficient (dimensionless; r0 = de·sqrt(c0·m)).
        h: duct height, cm.
        m: BM mass per area, g/cm².
    """

    n_channels: int = 700
    length_cm: float = 3.5
    a: float = 3500.0
    alpha: float = 3.0
    rho: float = 1.0
    c0: float = 10e8
    de: float = 0.15
    h: float = 0.1
    m: float = 0.05

    @property
    def positions_cm(self) -> np.ndarray:
        """Channel positions along the BM, cm from the base."""
        return np.linspace(0.0, self.length_cm, self.n_channels)

    @property
    def r0(self) -> float:
        """Damping at the base, dyn·s/cm³."""
        return self.de * np.sqrt(self.c0 * self.m)


def dynamic_stiffness(p: BasilarMembraneParams, omega: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ξ(ω, x) = s(x) - m·ω² - i·ω·r(x), broadcast over `omega` (rad/s) and `x` (cm)."""
    decay = np.exp(-p.alpha * x / 2.0)
    return p.c0 * decay**2 - p.a - p.m * omega**2 - 1j * omega * p.r0 * decay


def wave_number(p: BasilarMembraneParams, omega: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Local long-wave wave number g(ω, x) = ω·sqrt(ρ/(h·ξ)), 1/cm."""
    return _wave_number(p, omega, dynamic_stiffness(p, omega, x))


def _wave_number(p: BasilarMembraneParams, omega: np.ndarray, xi: np.ndarray) -> np.ndarray:
    return omega * np.sqrt(p.rho / (p.h * xi))


def phase_integral(p: BasilarMembraneParams, omega: np.ndarray, x: np.ndarray) -> np.ndarray:
    """G(ω, x) = 2·g(ω, 0)/α + ∫₀ˣ g(ω, x') dx' in closed form (see module docstring).

    `omega` in rad/s (> 0), `x` in cm; the result broadcasts over both.
    """
    omega = np.asarray(omega, dtype=float)
    k = p.a + p.m * omega**2
    sqrt_k = np.sqrt(k)

    def log_w(t):
        q = p.c0 - 1j * omega * p.r0 * t - k * t**2
        return np.log(-2j * sqrt_k * np.sqrt(q) - 2.0 * k * t - 1j * omega * p.r0)

    t = np.exp(p.alpha * np.asarray(x, dtype=float) / 2.0)
    scale = (2.0 * omega / p.alpha) * np.sqrt(p.rho / p.h) * (1j / sqrt_k)
    return 2.0 * wave_number(p, omega, 0.0) / p.alpha + scale * (log_w(t) - log_w(1.0))


def stapes_impedance(p: BasilarMembraneParams, omega: np.ndarray) -> np.ndarray:
    """Z(ω) = i·sqrt(2·c0/h)·H0⁽²⁾(z)/H1⁽²⁾(z), z = (2ω/α)·sqrt(2/(h·c0))."""
    z = 2.0 * omega / p.alpha * np.sqrt(2.0 / (p.h * p.c0))
    return 1j * np.sqrt(2.0 * p.c0 / p.h) * special.hankel2(0, z) / special.hankel2(1, z)


def velocity_response(p: BasilarMembraneParams, omega: np.ndarray) -> np.ndarray:
    """v(ω, x_c): BM velocity per unit input at every channel, shape (n_channels, n_omega).

    `omega` in rad/s; entries with ω <= 0 are 0 (the membrane does not move at DC).
    """
    omega = np.asarray(omega, dtype=float)
    out = np.zeros((p.n_channels, omega.size), dtype=complex)
    pos = omega > 0
    w = omega[pos]
    x = p.positions_cm[:, None]
    xi = dynamic_stiffness(p, w, x)
    big_g = phase_integral(p, w, x)
    big_g_0 = phase_integral(p, w, 0.0)
    # p(x)/p(0) with H0(G) = hankel1e(G)·exp(iG): the scaled form stays finite when the
    # wave has decayed by more than the double range between the base and x.
    p_0 = np.sqrt(big_g_0 / wave_number(p, w, 0.0)) * special.hankel1e(0, big_g_0)
    travel = np.exp(1j * (big_g - big_g_0))
    alive = np.abs(travel) > _NEGLIGIBLE
    big_g_alive = big_g[alive]
    ratio = np.zeros(alive.shape, dtype=complex)
    ratio[alive] = (
        np.sqrt(big_g_alive / _wave_number(p, np.broadcast_to(w, alive.shape)[alive], xi[alive]))
        * special.hankel1e(0, big_g_alive)
        * travel[alive]
    )
    out[:, pos] = ratio * (2.0 * w / p_0 * stapes_impedance(p, w)) / xi
    return out


def fft_length(
    n_samples: int, sample_rate_hz: float, bucket_s: float = 0.25, tail_s: float = 0.05
) -> int:
    """The FFT length used for a clip of `n_samples`: even, long enough, and fast.

    The clip gets `tail_s` of room for the membrane's ringing after its end (the
    slowest, apical channels ring for tens of ms), so that the circular convolution of
    the FFT does not fold that ringing back onto the clip's start. The length is then
    rounded up to a multiple of `bucket_s` so that clips of similar length share one
    cached transfer matrix, and its half to a fast size for scipy.fft.
    """
    bucket = max(2, round(bucket_s * sample_rate_hz))
    n = n_samples + round(tail_s * sample_rate_hz)
    n = -(-n // bucket) * bucket
    return 2 * scipy.fft.next_fast_len(-(-n // 2))


@functools.lru_cache(maxsize=4)
def transfer_matrix(params: BasilarMembraneParams, n_fft: int, sample_rate_hz: float) -> np.ndarray:
    """v(ω_k, x_c) for the bins of a real FFT of length `n_fft`, (n_channels, n_fft//2+1).

    Cached per (params, length, rate): building one costs seconds, applying it far less.
    Stored as complex64, which is ample for a firing-probability front end and halves the
    memory (about 130 MB for 700 channels and a 1 s clip at 48 kHz).
    """
    omega = 2.0 * np.pi * scipy.fft.rfftfreq(n_fft, 1.0 / sample_rate_hz)
    matrix = np.empty((params.n_channels, omega.size), dtype=np.complex64)
    # In blocks of frequencies: the float64 intermediates of a whole matrix would need
    # gigabytes; blocks keep the peak near the size of the result.
    for start in range(0, omega.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        matrix[:, block] = velocity_response(params, omega[block])
    matrix.setflags(write=False)
    return matrix


def velocity(
    audio: np.ndarray,
    sample_rate_hz: float,
    params: BasilarMembraneParams,
    n_fft: int | None = None,
) -> np.ndarray:
    """BM velocity of every channel for a clip, sampled at half the audio rate.

    Args:
        audio: (n_samples,) sound pressure at the stapes (already normalised/windowed).
        sample_rate_hz: audio sample rate, Hz.
        params: the model.
        n_fft: even FFT length, at least n_samples (default: `fft_length`).

    Returns:
        (n_channels, ceil(n_samples/2)) float32 velocity, sample k at time 2k/sample_rate_hz.
        The clip is zero-padded to `n_fft`; the response after its end is dropped.
    """
    n = audio.shape[-1]
    n_fft = n_fft or fft_length(n, sample_rate_hz)
    if n_fft < n or n_fft % 2:
        raise ValueError(f"n_fft must be even and at least the clip length {n}, got {n_fft}")
    matrix = transfer_matrix(params, n_fft, float(sample_rate_hz))
    spectrum = scipy.fft.rfft(audio, n_fft).astype(np.complex64)
    response = matrix * spectrum[None, :]
    # Every second sample of the full-rate response irfft(response, n_fft): folding bin
    # n_fft/2 onto bin 0 gives it as the real part of a half-length complex inverse FFT.
    half = n_fft // 2
    folded = response[:, :half]
    folded[:, 0] = 0.5 * (response[:, 0] + response[:, half])
    out = scipy.fft.ifft(folded, axis=-1, overwrite_x=True).real
    return np.ascontiguousarray(out[:, : -(-n // 2)])
