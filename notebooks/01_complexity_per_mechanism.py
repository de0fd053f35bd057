# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. How much complexity does each mechanism need?
#
# Branch-ELM surrogates of growing memory size d_m were fitted to four variants of the
# L5PC: the NeuronIO cell (`L5PC`, AMPA+NMDA synapses), the same cell without NMDA
# (`L5PC-ampa`), with passive dendrites (`L5PC-passive`) and Hay et al.'s 2011 parameters
# (`L5PC-hay2011`). For each cell we ask: what is the smallest model within a stated
# margin of the best test AUC, and what functional complexity index (FCI, Aizenbud et
# al. 2024: FCI = log10(1000 · (1 − AUC)) / 2) does that imply?
#
# Reference points: Beniaguev et al. 2021 needed a 7-layer TCN for the NMDA cell and one
# hidden layer for the AMPA-only cell; Spieler et al. 2024's Branch-ELM reaches AUC 0.991
# near 8K parameters and saturates around d_m 15–20.
#
# Data: `python -m benchmarks.biology` (study `d_m`, and `point` for the LIF/AdEx
# baselines). This notebook only reads its tables.

# %% tags=["parameters"]
MARGIN = 0.005  # AUC points below a cell's best that still count as "as good"
RESULTS = None  # the results folder; None: $BIOLOGY_RESULTS, else runs/biology_cpu

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import pandas as pd

from benchmarks.biology_analysis import (
    figures_dir,
    interval_bars,
    load_results,
    margin_table,
    results_dir,
)
from surrogate.ablate import PUBLISHED_BRANCH_ELM

results = Path(RESULTS) if RESULTS else results_dir()
figures = figures_dir()
grid = load_results(results, "d_m")
points = load_results(results, "point")
cells = list(dict.fromkeys(grid["cell"]))
print(f"{len(grid)} Branch-ELM fits and {len(points)} point-neuron fits from {results}")
grid[[c for c in ("cell", "d_m", "n_parameters", "AUC", "AUC low", "AUC high", "soma_RMSE",
      "test_spike_bins") if c in grid]]

# %% [markdown]
# ## AUC and soma RMSE against d_m and against the parameter count

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
published = sorted(PUBLISHED_BRANCH_ELM.items())
for col, x in enumerate(("d_m", "n_parameters")):
    for row, metric in enumerate(("AUC", "soma_RMSE")):
        ax = axes[row, col]
        for cell in cells:
            part = grid[grid["cell"] == cell].sort_values(x)
            # Bars: the bootstrap 95 % interval over test simulations (one seed per point).
            ax.errorbar(part[x], part[metric], yerr=interval_bars(part, metric), fmt="o-",
                        capsize=2, label=cell)
        ref = [(d if x == "d_m" else p, auc if metric == "AUC" else rmse)
               for d, (p, auc, rmse) in published]
        ref = [(a, b) for a, b in ref if b is not None]
        ax.plot(*zip(*ref), "s--", c="0.5", label="published Branch-ELM, NeuronIO")
        if x == "n_parameters" and len(points):
            for kind, part in points.groupby("model"):
                ax.scatter(part[x], part[metric], marker="x", s=60, label=f"{kind.upper()} (per cell)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labels at the decades only
        ax.set(xlabel="memory units d_m" if x == "d_m" else "parameters",
               ylabel="test spike AUC" if metric == "AUC" else "test soma RMSE (mV)")
        ax.grid(alpha=0.3)
axes[0, 1].legend(fontsize=8)
fig.suptitle("Branch-ELM surrogates of four L5PC variants")
fig.savefig(figures / "01_complexity.png", dpi=110)
plt.show()

# %% [markdown]
# ## The smallest model within the margin, and the FCI

# %%
margins = margin_table(grid, MARGIN)
margins.to_csv(figures / "01_margin.csv", index=False)
margins

# %%
if len(points):
    baseline = points.pivot_table(index="cell", columns="model", values="AUC")
    baseline.to_csv(figures / "01_point_neurons.csv")
    print(baseline)

# %% [markdown]
# ## Conclusion
#
# Printed from the tables above (no number is typed in).

# %%
def at(cell, column):
    row = margins[margins["cell"] == cell]
    return float(row[column].iloc[0]) if len(row) else float("nan")

lines = [f"Margin: {MARGIN} AUC below each cell's best."]
for cell in margins["cell"]:
    lines.append(
        f"{cell}: best AUC {at(cell, 'best_AUC'):.4f} (d_m {at(cell, 'best_d_m'):.0f}); "
        f"d_m {at(cell, 'd_m_at_margin'):.0f} ({at(cell, 'n_parameters_at_margin'):.0f} "
        f"parameters) is within the margin with AUC {at(cell, 'AUC_at_margin'):.4f}, "
        f"FCI {at(cell, 'FCI_at_margin'):.2f} (95 % interval of the best AUC over test "
        f"simulations {at(cell, 'best_AUC_low'):.4f}–{at(cell, 'best_AUC_high'):.4f})."
    )
    if at(cell, "d_m_unresolved") == at(cell, "d_m_unresolved"):
        spike_bins = grid.loc[grid["cell"] == cell, "test_spike_bins"].max()
        lines.append(
            f"  On its {spike_bins:.0f} test spike bins every d_m from "
            f"{at(cell, 'd_m_unresolved'):.0f} up has an AUC interval that reaches the best's: "
            "those models cannot be told apart by this test set."
        )
nmda, ampa = at("L5PC", "d_m_at_margin"), at("L5PC-ampa", "d_m_at_margin")
if nmda == nmda and ampa == ampa:
    verdict = ("smaller" if ampa < nmda else "not smaller")
    lines.append(
        f"Without NMDA the smallest model within the margin is {verdict}: d_m {ampa:.0f} "
        f"against {nmda:.0f} for the NMDA cell (FCI {at('L5PC-ampa', 'FCI_at_margin'):.2f} "
        f"against {at('L5PC', 'FCI_at_margin'):.2f})."
    )
    un_nmda, un_ampa = at("L5PC", "d_m_unresolved"), at("L5PC-ampa", "d_m_unresolved")
    if un_nmda == un_nmda and un_ampa == un_ampa:
        lines.append(
            f"By the intervals, the smallest model that cannot be told from the best is d_m "
            f"{un_ampa:.0f} without NMDA and d_m {un_nmda:.0f} with it; "
            + ("so removing NMDA lowers the memory needed." if un_ampa < un_nmda else
               "so no difference is resolved at this test size." if un_ampa == un_nmda else
               "so the AMPA-only cell needs more memory units, not fewer.")
        )
    smallest = grid["d_m"].min()
    lines.append(
        "The smallest models: at d_m "
        + f"{smallest:.0f} the test AUC is "
        + ", ".join(
            f"{float(g['AUC'].iloc[0]):.3f} ({cell})"
            for cell, g in grid[grid["d_m"] == smallest].groupby("cell", sort=False)
        )
        + "."
    )
conclusion = "\n".join(lines)
(figures / "01_conclusion.txt").write_text(conclusion + "\n")
print(conclusion)
