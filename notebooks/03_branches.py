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
# # 3. Do dendritic branches matter?
#
# A Branch-ELM sums its synapses per branch before the nonlinear memory sees them. How
# those branches are wired is the routing:
#
# - **neuronio**: windows of neighbouring inputs in NeuronIO's segment order (Spieler et
#   al. 2024), overlapping;
# - **random**: each slot reads a random input;
# - **morphology**: each branch is one real dendritic subtree of the cell
#   (`surrogate/morphology.py`: contiguous pieces of the basal and apical trees, built from
#   the store's segment table; both synapses of a segment on the same branch);
# - **none**: every input is its own branch (a larger model, shown for reference).
#
# The three branched routings are compared at exactly the same parameter count (same
# d_tree and d_brch). A d_tree sweep of the morphology routing asks how many dendritic
# subunits the surrogate needs, and the learned synaptic weights drawn on the morphology
# show where it "listens". Data: `python -m benchmarks.biology` (studies `routing` and
# `d_tree`; tables weights.csv and segments.csv).

# %% tags=["parameters"]
MARGIN = 0.005  # AUC points below the best that still count as "as good"
RESULTS = None  # the results folder; None: $BIOLOGY_RESULTS, else runs/biology_cpu

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmarks.biology_analysis import (
    figures_dir,
    interval_bars,
    load_results,
    margin_table,
    results_dir,
)

results = Path(RESULTS) if RESULTS else results_dir()
figures = figures_dir()
routing = load_results(results, "routing")
d_tree = load_results(results, "d_tree").sort_values("d_tree")
weights = pd.read_csv(results / "weights.csv").dropna(subset=["weight"])
segments = pd.read_csv(results / "segments.csv")
routing_table = routing[["cell", "routing", "d_tree", "d_brch", "n_parameters", "AUC", "soma_RMSE"]]
routing_table.to_csv(figures / "03_routing.csv", index=False)
routing_table

# %% [markdown]
# ## Routing ablation

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
order = routing.sort_values("AUC", ascending=False)
for ax, metric, label in ((axes[0], "AUC", "test spike AUC"),
                          (axes[1], "soma_RMSE", "test soma RMSE (mV)")):
    bars = ax.bar(order["routing"], order[metric], yerr=interval_bars(order, metric), capsize=3,
                  color=["0.6" if r == "none" else "tab:blue" for r in order["routing"]])
    for bar, n in zip(bars, order["n_parameters"]):
        ax.annotate(f"{n:.0f} p.", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set(ylabel=label)
    if metric == "AUC":
        ax.set_ylim(max(0.0, order[metric].min() - 0.05), 1.0)
fig.suptitle(f"{routing['cell'].iloc[0] if len(routing) else ''}: routing at a fixed parameter "
             "count (grey: no branches, its own count)")
fig.savefig(figures / "03_routing.png", dpi=110)
plt.show()

# %% [markdown]
# ## How many dendritic subtrees? (d_tree sweep, morphology routing)

# %%
fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
ax.errorbar(d_tree["d_tree"], d_tree["AUC"], yerr=interval_bars(d_tree, "AUC"), fmt="o-",
            capsize=2)
for _, row in d_tree.iterrows():
    ax.annotate(f"{row['n_parameters']:.0f} p.", (row["d_tree"], row["AUC"]), fontsize=8,
                textcoords="offset points", xytext=(4, -10))
ax.set_xscale("log")
ax.set(xlabel="branches d_tree (dendritic subtrees)", ylabel="test spike AUC")
ax.grid(alpha=0.3)
fig.savefig(figures / "03_d_tree.png", dpi=110)
plt.show()
d_tree_margin = margin_table(d_tree, MARGIN, by="d_tree")
d_tree_margin

# %% [markdown]
# ## Where the surrogate listens: synaptic weights on the morphology
#
# Each dot is a dendritic segment at its position (the reconstruction's x–y projection,
# or a dendrogram for stores without one, as segments.csv says), coloured by the learned
# weight w_s of its excitatory (left) or inhibitory (right) synapse in the
# morphology-routed fit. Lines join each segment to its parent.

# %%
cell = weights["cell"].iloc[0] if len(weights) else None
shape = segments[segments["cell"] == cell].set_index("segment")
layout = shape["layout"].iloc[0] if len(shape) else ""
fig, axes = plt.subplots(1, 2, figsize=(11, 6), layout="constrained", sharex=True, sharey=True)
for ax, kind in zip(axes, ("exc", "inh")):
    mine = weights[weights["kind"] == kind].groupby("segment")["weight"].sum()
    for seg, row in shape.iterrows():
        if row["parent"] >= 0:
            parent = shape.loc[row["parent"]]
            ax.plot([parent["x_um"], row["x_um"]], [parent["y_um"], row["y_um"]], c="0.8", lw=0.8)
    dots = ax.scatter(shape.loc[mine.index, "x_um"], shape.loc[mine.index, "y_um"], c=mine.values,
                      cmap="viridis", s=14, zorder=3)
    fig.colorbar(dots, ax=ax, label=f"w_s ({kind})", shrink=0.7)
    ax.set(title=f"{'excitatory' if kind == 'exc' else 'inhibitory'} synapses",
           xlabel="µm", aspect="equal" if layout.startswith("reconstruction") else "auto")
axes[0].set(ylabel="µm")
fig.suptitle(f"{cell}: learned synaptic weights, morphology routing ({layout})")
fig.savefig(figures / "03_weights_on_morphology.png", dpi=110)
plt.show()

by_tree = weights.merge(shape.reset_index()[["segment", "tree", "path_distance_um"]],
                        on="segment").groupby(["tree", "kind"])["weight"].agg(["mean", "size"])
by_tree

# %% [markdown]
# ## Conclusion
#
# Printed from the tables above (no number is typed in).

# %%
def auc(name):
    part = routing[routing["routing"] == name]
    return float(part["AUC"].iloc[0]) if len(part) else float("nan")

branched = routing[routing["routing"] != "none"]
lines = []
if len(branched):
    best = branched.loc[branched["AUC"].idxmax()]
    lines.append(
        f"At {best['n_parameters']:.0f} parameters the routings score AUC "
        + ", ".join(f"{r} {auc(r):.4f}" for r in branched["routing"])
        + f"; the best is {best['routing']}. Morphology minus NeuronIO: "
        f"{auc('morphology') - auc('neuronio'):+.4f}; morphology minus random: "
        f"{auc('morphology') - auc('random'):+.4f}."
    )
if len(routing[routing["routing"] == "none"]):
    none = routing[routing["routing"] == "none"].iloc[0]
    lines.append(f"Without branches ({none['n_parameters']:.0f} parameters) AUC {none['AUC']:.4f}.")
if len(d_tree_margin):
    row = d_tree_margin.iloc[0]
    lines.append(
        f"d_tree sweep: best AUC {row['best_AUC']:.4f} at d_tree {row['best_d_tree']:.0f}; "
        f"d_tree {row['d_tree_at_margin']:.0f} is within {MARGIN} of it."
    )
if len(weights):
    mean = weights.groupby("kind")["weight"].mean()
    lines.append("Mean learned weight: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()) + ".")
conclusion = "\n".join(lines) or "No routing or d_tree results yet."
(figures / "03_conclusion.txt").write_text(conclusion + "\n")
print(conclusion)
