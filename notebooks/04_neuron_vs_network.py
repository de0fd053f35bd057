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
# # 4. From one neuron to the network
#
# Notebook 1 finds how much per-neuron complexity k_e (every parameter of an ELM neuron
# but its synaptic weights) a surrogate of the L5PC needs to come within a margin of its
# best fit. The network sweeps (`benchmarks.tradeoff`, `benchmarks.scaling`; README
# "Scaling and trade-off sweeps") find which k_e is best for an ELM Network at a fixed
# parameter budget on a task. Are these the same complexity, and if not, how far apart
# are they and what would close the gap?
#
# Both k_e count the same things, each for its own readout: the MLP and the memory
# readout (a surrogate reads out 2 channels, spike and soma; a hidden network neuron one
# output and an offset), never the synapses (`elmnet/params.py`).
#
# Inputs: results.csv of `benchmarks.biology` (study `d_m`) and a network sweep's
# results.csv (columns budget, k_e, test, seed, status; path in $NETWORK_RESULTS or the
# parameter below). Without one, the published SHD-Adding sweep at P ≈ 77K
# (`benchmarks/data/published_shd_adding.csv`) is used.

# %% tags=["parameters"]
MARGIN = 0.005  # as in notebook 1
RESULTS = None  # the biology results folder; None: $BIOLOGY_RESULTS, else runs/biology_cpu
NETWORK = None  # a network sweep's results.csv; None: $NETWORK_RESULTS, else the published table

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.biology_analysis import (
    budget_for_k_e,
    figures_dir,
    load_network_results,
    load_results,
    margin_table,
    network_optimum,
    results_dir,
)

results = Path(RESULTS) if RESULTS else results_dir()
figures = figures_dir()
margins = margin_table(load_results(results, "d_m"), MARGIN)
network, source = load_network_results(NETWORK)
optimum = network_optimum(network)
print(f"network sweep: {source}, {len(network)} runs at {optimum['budget'].nunique()} budget(s)")
surrogate_k_e = margins[["cell", "d_m_at_margin", "k_e_at_margin", "AUC_at_margin"]]
surrogate_k_e

# %%
optimum

# %% [markdown]
# ## The two complexities side by side

# %%
fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
for budget, part in network.groupby("budget"):
    means = part.groupby("k_e")["test"].mean()
    ax.scatter([budget] * len(means), means.index, c=means.values, cmap="viridis", s=30,
               vmin=network["test"].min(), vmax=network["test"].max())
ax.plot(optimum["budget"], optimum["best_k_e"], "r*-", ms=14, label="network: best k_e per budget")
for (_, row), colour in zip(surrogate_k_e.iterrows(), plt.cm.tab10.colors):
    ax.axhline(row["k_e_at_margin"], ls="--", c=colour,
               label=f"surrogate {row['cell']}: k_e at the margin (d_m {row['d_m_at_margin']:.0f})")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set(xlabel="network parameter budget P", ylabel="per-neuron complexity k_e")
ax.legend(fontsize=7)
fig.savefig(figures / "04_k_e.png", dpi=110)
plt.show()

table = optimum.assign(
    **{f"ratio_{c}": k / optimum["best_k_e"]
       for c, k in zip(surrogate_k_e["cell"], surrogate_k_e["k_e_at_margin"])}
)
table.to_csv(figures / "04_k_e_table.csv", index=False)
table

# %% [markdown]
# ## Conclusion
#
# Printed from the tables above (no number is typed in). "Ratio" is the surrogate's
# k_e at the margin over the network's best k_e at a budget.

# %%
lines = [f"Network data: {source}."]
l5pc = surrogate_k_e[surrogate_k_e["cell"] == "L5PC"]
k_cell = float(l5pc["k_e_at_margin"].iloc[0]) if len(l5pc) else float("nan")
if k_cell == k_cell:
    lines.append(f"The L5PC surrogate needs k_e {k_cell:.0f} (d_m "
                 f"{l5pc['d_m_at_margin'].iloc[0]:.0f}) to be within {MARGIN} AUC of its best.")
for _, row in optimum.iterrows():
    lines.append(
        f"At budget {row['budget']:.0f} the network's best k_e is {row['best_k_e']:.0f} "
        f"(test {row['best_test']:.3f}; grid {row['k_e_min']:.0f}–{row['k_e_max']:.0f}): the "
        f"surrogate's is {k_cell / row['best_k_e']:.1f}× that."
    )
reach = budget_for_k_e(optimum, k_cell) if k_cell == k_cell else math.nan
if reach == reach:
    lines.append(f"Extrapolating the best k_e over the budgets as a power law, networks would "
                 f"prefer the surrogate's k_e near a budget of {reach:.3g} parameters.")
else:
    lines.append("With fewer than two budgets (or a best k_e that does not grow with the "
                 "budget) the budget that would close the gap cannot be extrapolated; the "
                 "scaling sweep over budgets settles it.")
conclusion = "\n".join(lines)
(figures / "04_conclusion.txt").write_text(conclusion + "\n")
print(conclusion)
