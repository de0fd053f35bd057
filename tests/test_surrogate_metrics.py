"""Metrics of the published NeuronIO protocol against hand-computed and independent values."""

import numpy as np
import pytest
from scipy.stats import rankdata

from surrogate import metrics


def mann_whitney_auc(labels, scores):
    """AUC as P(score of a random positive > a random negative), ties counted half."""
    labels = np.asarray(labels, bool)
    ranks = rankdata(scores)  # average ranks for ties
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_roc_hand_computed():
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.4, 0.1]
    fpr, tpr, thr = metrics.roc_curve(labels, scores)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.8, 0.4, 0.1]
    assert metrics.roc_auc(fpr, tpr) == pytest.approx(0.75)
    # Nearest vertex to FPR 0.4 is FPR 0.5; the first such vertex has TPR 0.5.
    assert metrics.tpr_at_fpr(fpr, tpr, 0.4) == 0.5
    # Vertex 0 is never chosen: FPR 0 → the next vertex at FPR 0 (TPR 0.5).
    assert metrics.tpr_at_fpr(fpr, tpr, 0.0) == 0.5


def test_collinear_vertices_dropped_without_changing_area():
    # Three negatives in a row with distinct scores give collinear vertices.
    labels = [1, 0, 0, 0, 1]
    scores = [5, 4, 3, 2, 1]
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    assert fpr.tolist() == [0, 0, 1, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1]
    assert metrics.roc_auc(fpr, tpr) == pytest.approx(0.5)


def test_auc_matches_mann_whitney_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.03
    scores = np.round(rng.normal(size=5000) + 1.5 * labels, 1)  # many ties
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    assert metrics.roc_auc(fpr, tpr) == pytest.approx(mann_whitney_auc(labels, scores), abs=1e-12)
    assert metrics.roc_auc(*metrics.roc_curve(labels, np.zeros(5000))[:2]) == pytest.approx(0.5)


def test_partial_auc_published_grid():
    # Chance (the diagonal): mean of grid values i/19999 for i < 200 at FPR 1 %.
    fpr, tpr = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    expected = np.mean(np.arange(200) / 19999)
    assert metrics.partial_auc(fpr, tpr, 0.01) == pytest.approx(expected, rel=1e-12)
    assert metrics.partial_auc_exact(fpr, tpr, 0.01) == pytest.approx(0.005)
    # A perfect classifier scores 1 (normalised, not McClish-standardised).
    perfect = metrics.roc_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert metrics.partial_auc(perfect[0], perfect[1], 0.0025) == 1.0


def test_partial_auc_grid_close_to_integral():
    rng = np.random.default_rng(1)
    labels = rng.random(200_000) < 0.01
    scores = rng.normal(size=labels.size) + 2.5 * labels
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    for level in (0.0025, 0.01):
        grid = metrics.partial_auc(fpr, tpr, level)
        exact = metrics.partial_auc_exact(fpr, tpr, level)
        # The grid mean is a left Riemann sum with step 1/19999 over ≈ level·20000 points.
        assert grid == pytest.approx(exact, abs=2.0 / (level * 20000))
        assert 0 < grid <= metrics.tpr_at_fpr(fpr, tpr, level) + 1e-9


def test_spike_metrics_keys_and_degenerate_labels():
    out = metrics.spike_metrics([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    assert set(out) == {
        "AUC", "TP @ 0.0025 FP", "AUC @ 0.0025 FP", "TP @ 0.0100 FP", "AUC @ 0.0100 FP",
    }  # fmt: skip
    assert out["AUC"] == 1.0
    none = metrics.spike_metrics(np.zeros(10), np.arange(10.0))
    assert all(np.isnan(v) for v in none.values())


def test_soma_rescaling_and_errors():
    target = np.array([-70.0, -65.0, -60.0, -55.0])
    # An affine image of the target is rescaled onto it exactly.
    assert np.allclose(metrics.rescale_to_target(3 * target + 7, target), target)
    perfect = metrics.soma_metrics(target, target)
    assert perfect == {
        "soma_RMSE": 0.0,
        "soma_MAE": 0.0,
        "soma_explained_variance_percent": 100.0,
    }
    pred = target + np.array([1.0, -1.0, 2.0, 0.0])
    out = metrics.soma_metrics(target, pred)
    assert out["soma_RMSE"] == pytest.approx(np.sqrt((1 + 1 + 4 + 0) / 4))
    assert out["soma_MAE"] == pytest.approx(1.0)
    # Var(error) with population variance: errors [−1, 1, −2, 0] → mean −0.5 → var 1.25;
    # Var(target) = 31.25.
    assert out["soma_explained_variance_percent"] == pytest.approx(100 * (1 - 1.25 / 31.25))
    # A constant prediction is only shifted to the target mean.
    flat = metrics.rescale_to_target(np.full(4, 3.0), target)
    assert np.allclose(flat, target.mean())
