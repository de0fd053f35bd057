"""The NeuronIO input protocol against its definition, with independent computations."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from biophys import protocol
from elmbridge.errors import UserError


def toy_cell(n_basal=12, n_apical=20, seed=0):
    """A description-like object: random segment lengths, NeuronIO input order."""
    rng = np.random.default_rng(seed)
    n = n_basal + n_apical
    return SimpleNamespace(
        segments={
            "length_um": tuple(rng.uniform(2.0, 60.0, n)),
            "tree": ("basal",) * n_basal + ("apical",) * n_apical,
        },
        input_kind=("exc",) * n + ("inh",) * n,
        input_segment=tuple(range(n)) * 2,
        input_protocol="nmda",
    )


def reference_rates(draw, lengths, trees, duration_ms):
    """The smoothed per-segment rates rebuilt with plain loops and numpy.convolve."""
    lengths = np.asarray(lengths) + 10.0
    trees = np.asarray(trees)
    sigma = draw.sigma_ms
    m = int(1 + 7 * sigma)
    n = np.arange(m)
    window = np.exp(-0.5 * ((n - (m - 1) / 2.0) / sigma) ** 2)
    window /= window.sum()
    out = {}
    for kind in ("exc", "inh"):
        rates = np.zeros((len(lengths), duration_ms))
        for i in range(len(lengths)):
            total = lengths[trees == trees[i]].sum()
            fine = np.zeros(duration_ms)
            for k, tree_rate in enumerate(draw.tree_rates[(trees[i], kind)]):
                per_ms = tree_rate / (total * 100.0) * lengths[i] * draw.spatial_factor[kind][i, k]
                fine[k * draw.interval_ms : (k + 1) * draw.interval_ms] = per_ms
            full = np.convolve(fine, window, mode="full")
            start = (m - 1) // 2  # scipy's mode="same" centring
            rates[i] = full[start : start + duration_ms]
        out[kind] = rates
    return out


@pytest.mark.parametrize("variant", ["nmda", "ampa"])
def test_smoothed_rates_match_a_reference_loop(variant):
    cell = toy_cell()
    for seed in range(4):
        draw = protocol.sample_rates(
            cell.segments["length_um"],
            cell.segments["tree"],
            1500,
            np.random.default_rng(seed),
            variant,
        )
        want = reference_rates(draw, cell.segments["length_um"], cell.segments["tree"], 1500)
        for kind in ("exc", "inh"):
            np.testing.assert_allclose(draw.segment_rates[kind], want[kind], atol=1e-12)


def test_interval_and_sigma_options_with_jitter():
    intervals, sigmas = [], []
    cell = toy_cell(2, 2)
    for seed in range(400):
        draw = protocol.sample_rates(
            cell.segments["length_um"],
            cell.segments["tree"],
            100,
            np.random.default_rng(seed),
            "nmda",
        )
        intervals.append(draw.interval_ms)
        sigmas.append(draw.sigma_ms)
    for values, options in (
        (intervals, protocol.INTERVAL_OPTIONS_MS),
        (sigmas, protocol.SIGMA_OPTIONS_MS),
    ):
        jitter = [min(abs(v - o) for o in options) for v in values]
        assert max(jitter) <= 19
        assert any(j > 10 for j in jitter)  # the jitter is really there


@pytest.mark.parametrize("variant", ["nmda", "ampa"])
def test_tree_rates_per_interval_follow_the_ranges(variant):
    cell = toy_cell()
    exc, diff = {t: [] for t in protocol.TREES}, {t: [] for t in protocol.TREES}
    for seed in range(100):
        draw = protocol.sample_rates(
            cell.segments["length_um"],
            cell.segments["tree"],
            3000,
            np.random.default_rng(seed),
            variant,
        )
        for tree in protocol.TREES:
            e, i = draw.tree_rates[(tree, "exc")], draw.tree_rates[(tree, "inh")]
            assert len(e) == math.ceil(3000 / draw.interval_ms)
            lo, hi = protocol.VARIANTS[variant][tree]["inh_minus_exc_per_100ms"]
            assert np.all(i >= np.maximum(0.0, e + lo)) and np.all(i <= e + hi)
            exc[tree].append(e)
            diff[tree].append(i - e)
    for tree in protocol.TREES:
        e = np.concatenate(exc[tree])
        lo, hi = protocol.VARIANTS[variant][tree]["exc_per_100ms"]
        assert e.min() >= lo and e.max() <= hi
        # uniform on [lo, hi]: mean and variance
        assert e.mean() == pytest.approx((lo + hi) / 2, rel=0.03)
        assert e.var() == pytest.approx((hi - lo) ** 2 / 12, rel=0.08)
        # where the lower bound is not clipped at 0, inh - exc is uniform on [dlo, dhi]
        dlo, dhi = protocol.VARIANTS[variant][tree]["inh_minus_exc_per_100ms"]
        d = np.concatenate(diff[tree])[e + dlo >= 0]
        assert d.mean() == pytest.approx((dlo + dhi) / 2, abs=0.05 * (dhi - dlo))


def test_spike_probability_equals_the_original_exponential_draw():
    """The original: P ~ Exponential(mean r), spike if U < P; here p = r (1 - e^(-1/r))."""
    rng = np.random.default_rng(5)
    for r in (0.002, 0.05, 0.4, 2.0):
        prob = rng.exponential(scale=r, size=400_000)
        empirical = (rng.random(prob.size) < prob).mean()
        assert protocol.spike_probability(np.array([r]))[0] == pytest.approx(empirical, abs=4e-3)
    assert protocol.spike_probability(np.array([0.0]))[0] == 0.0


def test_spikes_spread_in_proportion_to_length():
    """Over simulations, a tree's long segments get spikes in proportion to length + 10 µm.

    With as many segments as the L5PC, per-bin probabilities stay far below 1, where
    p = r (1 - e^(-1/r)) is linear in the rate. Segments are split by length into two
    halves per tree, and the halves' spike totals compared with their total lengths.
    """
    cell = toy_cell(150, 200)
    lengths = np.asarray(cell.segments["length_um"]) + 10.0
    trees = np.asarray(cell.segments["tree"])
    n_seg = len(lengths)
    counts = np.zeros(2 * n_seg)
    for seed in range(10):
        counts += protocol.neuronio_inputs(cell, 2000, seed).sum(axis=1)
    for kind_counts in (counts[:n_seg], counts[n_seg:]):
        for tree in protocol.TREES:
            idx = np.flatnonzero(trees == tree)
            idx = idx[np.argsort(lengths[idx])]
            short, long = idx[: len(idx) // 2], idx[len(idx) // 2 :]
            spikes_ratio = kind_counts[long].sum() / kind_counts[short].sum()
            length_ratio = lengths[long].sum() / lengths[short].sum()
            assert spikes_ratio == pytest.approx(length_ratio, rel=0.03)
            assert length_ratio > 2.0  # the test would be blind to equal lengths


def test_tree_totals_match_the_drawn_rates():
    """Total spikes of a tree = sum of its per-bin spike probabilities (binomial check)."""
    cell = toy_cell()
    trees = np.asarray(cell.segments["tree"])
    for seed in range(5):
        spikes = protocol.neuronio_inputs(cell, 3000, seed)
        draw = protocol.sample_rates(
            cell.segments["length_um"], trees, 3000, np.random.default_rng(seed), "nmda"
        )
        n = len(trees)
        for kind, rows in (("exc", slice(0, n)), ("inh", slice(n, 2 * n))):
            p = protocol.spike_probability(draw.segment_rates[kind])
            for tree in protocol.TREES:
                on = trees == tree
                expected, var = p[on].sum(), (p[on] * (1 - p[on])).sum()
                got = spikes[rows][on].sum()
                assert abs(got - expected) < 5 * math.sqrt(var) + 1


def test_inputs_are_deterministic_binary_and_ordered():
    cell = toy_cell()
    a = protocol.neuronio_inputs(cell, 500, seed=7)
    b = protocol.neuronio_inputs(cell, 500, seed=7)
    c = protocol.neuronio_inputs(cell, 500, seed=8)
    assert a.dtype == bool and a.shape == (64, 500)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the AMPA variant drives harder
    ampa = protocol.neuronio_inputs(cell, 2000, seed=1, variant="ampa")
    nmda = protocol.neuronio_inputs(cell, 2000, seed=1, variant="nmda")
    assert ampa.sum() > nmda.sum()


def test_l5pc_rates_are_in_the_neuronio_range():
    """On the real cell: about 400 excitatory spikes per 100 ms per tree on average."""
    from biophys.cells import describe_cell

    d = describe_cell("L5PC")
    trees = np.asarray(d.segments["tree"])[np.asarray(d.input_segment)]
    kinds = np.asarray(d.input_kind)
    per_100ms = {key: [] for key in ("basal", "apical")}
    for seed in range(4):
        x = protocol.neuronio_inputs(d, 5000, seed)
        for tree in per_100ms:
            rows = (trees == tree) & (kinds == "exc")
            # the Gaussian smoothing leaks rate past both ends: skip 1 s at each end
            per_100ms[tree].append(x[rows, 1000:4000].sum() / 30.0)
    for tree, values in per_100ms.items():
        assert 250 < np.mean(values) < 550, (tree, values)


def test_bad_arguments():
    cell = toy_cell()
    with pytest.raises(UserError, match="input protocol"):
        protocol.neuronio_inputs(cell, 100, 0, variant="gaba")
    with pytest.raises(UserError, match="positive"):
        protocol.neuronio_inputs(cell, 0, 0)
    with pytest.raises(UserError, match="whole number"):
        protocol.neuronio_inputs(cell, 10.5, 0)
    with pytest.raises(UserError, match="seed"):
        protocol.neuronio_inputs(cell, 100, -1)
    with pytest.raises(UserError, match="input protocol"):
        protocol.protocol_parameters("x")
    params = protocol.protocol_parameters("nmda")
    assert params["trees"]["basal"]["exc_per_100ms"] == [0.0, 800.0]
    import json

    json.dumps(params)
