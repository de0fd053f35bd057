"""Auditory-nerve fibres and the bushy cell that pools them (one per channel).

Each channel has ``n_fibres`` auditory-nerve fibres. A fibre that is not refractory
spikes in a time step with the hair cell's release probability; after a spike it stays
silent for the refractory period. Instead of one Bernoulli draw per fibre, each step
draws the channel's spike count from Binomial(number of non-refractory fibres, p), which
has exactly the same distribution and costs one draw per channel.

The fibres converge on a leaky integrate-and-fire bushy cell (time steps of dt):

    I[n]  = I[n-1]·exp(-dt/τ_syn) + (fibre spikes at step n)
    v[n]  = v[n-1]·exp(-dt/τ_mem) + (w/n_fibres)·dt·I[n]

The cell spikes at step n when v[n] >= threshold; v is then held at 0 (inputs ignored) for
``round(τ_ref/dt)`` steps and integration resumes after them. This is the discrete scheme
of the reference converter (its clamp of v at the threshold only delays the reset).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BushyCellParams:
    """Fibre and bushy-cell constants, defaults as used to make SHD.

    Attributes:
        n_fibres: auditory-nerve fibres converging on each bushy cell.
        fibre_refractory_s: dead time of a fibre after it spikes, s.
        tau_mem_s: membrane time constant of the bushy cell, s.
        tau_syn_s: synaptic current time constant, s.
        refractory_s: dead time of the bushy cell after it spikes, s.
        weight: total synaptic weight of all fibres (each carries weight/n_fibres), 1/s.
        threshold: firing threshold of v (dimensionless).
    """

    n_fibres: int = 40
    fibre_refractory_s: float = 1e-3
    tau_mem_s: float = 1e-3
    tau_syn_s: float = 5e-4
    refractory_s: float = 1e-3
    weight: float = 13e3
    threshold: float = 1.0


def refractory_steps(duration_s: float, sample_rate_hz: float) -> int:
    """A dead time in whole steps (at least 1)."""
    return max(1, round(duration_s * sample_rate_hz))


def fibre_spike_counts(
    probability: np.ndarray,
    sample_rate_hz: float,
    params: BushyCellParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Spike counts of each channel's fibres per step.

    Args:
        probability: (n_steps, n_channels) spike probability of a free fibre per step.
        sample_rate_hz: steps per second.
        params: fibre count and refractory period.
        rng: the random generator (seeded by the caller).

    Returns:
        (n_steps, n_channels) int16 counts, each at most `params.n_fibres`. A fibre that
        spikes at step j may spike again from step j + round(τ_ref/dt) on.
    """
    n_steps, n_ch = probability.shape
    dead = refractory_steps(params.fibre_refractory_s, sample_rate_hz) - 1
    counts = np.zeros((n_steps, n_ch), dtype=np.int16)
    busy = np.zeros(n_ch, dtype=np.int64)  # fibres refractory at this step
    free = np.empty(n_ch, dtype=np.int64)
    p = np.clip(probability, 0.0, 1.0)
    for step in range(n_steps):
        if dead > 0 and step > dead:
            busy -= counts[step - dead - 1]
        np.subtract(params.n_fibres, busy, out=free)
        drawn = rng.binomial(free, p[step])
        counts[step] = drawn
        if dead > 0:
            busy += drawn
    return counts


def bushy_spikes(
    counts: np.ndarray, sample_rate_hz: float, params: BushyCellParams
) -> tuple[np.ndarray, np.ndarray]:
    """Run the bushy LIF cells on fibre spike counts.

    Args:
        counts: (n_steps, n_channels) fibre spikes per step.
        sample_rate_hz: steps per second.
        params: the cell.

    Returns:
        (steps, channels): int64 arrays of the output spikes' step index and channel,
        sorted by step, then channel.
    """
    dt = 1.0 / float(sample_rate_hz)
    n_steps, n_ch = counts.shape
    dead = refractory_steps(params.refractory_s, sample_rate_hz)
    # The synaptic current is linear in the inputs and never reset: filter it for all
    # steps at once, then only the membrane needs a step loop.
    syn_decay = np.exp(-dt / params.tau_syn_s)
    drive = _exponential_filter(counts.astype(np.float64), syn_decay)
    drive *= params.weight / params.n_fibres * dt
    mem_decay = np.exp(-dt / params.tau_mem_s)
    v = np.zeros(n_ch)
    hold = np.zeros(n_ch, dtype=np.int64)  # steps left with v held at 0
    fired = np.zeros((n_steps, n_ch), dtype=bool)
    for step in range(n_steps):
        v *= mem_decay
        v += drive[step]
        held = hold > 0
        v[held] = 0.0
        hold[held] -= 1
        spike = v >= params.threshold
        if spike.any():
            fired[step] = spike
            v[spike] = 0.0
            hold[spike] = dead
    return np.nonzero(fired)


def _exponential_filter(x: np.ndarray, decay: float) -> np.ndarray:
    """y[n] = decay·y[n-1] + x[n] along axis 0 (scipy.signal.lfilter, one pole)."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -decay], x, axis=0)
