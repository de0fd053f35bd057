"""Metrics of the published NeuronIO evaluation (Beniaguev et al. 2021; Spieler et al. 2024).

Spike prediction is scored over all 1 ms bins as a binary classification:

- ``AUC``: area under the ROC curve (trapezoid rule over the curve's vertices).
- ``TP @ f FP``: the true-positive rate at the ROC vertex whose false-positive rate is
  nearest to f (the first vertex, FPR = TPR = 0, is never chosen). Vertices are the
  distinct score thresholds with collinear interior points removed; this is the
  definition behind the released models' ``eval_results.json``.
- ``AUC @ f FP``: the *normalised* partial AUC, the mean true-positive rate over false
  positives in [0, f): (1/f)·∫₀^f TPR(x) dx, so a perfect classifier scores 1 and chance
  scores f/2. It is evaluated exactly as published: TPR linearly interpolated on 20000
  evenly spaced FPR values in [0, 1], averaged over those below the grid point nearest
  to f. (Not the McClish-standardised partial AUC of scikit-learn's ``max_fpr``, which
  maps chance to 0.5; the released d_m = 20 model's 0.202 at f = 0.25 % only fits the
  mean-TPR reading.) The grid average differs from the exact integral by less than one
  grid step's worth of TPR change; `partial_auc_exact` gives the integral.

Soma prediction (mV) is scored after rescaling the prediction to the target's mean and
standard deviation (`rescale_to_target`), as published: RMSE, MAE and the explained
variance 100·(1 − Var(target − prediction)/Var(target)) in percent.
"""

from collections.abc import Sequence

import numpy as np

from elmbridge.errors import UserError

DEFAULT_FPR_LEVELS = (0.0025, 0.01)
PUBLISHED_FPR_GRID = 20000


def _check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise UserError(f"{labels.size} labels but {scores.size} scores")
    if not np.all(np.isfinite(scores)):
        raise UserError("spike scores contain NaN or infinite values; the model diverged")
    if not np.all((labels == 0) | (labels == 1)):
        raise UserError("spike labels must be 0 or 1")
    return labels.astype(bool), scores


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of binary `labels` ranked by `scores` (higher = more likely positive).

    Args:
        labels: 0/1 per bin, any shape.
        scores: real score per bin (logit or probability), same shape.

    Returns:
        fpr, tpr, thresholds: vertices from (0, 0) to (1, 1); vertex k counts the bins
        with score ≥ thresholds[k] as positive (thresholds[0] = +inf). Collinear interior
        vertices are dropped, which changes neither the curve nor its area.

    Raises:
        UserError: no positive or no negative labels (the curve is undefined).
    """
    labels, scores = _check_binary(labels, scores)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise UserError(
            f"the ROC curve needs both spike and no-spike bins; got {n_pos} spike bins of "
            f"{labels.size}"
        )
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    # The last bin of every run of equal scores: one vertex per distinct threshold.
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels, dtype=np.int64)[last]
    fps = last + 1 - tps
    thresholds = scores[last]
    if tps.size > 2:
        bend = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        tps, fps, thresholds = tps[bend], fps[bend], thresholds[bend]
    fpr = np.r_[0, fps] / fps[-1]
    tpr = np.r_[0, tps] / tps[-1]
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve given by its vertices (trapezoid rule)."""
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """True-positive rate at the ROC vertex whose FPR is nearest to `level` (not vertex 0)."""
    index = max(int(np.argmin(np.abs(fpr - level))), 1)
    return float(tpr[index])


def partial_auc(
    fpr: np.ndarray, tpr: np.ndarray, level: float, n_grid: int = PUBLISHED_FPR_GRID
) -> float:
    """Normalised partial AUC below FPR `level`, evaluated on the published grid.

    Mean of TPR, linearly interpolated on `n_grid` evenly spaced FPR values in [0, 1],
    over the grid values before the one nearest to `level` (at least one value).
    """
    grid = np.linspace(0.0, 1.0, n_grid)
    curve = np.interp(grid, fpr, tpr)
    stop = min(max(1, int(np.argmin(np.abs(grid - level)))), n_grid - 1)
    return float(curve[:stop].mean())


def partial_auc_exact(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """(1/level)·∫₀^level TPR(x) dx of the piecewise-linear ROC curve."""
    keep = fpr < level
    x = np.r_[fpr[keep], level]
    y = np.r_[tpr[keep], np.interp(level, fpr, tpr)]
    return float(np.trapezoid(y, x) / level)


def spike_metrics(
    labels: np.ndarray, scores: np.ndarray, fpr_levels: Sequence[float] = DEFAULT_FPR_LEVELS
) -> dict[str, float]:
    """AUC, TP and normalised partial AUC at each FPR level, under the published keys.

    Returns NaN for every entry when the labels hold no spike (or only spikes).
    """
    keys = ["AUC"]
    for level in fpr_levels:
        keys += [f"TP @ {level:.4f} FP", f"AUC @ {level:.4f} FP"]
    labels = np.asarray(labels)
    n_pos = int(np.count_nonzero(labels))
    if n_pos == 0 or n_pos == labels.size:
        return dict.fromkeys(keys, float("nan"))
    fpr, tpr, _ = roc_curve(labels, scores)
    out = {"AUC": roc_auc(fpr, tpr)}
    for level in fpr_levels:
        out[f"TP @ {level:.4f} FP"] = tpr_at_fpr(fpr, tpr, level)
        out[f"AUC @ {level:.4f} FP"] = partial_auc(fpr, tpr, level)
    return out


def rescale_to_target(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The prediction z-scored and mapped to the target's mean and standard deviation.

    Statistics are over all elements (population std). A constant prediction has no
    spread to rescale and is only shifted to the target's mean.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    spread = prediction.std()
    centred = prediction - prediction.mean()
    if spread > 0:
        centred = centred / spread * target.std()
    return centred + target.mean()


def soma_metrics(target_mv: np.ndarray, prediction_mv: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (mV) and explained variance (%) of a (rescaled) soma prediction."""
    target = np.asarray(target_mv, dtype=np.float64).ravel()
    prediction = np.asarray(prediction_mv, dtype=np.float64).ravel()
    if target.shape != prediction.shape:
        raise UserError(f"{target.size} soma targets but {prediction.size} predictions")
    error = target - prediction
    variance = target.var()
    explained = 100.0 * (1.0 - error.var() / variance) if variance > 0 else float("nan")
    return {
        "soma_RMSE": float(np.sqrt(np.mean(error**2))),
        "soma_MAE": float(np.mean(np.abs(error))),
        "soma_explained_variance_percent": float(explained),
    }
