"""A toy 'cell' that writes NeuronIO stores without NEURON, for surrogate tests.

The soma integrates the signed input (excitatory +1, inhibitory −1, each input with its
own weight) through a leaky filter (τ = 10 ms); when the voltage crosses −58 mV upward
the cell spikes (spike time interpolated within the bin), the voltage peaks at +20 mV
for one bin and resets. Input rates change every 100 ms, so the output fluctuates.
An ELM neuron can learn this map, so a short fit must improve its loss.
"""

import numpy as np

from biophys import store

V_REST_MV, V_THRESHOLD_MV, V_PEAK_MV, TAU_MS = -70.0, -58.0, 20.0, 10.0


def toy_spec(n_segments: int = 8, n_time: int = 1500, protocol: dict | None = None):
    return store.StoreSpec(
        n_time=n_time,
        input_kind=["exc"] * n_segments + ["inh"] * n_segments,
        input_segment=list(range(n_segments)) * 2,
        segments={
            "section": [f"dend[{i}]" for i in range(n_segments)],
            "x": [0.5] * n_segments,
            "tree": ["basal"] * n_segments,
            "path_distance_um": [20.0 * (i + 1) for i in range(n_segments)],
            "length_um": [20.0] * n_segments,
        },
        protocol=protocol or {"cell": "toy", "n_time": n_time},
    )


def toy_simulation(seed: int, n_segments: int = 8, n_time: int = 1500) -> store.SimulationRecord:
    rng = np.random.default_rng(seed)
    n_blocks = -(-n_time // 100)
    # Per-input rates shrink with the input count so the total drive stays the same.
    scale = min(1.0, 8 / n_segments)
    rate_exc = np.repeat(rng.uniform(0.02, 0.3, n_blocks) * scale, 100)[:n_time]
    rate_inh = rate_exc * np.repeat(rng.uniform(0.2, 1.0, n_blocks), 100)[:n_time]
    exc = rng.random((n_time, n_segments)) < rate_exc[:, None]
    inh = rng.random((n_time, n_segments)) < rate_inh[:, None]
    weights = np.linspace(0.5, 1.5, n_segments)
    drive = (exc * weights).sum(1) - (inh * weights).sum(1)
    kappa = np.exp(-1.0 / TAU_MS)
    v = np.empty(n_time)
    spikes = []
    u = 0.0
    for t in range(n_time):
        previous = u
        u = kappa * u + drive[t]
        if V_REST_MV + u >= V_THRESHOLD_MV:
            # Sub-ms spike time inside bin t, from where the crossing lies between the
            # previous and this sample.
            frac = (V_THRESHOLD_MV - V_REST_MV - previous) / max(u - previous, 1e-9)
            spikes.append(t + float(np.clip(frac, 0.0, 0.999)))
            v[t] = V_PEAK_MV
            u = 0.0
        else:
            v[t] = V_REST_MV + u
    return store.SimulationRecord(
        input_spikes=np.concatenate([exc, inh], axis=1),
        soma_v=v,
        spike_times=np.asarray(spikes),
        seed=seed,
    )


def make_toy_store(path, n_sims: int = 6, n_segments: int = 8, n_time: int = 1500, seed: int = 0):
    """A complete toy store at `path`; returns the records written, by simulation."""
    store.prepare_store(path, toy_spec(n_segments, n_time), n_sims)
    records = {}
    for i in range(n_sims):
        records[i] = toy_simulation(seed * 1000 + i, n_segments, n_time)
        store.write_simulation(path, i, records[i])
    return records
