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
    drive = synaptic_drive(counts, sample_rate_hz, params)
    mem_decay = np.exp(-dt / params.tau_mem_s)
    v = np.zeros(n_ch)
    # Steps until the cell integrates again; v is held at 0 while this is positive.
    hold = np.zeros(n_ch, dtype=np.int64)
    free = np.empty(n_ch, dtype=bool)
    spike = np.empty(n_ch, dtype=bool)
    fired = np.zeros((n_steps, n_ch), dtype=bool)
    for step in range(n_steps):
        v *= mem_decay
        v += drive[step]
        hold -= 1
        np.less_equal(hold, 0, out=free)
        v *= free
        np.greater_equal(v, params.threshold, out=spike)
        if spike.any():
            fired[step] = spike
            v[spike] = 0.0
            hold[spike] = dead + 1
    return np.nonzero(fired)


def _exponential_filter(x: np.ndarray, decay: float) -> np.ndarray:
    """y[n] = decay·y[n-1] + x[n] along axis 0 (scipy.signal.lfilter, one pole)."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -decay], x, axis=0)


def synaptic_drive(
    counts: np.ndarray, sample_rate_hz: float, params: BushyCellParams
) -> np.ndarray:
    """(w/n_fibres)·dt·I[n]: the membrane increment per step from the fibre counts."""
    dt = 1.0 / float(sample_rate_hz)
    drive = _exponential_filter(counts.astype(np.float64), np.exp(-dt / params.tau_syn_s))
    drive *= params.weight / params.n_fibres * dt
    return drive


def brian2_bushy_cells(drive, n_channels: int, sample_rate_hz: float, params: BushyCellParams):
    """The bushy cells as a Brian2 `NeuronGroup` fed by `drive`, a `TimedArray` (channel i).

    The same discrete scheme as `bushy_spikes`: a `run_regularly` operation decays v,
    adds the drive unless the cell spiked within the last round(τ_ref/dt) steps, and
    Brian2's threshold and reset do the rest. One definition serves the runtime
    cross-check below and the standalone build of benchmarks/cochlea_bushy_backends.py.
    """
    import brian2 as b2

    dt = 1.0 / float(sample_rate_hz)
    dead = refractory_steps(params.refractory_s, sample_rate_hz)
    cells = b2.NeuronGroup(
        n_channels,
        "v : 1",
        threshold="v >= threshold",
        reset="v = 0",
        refractory=dead * dt * b2.second,
        dt=dt * b2.second,
        namespace={
            "drive": drive,
            "mem_decay": np.exp(-dt / params.tau_mem_s),
            "dead": dead,
            "threshold": params.threshold,
        },
    )
    cells.run_regularly(
        "v = (v*mem_decay + drive(t, i)) * int(timestep(t - lastspike, dt) > dead)",
        when="start",
    )
    return cells


def bushy_spikes_brian2(
    counts: np.ndarray, sample_rate_hz: float, params: BushyCellParams, target: str = "cython"
) -> tuple[np.ndarray, np.ndarray]:
    """`bushy_spikes` written as a Brian2 network (`brian2_bushy_cells`), as a cross-check.

    `target` is Brian2's code-generation target ("cython" compiles once, ≈20 s, then
    caches; "numpy" needs no compiler). The numpy `bushy_spikes` is what the pipeline
    uses: it is as fast or faster for 700 cells (see benchmarks/cochlea_bushy_backends.py).

    Returns:
        (steps, channels) of the output spikes, sorted like `bushy_spikes`.
    """
    import brian2 as b2

    dt = 1.0 / float(sample_rate_hz)
    n_steps, n_ch = counts.shape
    old_target = b2.prefs.codegen.target
    b2.prefs.codegen.target = target
    try:
        drive = b2.TimedArray(synaptic_drive(counts, sample_rate_hz, params), dt=dt * b2.second)
        cells = brian2_bushy_cells(drive, n_ch, sample_rate_hz, params)
        monitor = b2.SpikeMonitor(cells)
        net = b2.Network(cells, monitor)
        net.run(n_steps * dt * b2.second, namespace={})
        steps = np.round(np.asarray(monitor.t / b2.second) * sample_rate_hz).astype(np.int64)
        units = np.asarray(monitor.i, dtype=np.int64)
    finally:
        b2.prefs.codegen.target = old_target
    order = np.lexsort((units, steps))
    return steps[order], units[order]
