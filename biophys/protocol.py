"""The NeuronIO input protocol: random, slowly varying presynaptic rates on every segment.

Beniaguev et al. (2021) drove the L5PC with input whose intensity changes piecewise
over time and smoothly over the dendrites (docs/l5pc-model.md, "Input protocol"). Per
simulation:

1. An interval length I is drawn from `INTERVAL_OPTIONS_MS` plus a jitter, and a
   smoothing width σ from `SIGMA_OPTIONS_MS` plus a jitter. The jitter is
   ``int(U(-20, 20))``, truncated toward zero as in the original code (integers -19..19,
   0 twice as likely).
2. Per interval and per tree (basal, apical): excitatory spikes per 100 ms on the whole
   tree ~ U(exc range); inhibitory ~ U(max(0, exc + diff_lo), exc + diff_hi).
3. Each tree's rate is spread over its segments in proportion to (length + 10 µm), and
   every segment's rate is multiplied by U(0.5, 1.5), drawn anew per interval.
4. The piecewise-constant rates on the 1 ms grid are smoothed along time with a
   normalised Gaussian window of 1 + 7σ samples (zero padding, output centred as
   ``scipy.signal.convolve(mode="same")``, as in the original).
5. Each 1 ms bin holds at most one spike. The original drew a per-bin probability
   P ~ Exponential(mean r) and then a spike with probability P (capped at 1); that is
   exactly a Bernoulli draw with p = E[min(1, P)] = r (1 - exp(-1/r)), which is used here.

Everything is vectorised with numpy and drawn from ``numpy.random.default_rng(seed)``.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.signal.windows import gaussian

from elmbridge.errors import UserError

INTERVAL_OPTIONS_MS = (25, 30, 35, 40, 45, 55, 60, 65, 70, 75, 80, 85, 90, 100, 150, 200, 300, 450)
SIGMA_OPTIONS_MS = (25, 30, 35, 40, 50, 60, 80, 100, 150, 200, 300, 400, 500, 600)
JITTER_MS = 20
LENGTH_REGULARISER_UM = 10.0
SPATIAL_FACTOR_RANGE = (0.5, 1.5)
TREES = ("basal", "apical")

# Spikes per 100 ms on a whole tree: excitatory range and (inhibitory - excitatory) range.
# The AMPA ranges are those of the original code, where the apical excitatory range goes
# to 2000 (docs/l5pc-model.md quotes 1900 for both trees).
VARIANTS: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "nmda": {
        "basal": {"exc_per_100ms": (0.0, 800.0), "inh_minus_exc_per_100ms": (-600.0, 200.0)},
        "apical": {"exc_per_100ms": (0.0, 800.0), "inh_minus_exc_per_100ms": (-600.0, 200.0)},
    },
    "ampa": {
        "basal": {"exc_per_100ms": (0.0, 1900.0), "inh_minus_exc_per_100ms": (-1650.0, 150.0)},
        "apical": {
            "exc_per_100ms": (0.0, 2000.0),
            "inh_minus_exc_per_100ms": (-1650.0, 150.0),
        },
    },
}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise UserError(f"unknown input protocol {variant!r}; choose one of {sorted(VARIANTS)}")


def protocol_parameters(variant: str) -> dict[str, Any]:
    """The protocol's constants as a JSON-able dict (recorded with every dataset)."""
    _check_variant(variant)
    return {
        "name": f"neuronio-{variant}",
        "reference": "Beniaguev, Segev & London 2021, Neuron; docs/l5pc-model.md",
        "interval_options_ms": list(INTERVAL_OPTIONS_MS),
        "sigma_options_ms": list(SIGMA_OPTIONS_MS),
        "jitter_ms": "int(U(-20, 20)) truncated toward zero",
        "length_regulariser_um": LENGTH_REGULARISER_UM,
        "spatial_factor_range": list(SPATIAL_FACTOR_RANGE),
        "trees": {
            tree: {k: list(v) for k, v in ranges.items()}
            for tree, ranges in VARIANTS[variant].items()
        },
        "smoothing": "normalised Gaussian window of 1 + 7 sigma samples, mode 'same'",
        "spike_draw": "Bernoulli per 1 ms bin, p = r (1 - exp(-1/r))",
        "bin_ms": 1.0,
    }


@dataclass
class RateDraw:
    """The random rate structure of one simulation (what the spikes are drawn from).

    Attributes:
        interval_ms: length of the constant-rate intervals, ms.
        sigma_ms: width of the Gaussian smoothing, ms.
        tree_rates: {(tree, kind): (n_intervals,) spikes per 100 ms on the whole tree}.
        spatial_factor: {kind: (n_segments, n_intervals) U(0.5, 1.5) multipliers}.
        segment_rates: {kind: (n_segments, T) smoothed expected spikes per 1 ms bin}.
    """

    interval_ms: int
    sigma_ms: int
    tree_rates: dict[tuple[str, str], np.ndarray]
    spatial_factor: dict[str, np.ndarray]
    segment_rates: dict[str, np.ndarray]


def _jitter(rng: np.random.Generator) -> int:
    return int(2 * JITTER_MS * rng.random() - JITTER_MS)


def smoothing_window(sigma_ms: int) -> np.ndarray:
    """The normalised Gaussian window (1 + 7σ samples at 1 ms) used to smooth rates."""
    window = gaussian(int(1 + 7 * sigma_ms), std=sigma_ms)
    return window / window.sum()


def sample_rates(
    segment_length_um: np.ndarray,
    segment_tree: np.ndarray,
    duration_ms: int,
    rng: np.random.Generator,
    variant: str,
) -> RateDraw:
    """Draw one simulation's rate structure (steps 1-4 of the module docstring)."""
    _check_variant(variant)
    lengths = np.asarray(segment_length_um, dtype=np.float64) + LENGTH_REGULARISER_UM
    trees = np.asarray(segment_tree)
    interval = INTERVAL_OPTIONS_MS[rng.integers(len(INTERVAL_OPTIONS_MS))] + _jitter(rng)
    sigma = SIGMA_OPTIONS_MS[rng.integers(len(SIGMA_OPTIONS_MS))] + _jitter(rng)
    n_int = -(-duration_ms // interval)

    tree_rates = {}
    per_um = {kind: np.zeros((len(lengths), n_int)) for kind in ("exc", "inh")}
    for tree in TREES:
        ranges = VARIANTS[variant][tree]
        exc = rng.uniform(*ranges["exc_per_100ms"], size=n_int)
        lo, hi = ranges["inh_minus_exc_per_100ms"]
        inh = rng.uniform(np.maximum(0.0, exc + lo), exc + hi)
        on_tree = trees == tree
        total = lengths[on_tree].sum()
        for kind, rate in (("exc", exc), ("inh", inh)):
            tree_rates[(tree, kind)] = rate
            per_um[kind][on_tree] = rate[None, :] / (total * 100.0)

    window = smoothing_window(sigma)[None, :]
    spatial, smoothed = {}, {}
    for kind in ("exc", "inh"):
        spatial[kind] = rng.uniform(*SPATIAL_FACTOR_RANGE, size=per_um[kind].shape)
        coarse = per_um[kind] * spatial[kind] * lengths[:, None]
        fine = np.repeat(coarse, interval, axis=1)[:, :duration_ms]
        # FFT round-off can leave -1e-20 where the rate is exactly zero.
        smoothed[kind] = np.maximum(fftconvolve(fine, window, mode="same", axes=1), 0.0)
    return RateDraw(interval, sigma, tree_rates, spatial, smoothed)


def spike_probability(rate: np.ndarray) -> np.ndarray:
    """P(spike in a 1 ms bin) = E[min(1, Exp(mean rate))] = r (1 - exp(-1/r))."""
    rate = np.asarray(rate, dtype=np.float64)
    out = np.zeros_like(rate)
    pos = rate > 0
    out[pos] = -rate[pos] * np.expm1(-1.0 / rate[pos])
    return out


def neuronio_inputs(cell, duration_ms: int, seed: int, variant: str | None = None) -> np.ndarray:
    """Presynaptic spike trains of one NeuronIO simulation.

    Args:
        cell: a `biophys.cells.CellDescription` (segment lengths, trees, input order).
        duration_ms: number of 1 ms bins.
        seed: the simulation's seed (non-negative int); same seed, same trains.
        variant: "nmda" or "ampa"; None uses the cell's own protocol.

    Returns:
        (n_inputs, duration_ms) bool, rows in the cell's input order; True marks a spike
        arriving in [k, k + 1) ms.
    """
    variant = cell.input_protocol if variant is None else variant
    _check_variant(variant)
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int | np.integer):
        raise UserError(f"duration_ms must be a whole number of ms, got {duration_ms!r}")
    if duration_ms <= 0:
        raise UserError(f"duration_ms must be positive, got {duration_ms}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    draw = sample_rates(
        cell.segments["length_um"], cell.segments["tree"], int(duration_ms), rng, variant
    )
    spikes = {
        kind: rng.random(draw.segment_rates[kind].shape) < spike_probability(rate)
        for kind, rate in draw.segment_rates.items()
    }
    kinds = np.asarray(cell.input_kind)
    segs = np.asarray(cell.input_segment)
    out = np.empty((len(kinds), int(duration_ms)), dtype=bool)
    for kind in ("exc", "inh"):
        rows = kinds == kind
        out[rows] = spikes[kind][segs[rows]]
    return out
