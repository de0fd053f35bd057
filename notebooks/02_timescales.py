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
# # 2. Which timescales matter?
#
# An ELM neuron's memory units decay with time constants τ_m, log-spaced over
# [1 ms, τ_max] and, when learnable, trained. Three measurements ask which timescales
# the surrogate of each cell uses:
#
# 1. fits with learnable τ_m: where the learned τ_m lie, beside the cell's own time
#    constants (AMPA 3 ms, GABA_A 8 ms, passive membrane ≈ 33 ms, apical Ca²⁺ 36 ms,
#    NMDA 70 ms, somatic Ca²⁺ 295 ms, Ih tens of ms);
# 2. a τ_max ablation: the test AUC when no memory may be slower than τ_max;
# 3. freezing at evaluation (`surrogate.timescales`): the AUC lost when the memory units
#    with τ_m above a cut-off are held at zero in an already fitted model.
#
# The question: does the NMDA cell need memories of ≳ 50–100 ms, and the AMPA-only cell
# not? Data: `python -m benchmarks.biology` (studies `learn_tau`, `tau_max`, `d_m`;
# tables learned_tau.csv and freeze.csv).

# %% tags=["parameters"]
LONG_MS = 50.0  # "long" memories: τ above this
MARGIN = 0.005  # AUC points below a cell's best that still count as "as good"
RESULTS = None  # the results folder; None: $BIOLOGY_RESULTS, else runs/biology_cpu

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmarks.biology_analysis import (
    CELL_TIME_CONSTANTS_MS,
    IH_RANGE_MS,
    figures_dir,
    interval_bars,
    load_results,
    margin_table,
    results_dir,
)

results = Path(RESULTS) if RESULTS else results_dir()
figures = figures_dir()
# The tables exist with their headers even before their fits finish (partial results).
learned = pd.read_csv(results / "learned_tau.csv").dropna(subset=["tau_ms"])
learned = learned.astype({"tau_ms": float, "tau_init_ms": float})
freeze = pd.read_csv(results / "freeze.csv").dropna(subset=["AUC"])
freeze = freeze.astype({"tau_cut_ms": float, "AUC": float, "AUC_lost": float})
tau_max = load_results(results, "tau_max")
print(f"{learned['cell'].nunique()} learnable-τ fits, {len(tau_max)} τ_max points, "
      f"{freeze['point'].nunique()} fits frozen at evaluation")

# %% [markdown]
# ## Learned τ_m against the cell's time constants

# %%
def reference_lines(ax):
    ax.axvspan(*IH_RANGE_MS, color="0.9", label="Ih (tens of ms)")
    for (name, tau), colour in zip(CELL_TIME_CONSTANTS_MS.items(), plt.cm.tab10.colors):
        ax.axvline(tau, ls=":", c=colour, label=f"{name} {tau:g} ms")

cells = list(dict.fromkeys(learned["cell"]))
fig, ax = plt.subplots(figsize=(10, 1.2 + 0.7 * max(1, len(cells))), layout="constrained")
reference_lines(ax)
for i, cell in enumerate(cells):
    part = learned[learned["cell"] == cell]
    ax.scatter(part["tau_init_ms"], np.full(len(part), i + 0.15), marker="|", c="0.5", s=80)
    ax.scatter(part["tau_ms"], np.full(len(part), i - 0.15), marker="o", s=25)
ax.set_yticks(range(len(cells)), cells)
ax.set_xscale("log")
ax.set(xlabel="memory time constant τ_m (ms); grey ticks: initial, dots: learned")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.savefig(figures / "02_learned_tau.png", dpi=110)
plt.show()

# How far training moved τ_m: |log10(learned / initial)|, in decades.
shifted = learned.assign(shift=np.abs(np.log10(learned["tau_ms"] / learned["tau_init_ms"])))
summary = shifted.groupby("cell").agg(
    units=("tau_ms", "size"), median_tau_ms=("tau_ms", "median"),
    max_tau_ms=("tau_ms", "max"),
    share_above_long=("tau_ms", lambda t: float((t > LONG_MS).mean())),
    mean_shift_decades=("shift", "mean"),
).reset_index()
summary.to_csv(figures / "02_learned_tau_summary.csv", index=False)
summary

# %% [markdown]
# ## τ_max ablation

# %%
fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
for cell, part in tau_max.groupby("cell", sort=False):
    part = part.sort_values("tau_max_ms")
    ax.errorbar(part["tau_max_ms"], part["AUC"], yerr=interval_bars(part, "AUC"), fmt="o-",
                capsize=2, label=cell)
reference_lines(ax)
ax.set_xscale("log")
ax.set(xlabel="τ_max (ms)", ylabel="test spike AUC")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.savefig(figures / "02_tau_max.png", dpi=110)
plt.show()
smallest_tau_max = margin_table(tau_max, MARGIN, by="tau_max_ms")
smallest_tau_max.to_csv(figures / "02_tau_max_margin.csv", index=False)
smallest_tau_max[["cell", "best_AUC", "best_tau_max_ms", "tau_max_ms_at_margin", "AUC_at_margin"]]

# %% [markdown]
# ## Freezing the slow memories of fitted models

# %%
frozen = freeze[np.isfinite(freeze["tau_cut_ms"])]
fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
for (cell, learnable), part in frozen.groupby(["cell", "learn_tau_m"], sort=False):
    part = part.sort_values("tau_cut_ms")
    ax.plot(part["tau_cut_ms"], part["AUC_lost"], "o-" if learnable else "s--",
            label=f"{cell} ({'learned' if learnable else 'fixed'} τ)")
ax.set_xscale("log")
ax.set(xlabel="units with τ_m above this are frozen (ms)", ylabel="AUC lost")
ax.axhline(0, c="0.7", lw=0.8)
ax.legend(fontsize=7)
fig.savefig(figures / "02_freeze.png", dpi=110)
plt.show()
table = frozen.pivot_table(index=["cell", "learn_tau_m"], columns="tau_cut_ms", values="AUC_lost")
table.to_csv(figures / "02_freeze_table.csv")
table

# %% [markdown]
# ## Conclusion
#
# Printed from the tables above (no number is typed in). "Long" means τ > LONG_MS; the
# loss from freezing is read at the smallest cut-off at or above LONG_MS.

# %%
cuts = sorted(frozen["tau_cut_ms"].unique())
cut = next((c for c in cuts if c >= LONG_MS), cuts[-1] if cuts else float("nan"))

def lost(cell, learnable):
    part = frozen[(frozen["cell"] == cell) & (frozen["learn_tau_m"] == learnable)
                  & (frozen["tau_cut_ms"] == cut)]
    return float(part["AUC_lost"].iloc[0]) if len(part) else float("nan")

def value(frame, cell, column):
    part = frame[frame["cell"] == cell]
    return float(part[column].iloc[0]) if len(part) else float("nan")

lines = []
for cell in dict.fromkeys([*summary["cell"], *frozen["cell"]]):
    lines.append(
        f"{cell}: freezing the units above {cut:g} ms costs {lost(cell, False):.4f} AUC "
        f"(fixed τ) and {lost(cell, True):.4f} (learned τ); "
        f"{100 * value(summary, cell, 'share_above_long'):.0f} % of the learned τ_m exceed "
        f"{LONG_MS:g} ms (largest {value(summary, cell, 'max_tau_ms'):.0f} ms); the smallest "
        f"τ_max within {MARGIN} AUC of the best is "
        f"{value(smallest_tau_max, cell, 'tau_max_ms_at_margin'):g} ms, and by the test "
        f"intervals τ_max from {value(smallest_tau_max, cell, 'tau_max_ms_unresolved'):g} ms up "
        "cannot be told apart from the best."
    )
moved = summary["mean_shift_decades"]
if len(moved):
    lines.append(
        f"Training moved the learnable τ_m by {moved.mean():.3f} decades on average (cells "
        f"{moved.min():.3f}–{moved.max():.3f}): "
        + ("the learned τ_m are still their log-spaced initial values, so these fits say "
           "nothing about which time constants the cell needs; longer training would."
           if moved.max() < 0.1 else "the learned τ_m moved from their initial values.")
    )
nmda, ampa = lost("L5PC", False), lost("L5PC-ampa", False)
if nmda == nmda and ampa == ampa:
    lines.append(
        f"The NMDA cell {'loses more' if nmda > ampa else 'does not lose more'} than the "
        f"AMPA-only cell when memories above {cut:g} ms are frozen ({nmda:.4f} against "
        f"{ampa:.4f} AUC)."
    )
conclusion = "\n".join(lines) or "No learnable-τ, τ_max or freezing results yet."
(figures / "02_conclusion.txt").write_text(conclusion + "\n")
print(conclusion)
