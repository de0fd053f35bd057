"""One simulation of a cell under given presynaptic spike trains.

The cell is built once per process (`biophys.cells.get_model`) and fully re-initialised
for every call, so results depend only on the arguments. Input spikes in 1 ms bin k are
delivered at t = k ms through source-less NetCons (``NetCon.event``) queued right after
``finitialize``; an event at t = 0 is delivered like any other.

Recorded: the somatic voltage at 8 samples/ms (returned at 1 ms, the value at the start
of each bin), output spike times from that trace (local maxima above -25 mV, refined by
a parabola through the three samples around the maximum, float64 ms), and optionally the
nexus voltage and the voltage of every dendritic segment at 1 ms.
"""

import numpy as np

from biophys.cells import get_model
from biophys.store import SimulationRecord
from elmbridge.errors import UserError

SAMPLES_PER_MS = 8
SPIKE_THRESHOLD_MV = -25.0


def detect_spikes(
    v: np.ndarray, samples_per_ms: int = SAMPLES_PER_MS, threshold_mv: float = SPIKE_THRESHOLD_MV
) -> np.ndarray:
    """Spike times (ms, float64) of a voltage trace sampled from t = 0.

    A spike is a local maximum above `threshold_mv` (the NeuronIO rule): a sample above
    its predecessor and not below its successor, so that a peak split over two equal
    samples still counts once. Its time is the vertex of the parabola through that
    sample and its neighbours, far more precise than the sampling step.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.size < 3:
        return np.zeros(0)
    mid = v[1:-1]
    peak = (mid > v[:-2]) & (mid >= v[2:]) & (mid > threshold_mv)
    i = np.flatnonzero(peak) + 1
    left, centre, right = v[i - 1], v[i], v[i + 1]
    offset = 0.5 * (left - right) / (left - 2.0 * centre + right)
    return (i + offset) / samples_per_ms


def _check_inputs(spikes, n_inputs: int) -> np.ndarray:
    arr = np.asarray(spikes)
    if arr.ndim != 2 or arr.shape[0] != n_inputs or arr.shape[1] < 1:
        raise UserError(
            f"input_spikes must have shape (n_inputs, T) = ({n_inputs}, T) with T >= 1 "
            f"one-ms bins, got shape {arr.shape}"
        )
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise UserError(f"input_spikes must be 0/1 numbers or booleans, got {arr.dtype}")
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise UserError(
                f"input_spikes must hold only 0 and 1 (one spike at most per 1 ms bin); "
                f"found {arr[row, col]!r} at input {row}, bin {col}"
            )
    return arr.astype(bool)


def _check_options(seed, dt_ms: float, release_probability: float) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    steps = (1.0 / SAMPLES_PER_MS) / dt_ms if dt_ms > 0 else 0.0
    if not (dt_ms > 0 and abs(steps - round(steps)) < 1e-9 and round(steps) >= 1):
        raise UserError(
            f"dt_ms must divide the {1 / SAMPLES_PER_MS} ms recording step "
            f"(e.g. 0.025, 0.0125, 0.0625), got {dt_ms}"
        )
    if not 0.0 <= release_probability <= 1.0:
        raise UserError(f"release_probability must lie in [0, 1], got {release_probability}")


def _seed_release(model, seed: int, release_probability: float) -> None:
    """Set every synapse's release probability and, below 1, seed its random stream.

    Stream ids: two 32-bit words derived from the simulation seed and the input row, so
    each synapse draws an independent, reproducible sequence that restarts every run.
    """
    words = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32)
    for row, syn in enumerate(model.synapses):
        syn.p_release = release_probability
        if release_probability < 1.0:
            syn.release_rng.set_ids(int(words[0]), int(words[1]), row)
            syn.release_rng.set_seq(0)


def simulate(
    cell: str,
    input_spikes: np.ndarray,
    *,
    seed: int,
    dt_ms: float = 0.025,
    cvode: bool = False,
    record_nexus: bool = False,
    record_dendrites: bool = False,
    release_probability: float = 1.0,
    morphology_path: str | None = None,
) -> SimulationRecord:
    """Simulate a cell driven by binary input trains.

    Args:
        cell: a name from `biophys.cells.CELL_NAMES`.
        input_spikes: (n_inputs, T) 0/1 per 1 ms bin, rows in the cell's input order
            (e.g. from `biophys.protocol.neuronio_inputs`).
        seed: the simulation's seed, recorded with the result; it also seeds the release
            draws when `release_probability` < 1.
        dt_ms: fixed time step in ms (must divide 0.125 ms); the step limit with CVode.
        cvode: integrate with NEURON's variable-step CVode instead of fixed steps.
        record_nexus: also return the apical nexus voltage (≈678 µm on the trunk).
        record_dendrites: also return the voltage of every dendritic segment.
        release_probability: probability that an input spike is transmitted, in [0, 1].
        morphology_path: an explicit morphology file instead of Hay's cell1.asc.

    Returns:
        A `SimulationRecord`: input_spikes (T, n_inputs) bool, soma_v (T,) mV at the start
        of each bin, spike_times (float64 ms), seed, and nexus_v (T,) / dend_v
        (T, n_segments) when asked for.

    Raises:
        UserError: unknown cell, wrongly shaped or non-binary input, bad options.
    """
    from neuron import h

    _check_options(seed, dt_ms, release_probability)
    model = get_model(cell, morphology_path)
    spikes = _check_inputs(input_spikes, model.description.n_inputs)
    n_time = spikes.shape[1]
    params = model.params

    h.celsius = params["celsius_degC"]
    h.dt = dt_ms
    h.steps_per_ms = 1.0 / dt_ms
    cv = h.CVode()
    cv.active(1 if cvode else 0)
    _seed_release(model, int(seed), release_probability)

    soma = h.Vector().record(model.cell.soma[0](0.5)._ref_v, 1.0 / SAMPLES_PER_MS)
    nexus = dend = None
    if record_nexus:
        sec, x = model.nexus
        nexus = h.Vector().record(sec(x)._ref_v, 1.0)
    if record_dendrites:
        dend = [h.Vector().record(seg._ref_v, 1.0) for seg in model.cell.segments]

    h.finitialize(params["v_init_mV"])
    rows, bins = np.nonzero(spikes)
    netcons = model.netcons
    for row, t in zip(rows.tolist(), bins.astype(np.float64).tolist(), strict=True):
        netcons[row].event(t)
    h.continuerun(float(n_time))

    v_high = soma.as_numpy()[: n_time * SAMPLES_PER_MS + 1].copy()
    if len(v_high) < n_time * SAMPLES_PER_MS:
        raise RuntimeError(f"NEURON recorded {len(v_high)} somatic samples, fewer than asked")
    record = SimulationRecord(
        input_spikes=spikes.T.copy(),
        soma_v=v_high[: n_time * SAMPLES_PER_MS : SAMPLES_PER_MS].copy(),
        spike_times=detect_spikes(v_high),
        seed=int(seed),
    )
    if nexus is not None:
        record.nexus_v = nexus.as_numpy()[:n_time].copy()
    if dend is not None:
        record.dend_v = np.stack([vec.as_numpy()[:n_time] for vec in dend], axis=1)
    return record
