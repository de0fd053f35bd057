"""What the biology notebooks compute from the tables of `benchmarks.biology`.

Kept here, not in the notebooks, so that the numbers of their conclusions come from
tested functions: the functional complexity index, the smallest model within a margin
of a cell's best, the network sweeps' best k_e per budget, and the cell's own time
constants they are set beside.
"""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from elmbridge.errors import UserError

# The L5PC's own time constants, ms (docs/l5pc-model.md; Hay et al. 2011): synaptic
# decays, the passive membrane, the Ca²⁺ removal of the apical hot zone and the soma.
CELL_TIME_CONSTANTS_MS = {
    "AMPA decay": 3.0,
    "GABA_A decay": 8.0,
    "membrane (passive)": 33.0,
    "Ca2+ decay, apical": 36.0,
    "NMDA decay": 70.0,
    "Ca2+ decay, soma": 295.0,
}
# Ih activates over tens of ms: drawn as a band, not a line.
IH_RANGE_MS = (10.0, 100.0)

RESULTS_ENV = "BIOLOGY_RESULTS"
FIGURES_ENV = "BIOLOGY_FIGURES"
NETWORK_ENV = "NETWORK_RESULTS"
PUBLISHED_NETWORK = Path(__file__).resolve().parent / "data" / "published_shd_adding.csv"


def fci(auc: float | np.ndarray) -> float | np.ndarray:
    """Functional complexity index, Aizenbud et al. 2024: log10(1000 · (1 − AUC)) / 2.

    A perfect AUC gives −inf; AUC 0.999 gives 0, AUC 0.9 gives 1.
    """
    with np.errstate(divide="ignore"):
        return np.log10(1000.0 * (1.0 - np.asarray(auc, dtype=float))) / 2


def results_dir() -> Path:
    """The results folder of `benchmarks.biology`: $BIOLOGY_RESULTS, else runs/biology_cpu
    under the checkout."""
    env = os.environ.get(RESULTS_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "runs" / "biology_cpu"
    if not (path / "results.csv").is_file():
        raise UserError(
            f"no results.csv in {path}; run `python -m benchmarks.biology` first or set "
            f"${RESULTS_ENV} to its --out folder"
        )
    return path


def figures_dir() -> Path:
    """Where a notebook saves its figures and tables: $BIOLOGY_FIGURES, else figures/
    beside the results."""
    env = os.environ.get(FIGURES_ENV)
    path = Path(env) if env else results_dir() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_results(folder: Path, study: str | None = None) -> pd.DataFrame:
    """The finished rows of results.csv (of one study when given)."""
    table = pd.read_csv(folder / "results.csv")
    table = table[table["status"] == "finished"]
    if study is not None:
        table = table[table["study"] == study]
    return table.reset_index(drop=True)


def interval_bars(rows: pd.DataFrame, metric: str) -> np.ndarray | None:
    """Matplotlib `yerr` (2 × n: below, above) of `metric` from its bootstrap interval
    columns ("<metric> low", "<metric> high"); None when the table has none."""
    if f"{metric} low" not in rows:
        return None
    value = rows[metric].to_numpy(float)
    low, high = rows[f"{metric} low"].to_numpy(float), rows[f"{metric} high"].to_numpy(float)
    # A percentile interval can miss its point estimate by a hair (skewed resamples);
    # matplotlib refuses negative bar lengths, so such a side is drawn as zero.
    return np.maximum(np.stack([value - low, high - value]), 0.0)


def margin_table(rows: pd.DataFrame, margin: float, by: str = "d_m") -> pd.DataFrame:
    """Per cell: the best test AUC, and the smallest model (by `by`) within `margin` of it.

    Args:
        rows: results rows of one study (columns cell, `by`, AUC, soma_RMSE,
            n_parameters, k_e).
        margin: AUC points below the best that still count as good enough.

    Returns:
        one row per cell: best_AUC, best_<by>, <by>_at_margin, AUC_at_margin,
        n_parameters_at_margin, k_e_at_margin, soma_RMSE_at_margin, FCI_best, FCI_at_margin;
        with the rows' bootstrap intervals ("AUC low", "AUC high") also best_AUC_low/high
        and AUC_at_margin_low/high, and <by>_unresolved: the smallest model whose interval
        reaches the best's (its "AUC high" ≥ the best's "AUC low"), the smallest that this
        test set cannot tell apart from the best (NaN without intervals).
    """
    if not margin >= 0:
        raise UserError(f"the margin is a non-negative AUC difference, got {margin}")
    columns = ["cell", "best_AUC", f"best_{by}", f"{by}_at_margin", "AUC_at_margin",
               "n_parameters_at_margin", "k_e_at_margin", "soma_RMSE_at_margin", "FCI_best",
               "FCI_at_margin", "best_AUC_low", "best_AUC_high", "AUC_at_margin_low",
               "AUC_at_margin_high", f"{by}_unresolved"]  # fmt: skip
    out = []
    for cell, group in rows.groupby("cell", sort=False):
        group = group.dropna(subset=["AUC"]).sort_values(by)
        if group.empty:
            continue
        best = group.loc[group["AUC"].idxmax()]
        good = group[group["AUC"] >= best["AUC"] - margin].iloc[0]
        unresolved = math.nan
        if "AUC low" in group and "AUC high" in group and best["AUC low"] == best["AUC low"]:
            reaching = group[group["AUC high"] >= best["AUC low"]]
            unresolved = reaching[by].iloc[0] if len(reaching) else math.nan
        out.append({
            "cell": cell, "best_AUC": best["AUC"], f"best_{by}": best[by],
            f"{by}_at_margin": good[by], "AUC_at_margin": good["AUC"],
            "n_parameters_at_margin": good["n_parameters"], "k_e_at_margin": good.get("k_e"),
            "soma_RMSE_at_margin": good["soma_RMSE"], "FCI_best": float(fci(best["AUC"])),
            "FCI_at_margin": float(fci(good["AUC"])),
            "best_AUC_low": best.get("AUC low", math.nan),
            "best_AUC_high": best.get("AUC high", math.nan),
            "AUC_at_margin_low": good.get("AUC low", math.nan),
            "AUC_at_margin_high": good.get("AUC high", math.nan),
            f"{by}_unresolved": unresolved,
        })  # fmt: skip
    return pd.DataFrame(out, columns=columns)


def load_network_results(path: str | os.PathLike | None = None) -> tuple[pd.DataFrame, str]:
    """Network sweep points as (budget, k_e, test, seed) and where they came from.

    Reads a `benchmarks.sweep` results.csv (columns budget, k_e, test, status, …; the path
    from the argument or $NETWORK_RESULTS), or else the published SHD-Adding table
    (`benchmarks/data/published_shd_adding.csv`: its P is the budget, excluded runs left
    out).
    """
    path = path or os.environ.get(NETWORK_ENV)
    if path:
        table = pd.read_csv(path)
        need = {"budget", "k_e", "test"}
        if not need <= set(table.columns):
            raise UserError(f"{path} lacks the columns {sorted(need - set(table.columns))}")
        if "status" in table:
            table = table[table["status"].isin(["finished", "skipped"])]
        source = str(path)
    else:
        table = pd.read_csv(PUBLISHED_NETWORK)
        table = table[table["exclude"] == 0].rename(columns={"P": "budget", "test_metric": "test"})
        source = f"published SHD-Adding ({PUBLISHED_NETWORK.name})"
    table = table.dropna(subset=["test"])
    seed = table["seed"] if "seed" in table else 0
    return table.assign(seed=seed)[["budget", "k_e", "test", "seed"]], source


def network_optimum(table: pd.DataFrame) -> pd.DataFrame:
    """Per budget: the k_e with the best mean test metric over seeds, and the grid's span."""
    rows = []
    for budget, group in table.groupby("budget"):
        means = group.groupby("k_e")["test"].mean()
        rows.append({"budget": budget, "best_k_e": int(means.idxmax()),
                     "best_test": float(means.max()), "k_e_min": int(means.index.min()),
                     "k_e_max": int(means.index.max()), "n_k_e": len(means)})  # fmt: skip
    return pd.DataFrame(rows)


def budget_for_k_e(optimum: pd.DataFrame, k_e: float) -> float:
    """The budget at which the best network k_e would reach `k_e`, extrapolating a
    power law k_e* ∝ budget^b fitted to the optimum per budget; NaN with fewer than two
    budgets or a slope ≤ 0 (the optimum does not grow with the budget)."""
    if len(optimum) < 2:
        return math.nan
    slope, intercept = np.polyfit(np.log(optimum["budget"]), np.log(optimum["best_k_e"]), 1)
    if slope <= 0:
        return math.nan
    return float(np.exp((math.log(k_e) - intercept) / slope))
