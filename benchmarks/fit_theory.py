"""Fit the trade-off models of benchmarks.theory to fixed-budget sweep tables.

    python -m benchmarks.fit_theory RESULTS.csv [...] [--published] [--split test|val]
        [--bootstrap 200] [--seed 0] [--scaling-law] [--out FOLDER]

Each table is a tidy CSV, one row per run (see REQUIRED_COLUMNS and docs/theory.md §6);
tasks are fitted separately, over all budgets of a task. `--published` adds the two
published single-budget sweeps (benchmarks/data/). For every task it prints the fitted
parameters of the three models with bootstrap intervals, the model comparison (fit quality
and leave-one-out error), the predicted optimum against the measured one at every budget,
the predicted optimum at held-out budgets with the rate at which N* and k_e* move, the
d_m ~ √N check, and, with ≥ 2 budgets, the scaling law along the frontier. `--out` gets
plots and results.json with a provenance record.
"""

import argparse
import math
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from benchmarks import theory as T
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import atomic_path, write_json
from elmbridge.provenance import run_record, stable_hash

REQUIRED_COLUMNS = ("task", "P", "N", "k_e", "k_c", "seed", "metric")
SPLIT_COLUMNS = {"test": "test_metric", "val": "val_metric", "train": "train_metric"}
PUBLISHED = ("published_enwik8.csv", "published_shd_adding.csv")
# held-out budgets, as multiples of each measured hidden budget
HELD_OUT_FACTORS = (0.1, 10.0)


# ---------------------------------------------------------------------------------------
# Tables


def published_paths() -> list[Path]:
    folder = resources.files("benchmarks") / "data"
    return [Path(str(folder / name)) for name in PUBLISHED]


def read_tables(paths, split: str = "test", include_excluded: bool = False) -> list[T.SweepData]:
    """One SweepData per task over all tables; a UserError names what is malformed.

    k_e and k_c may be left out when d_m, d_tree and d_brch are given (elmnet.params,
    d_mlp = 2 d_m). Rows with exclude = 1 are dropped unless include_excluded.
    """
    import pandas as pd

    from elmnet.params import hidden_neuron_parameters

    value_col = SPLIT_COLUMNS[split]
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"results table {path} not found")
        try:
            df = pd.read_csv(path)
        except Exception as err:  # pandas raises several types for unreadable CSV
            raise UserError(f"{path}: not a readable CSV table ({err})") from None
        df = from_sweep_columns(df, path)
        if "budget" not in df.columns:  # a table of one sweep (the published ones): its P
            df["budget"] = df["P"] if "P" in df.columns else np.nan
        if {"k_e", "k_c"} - set(df.columns) and {"d_m", "d_tree", "d_brch"} <= set(df.columns):
            pc = [
                hidden_neuron_parameters(int(d), 2 * int(d), int(t), int(b))
                for d, t, b in zip(df["d_m"], df["d_tree"], df["d_brch"], strict=True)
            ]
            df["k_e"] = [p.k_e for p in pc]
            df["k_c"] = [p.k_c for p in pc]
        missing = [c for c in (*REQUIRED_COLUMNS, value_col) if c not in df.columns]
        if missing:
            raise UserError(
                f"{path}: missing columns {', '.join(missing)}; a results table needs "
                f"{', '.join((*REQUIRED_COLUMNS, value_col))} (k_e and k_c may be replaced "
                f"by d_m, d_tree, d_brch)"
            )
        if not len(df):
            raise UserError(f"{path}: the table has no rows")
        for col in ("P", "N", "k_e", "k_c", value_col):
            values = pd.to_numeric(df[col], errors="coerce")
            if values.isna().any():
                bad = int(values.isna().idxmax()) + 2
                raise UserError(
                    f"{path}: column {col} must be numeric (line {bad}: {df[col].iloc[bad - 2]!r})"
                )
            df[col] = values
        for col in ("P", "N", "k_e", "k_c"):
            if (df[col] <= 0).any():
                raise UserError(f"{path}: column {col} must be positive in every row")
        df["_source"] = str(path)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if "exclude" in df.columns and not include_excluded:
        df = df[~df["exclude"].fillna(0).astype(bool)]
    if "folder" in df.columns:  # a point listed by two tables (or two axes) is one run
        named = df["folder"].fillna("").astype(str) != ""
        df = pd.concat([df[named].drop_duplicates("folder"), df[~named]], ignore_index=True)
    out = []
    for task, rows in df.groupby("task", sort=True):
        metrics = sorted(set(rows["metric"].astype(str).str.lower()))
        if len(metrics) != 1:
            raise UserError(f"task {task}: one metric per task, found {metrics}")
        metric = metrics[0]
        kind = T.metric_kind(metric)
        values = rows[value_col].to_numpy(float)
        if metric in T.ACCURACY_METRICS and ((values < 0) | (values > 1)).any():
            raise UserError(f"task {task}: {metric} must lie in [0, 1]")
        loss = T.loss_from_metric(metric, values)
        if (loss <= 0).any():
            what = "1 − accuracy" if metric in T.ACCURACY_METRICS else metric
            n_bad = int((loss <= 0).sum())
            raise UserError(
                f"task {task}: {n_bad} row(s) with non-positive {what} in {value_col}; the "
                f"models are fitted to log({what}), which must be > 0"
            )
        # A sweep's budget is its `budget` column; rows without one (the single-axis
        # sweeps) are not at a fixed budget: they are kept apart as held-out points.
        if "budget" in rows.columns:
            budget = pd.to_numeric(rows["budget"], errors="coerce").to_numpy(float)
        else:
            budget = rows["P"].to_numpy(float)
        on = np.isfinite(budget)
        if not on.any():
            raise UserError(
                f"task {task}: no row is at a fixed budget (the budget column is empty); "
                "fit a tradeoff or scaling table, and give single-axis tables beside it"
            )
        d_m = rows["d_m"].to_numpy(float) if "d_m" in rows.columns else None
        data = T.SweepData(
            task,
            metric,
            kind,
            rows["N"].to_numpy(float)[on],
            rows["k_e"].to_numpy(float)[on],
            rows["k_c"].to_numpy(float)[on],
            loss[on],
            budget[on],
            rows["seed"].to_numpy()[on],
            None if d_m is None else d_m[on],
        )
        if d_m is not None:
            data.d_tree = T.infer_d_tree(d_m[on], data.k_e)
        data.off_budget = {
            "N": rows["N"].to_numpy(float)[~on],
            "k_e": rows["k_e"].to_numpy(float)[~on],
            "k_c": rows["k_c"].to_numpy(float)[~on],
            "y": loss[~on],
            "d_m": None if d_m is None else d_m[~on],
            "axis": (rows["axis"].astype(str).to_numpy()[~on] if "axis" in rows.columns
                     else np.full((~on).sum(), "")),
        }  # fmt: skip
        out.append(data)
    return out


def from_sweep_columns(df, path: Path):
    """A results table of the sweep commands (benchmarks.sweep.COLUMNS) in this layout.

    The sweeps name the metric columns `valid` and `test` and list every point with its
    status; only finished points carry a metric. Tables already in this layout pass as
    they are.
    """
    if "test" in df.columns and "test_metric" not in df.columns:
        df = df.rename(columns={"test": "test_metric", "valid": "val_metric"})
    if "status" in df.columns:
        finished = df["status"].astype(str) == "finished"
        if (~finished).any():
            counts = df.loc[~finished, "status"].astype(str).value_counts().to_dict()
            print(f"{path}: leaving out {int((~finished).sum())} point(s) without a result "
                  f"({', '.join(f'{n} {k}' for k, n in counts.items())})")  # fmt: skip
        df = df[finished].copy()
    return df


# ---------------------------------------------------------------------------------------
# Analysis of one task


def _fmt(v, digits=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan"
    return f"{v:.{digits}g}"


def _ci(values):
    lo, hi = T.percentile_interval(values)
    return [lo, hi]


def optimum_table(fit, data, hidden_grid):
    """Numerical optimum at each hidden budget: arrays k_e, k_c, N, loss, at_edge."""
    kc_ref = float(np.median(data.k_c))
    rows = [fit.model.optimum(fit.theta, h, kc_ref, data) for h in hidden_grid]
    return {key: np.array([r[key] for r in rows]) for key in ("k_e", "k_c", "N", "loss", "at_edge")}


def analyse_task(
    data: T.SweepData, n_boot: int, seed: int, scaling: bool, log=print, n_starts: int = 8
):
    rng = np.random.default_rng(seed)
    readout = data.readout()
    measured_hidden = np.array([data.hidden_budget(b) for b in data.budgets])
    h_lo, h_hi = measured_hidden.min(), measured_hidden.max()
    held_out = np.array([h * f for h in measured_hidden for f in HELD_OUT_FACTORS])
    rate_pts = np.array([h * f for h in measured_hidden for f in (10**-0.5, 10**0.5)])
    curve = np.geomspace(h_lo / 10, h_hi * 10, 9)
    hidden_grid = np.concatenate([measured_hidden, held_out, rate_pts, curve])
    nb, nh = len(measured_hidden), len(held_out)

    log(
        f"\n=== {data.task}: {data.n} runs, metric {data.metric} ({data.kind} link), "
        f"{len(data.budgets)} budget(s) {', '.join(f'{b:,.0f}' for b in data.budgets)}; "
        f"k_c {'varies' if data.kc_varies else f'fixed at {data.k_c[0]:g}'} ==="
    )
    if len(data.budgets) == 1 or not (np.unique(data.seed).size > 1):
        log(
            "bootstrap unit: runs (rows), resampled within each budget"
            + (
                " — one seed per point, so a row is one run"
                if np.unique(data.seed).size == 1
                else ""
            )
        )

    measured_fr = T.frontier(data)
    fr_boot = [T.frontier(data.subset(T.resample_index(data, rng))) for _ in range(n_boot)]
    result = {
        "task": data.task,
        "metric": data.metric,
        "n_runs": data.n,
        "budgets": data.budgets.tolist(),
        "hidden_budgets": measured_hidden.tolist(),
        "readout": readout,
        "models": {},
        "measured_optimum": [],
    }
    for g, f in enumerate(measured_fr):
        best = int(np.argmin(np.where(data.group == g, data.y, np.inf)))
        entry = {
            **f,
            "k_e_interval": _ci([fb[g]["k_e"] for fb in fr_boot]),
            "N_interval": _ci([fb[g]["N"] for fb in fr_boot]),
            "best_row": {
                "N": data.N[best],
                "k_e": data.k_e[best],
                "d_m": None if data.d_m is None else data.d_m[best],
                "metric": float(data.to_metric(data.y[best])),
            },
        }
        entry["d_m"] = T.d_m_for_k_e(f["k_e"], data.d_tree)
        entry["d_m_interval"] = _ci([T.d_m_for_k_e(fb[g]["k_e"], data.d_tree) for fb in fr_boot])
        result["measured_optimum"].append(entry)

    fits = {}
    for model in T.make_models(data):
        if data.n <= len(model.names):
            raise UserError(
                f"task {data.task}: {data.n} runs cannot fit the {model.name} model "
                f"({len(model.names)} parameters)"
            )
        f = T.fit(model, data, n_starts=n_starts)
        fits[model.name] = f

        def extra(bf):
            return optimum_table(bf, data, hidden_grid)

        thetas, extras, failed = T.bootstrap(f, data, n_boot, rng, extra=extra)
        point = optimum_table(f, data, hidden_grid)
        loo, loo_failed = T.leave_one_out(f, data)
        lobo, lobo_failed = T.leave_one_budget_out(f, data) if len(data.budgets) > 1 else (None, 0)
        r_loo = np.log(loo) - np.log(data.y)
        m_loo = data.to_metric(loo) - data.to_metric(data.y)
        boot = {k: np.array([e[k] for e in extras]) for k in point} if extras else {}
        opt = []
        for j, h in enumerate(hidden_grid[: nb + nh]):
            o = {"hidden": float(h), "P": float(h + readout), "held_out": j >= nb}
            for key in ("k_e", "N", "k_c"):
                o[key] = float(point[key][j])
                o[f"{key}_interval"] = _ci(boot[key][:, j]) if boot else [math.nan] * 2
            o["metric"] = float(data.to_metric(point["loss"][j]))
            o["metric_interval"] = (
                sorted(_ci(data.to_metric(boot["loss"][:, j]))) if boot else [math.nan] * 2
            )
            o["at_edge"] = bool(point["at_edge"][j])
            o["d_m"] = T.d_m_for_k_e(o["k_e"], data.d_tree)
            o["d_m_interval"] = [T.d_m_for_k_e(v, data.d_tree) for v in o["k_e_interval"]]
            opt.append(o)
        rates = []
        for g in range(nb):
            lo, hi = nb + nh + 2 * g, nb + nh + 2 * g + 1
            rate = {}
            for key in ("k_e", "N"):

                def slope(a, key=key, lo=lo, hi=hi):
                    return (np.log(a[key][..., hi]) - np.log(a[key][..., lo])) / math.log(10)

                rate[key] = float(slope(point))
                rate[f"{key}_interval"] = _ci(slope(boot)) if boot else [math.nan] * 2
            rates.append(rate)
        rec = {
            "label": model.label,
            "params": {
                k: {
                    "value": f.theta[k],
                    "interval": _ci(thetas[:, i]) if len(thetas) else [math.nan] * 2,
                    "meaning": p.meaning,
                }
                for i, (k, p) in enumerate(zip(model.names, model.params(), strict=True))
            },
            "converged": f.converged,
            "grad_norm": f.grad_norm,
            "n_starts": f.n_starts,
            "n_agree": f.n_agree,
            "at_bound": f.at_bound,
            "huber_delta": f.delta,
            "bootstrap": {"n": n_boot, "not_converged": failed},
            "n_params": len(model.names),
            "derived": derived_quantities(model, f.theta, thetas),
            "rms_log_residual": f.rms_log_residual,
            "loo_rms_log_residual": float(np.sqrt(np.nanmean(r_loo**2))),
            "loo_mae_metric": float(np.nanmean(np.abs(m_loo))),
            "loo_not_converged": int(loo_failed),
            "loo_prediction": data.to_metric(loo).tolist(),
            "optimum": opt,
            "rate": rates,
            "curve": {
                "hidden": curve.tolist(),
                **{k: point[k][-len(curve) :].tolist() for k in ("k_e", "N", "loss")},
                **(
                    {
                        f"{k}_band": [_ci(boot[k][:, -len(curve) + i]) for i in range(len(curve))]
                        for k in ("k_e", "N")
                    }
                    if boot
                    else {}
                ),
            },
        }
        if lobo is not None:
            r = np.log(lobo) - np.log(data.y)
            rec["lobo_rms_log_residual"] = float(np.sqrt(np.nanmean(r**2)))
            rec["lobo_not_converged"] = int(lobo_failed)
            rec["lobo_mae_metric"] = float(
                np.nanmean(np.abs(data.to_metric(lobo) - data.to_metric(data.y)))
            )
        if len(data.budgets) > 1:
            rec["held_out_budget_optimum"] = held_out_budget_optimum(
                model, data, result["measured_optimum"], min(n_boot, 50), rng, n_starts
            )
        held = held_out_points(data, f, thetas)
        if held is not None:
            rec["held_out_points"] = held
        result["models"][model.name] = rec

    result["sqrt_check"] = sqrt_check(data, result)
    if len(data.budgets) >= 2:
        result["scaling_law"] = T.fit_scaling_law(data, n_boot=n_boot, seed=seed)
    elif scaling:
        T.fit_scaling_law(data)  # raises the single-budget error
    report(data, result, log)
    return result, fits


def held_out_budget_optimum(model, data, measured, n_boot, rng, n_starts) -> list[dict]:
    """For each budget: the optimum a fit on the other budgets predicts there.

    A fresh multi-start fit without the budget (no start from the full-data optimum), its
    continuous optimum at that budget's hidden size, and a 95 % interval from `n_boot`
    bootstrap refits of the same reduced data; beside it the measured optimum (the
    three-point parabola of `theory.frontier` and its bootstrap interval).
    """
    out = []
    for g, b in enumerate(data.budgets):
        train = data.subset(np.nonzero(data.group != g)[0])
        f = T.fit(model, train, n_starts=n_starts)
        hidden = data.hidden_budget(b)
        kc = float(np.median(data.k_c[data.group == g]))

        def optimum(fit, hidden=hidden, kc=kc, train=train):
            return fit.model.optimum(fit.theta, hidden, kc, train)

        point = optimum(f)
        _, boots, failed = T.bootstrap(f, train, n_boot, rng, extra=optimum)
        m = measured[g]
        entry = {"P": float(b), "hidden": hidden, "converged": f.converged,
                 "bootstrap_not_converged": failed, "at_edge": bool(point["at_edge"])}  # fmt: skip
        for key in ("k_e", "N"):
            entry[key] = float(point[key])
            entry[f"{key}_interval"] = _ci([o[key] for o in boots])
        entry["d_m"] = T.d_m_for_k_e(entry["k_e"], data.d_tree)
        entry["d_m_interval"] = [T.d_m_for_k_e(v, data.d_tree) for v in entry["k_e_interval"]]
        entry["metric"] = float(data.to_metric(point["loss"]))
        entry["metric_interval"] = sorted(_ci(data.to_metric(np.array([o["loss"] for o in boots]))))
        entry["measured"] = {
            "d_m": m["d_m"], "d_m_interval": m["d_m_interval"], "N": m["N"],
            "N_interval": m["N_interval"], "metric": float(data.to_metric(m["loss"])),
        }  # fmt: skip
        lo, hi = entry["d_m_interval"]
        entry["measured_d_m_inside_interval"] = bool(lo <= m["d_m"] <= hi)
        out.append(entry)
    return out


def held_out_points(data, fit, thetas) -> dict | None:
    """Predictions of a fit at the rows that are not at a fixed budget (single-axis sweeps).

    These points were not fitted: they test the model where the allocation leaves the
    budget curves. With k_c fixed in the fit, k_c is absorbed into the fitted constants,
    so points at another k_c are not predicted (reported as left out). Intervals: the
    95 % percentile interval of the bootstrap fits' predictions.
    """
    off = getattr(data, "off_budget", None)
    if off is None or not len(off["y"]):
        return None
    usable = np.ones(len(off["y"]), bool)
    if not data.kc_varies:
        usable = np.isin(off["k_c"], np.unique(data.k_c))
    if not usable.any():
        return {"n": 0, "left_out_other_k_c": int((~usable).sum())}
    X = {k: off[k][usable] for k in ("N", "k_e", "k_c")}
    y = off["y"][usable]
    pred = fit.predict(X)
    boot = [fit.model.predict(dict(zip(fit.model.names, row, strict=True)), X) for row in thetas]
    r = np.log(pred) - np.log(y)
    d_m = None if off["d_m"] is None else off["d_m"][usable]
    return {
        "n": int(usable.sum()),
        "left_out_other_k_c": int((~usable).sum()),
        "rms_log_residual": float(np.sqrt(np.mean(r**2))),
        "mae_metric": float(np.mean(np.abs(data.to_metric(pred) - data.to_metric(y)))),
        "points": [
            {
                "axis": str(off["axis"][usable][i]),
                "N": float(X["N"][i]),
                "k_e": float(X["k_e"][i]),
                "k_c": float(X["k_c"][i]),
                "d_m": None if d_m is None else float(d_m[i]),
                "measured": float(data.to_metric(y[i])),
                "predicted": float(data.to_metric(pred[i])),
                "interval": sorted(_ci(data.to_metric(np.array([b[i] for b in boot]))))
                if boot
                else [math.nan] * 2,
            }
            for i in range(len(y))
        ],
    }


def derived_quantities(model, theta, thetas):
    """The information model's c (loss per bit), 1/ρ and I_max, with bootstrap intervals."""
    if model.name != "information":
        return {}
    names = model.names
    boot = [dict(zip(names, row, strict=True)) for row in thetas]
    out = {}
    for key, fn, meaning in (
        ("c", model.c_per_bit, "derived: loss (BPC) or log-error per bit, 2 ln 2 · a / S"),
        ("1/rho", lambda t: 1.0 / t["rho"], "derived: most independent channels"),
        ("I_max", model.i_max, "derived: bits with unbounded N, k_e (and k_c)"),
    ):
        out[key] = {
            "value": float(fn(theta)),
            "interval": _ci([fn(t) for t in boot]),
            "meaning": meaning,
        }
    return out


def sqrt_check(data, result):
    """d_m ~ √N at the optimum: d_m*/√N* measured and per model, and where d_m = √N
    crosses each measured sweep."""
    if data.d_m is None:
        return {"note": "no d_m column"}
    out = {"measured": [], "models": {}}
    for g, m in enumerate(result["measured_optimum"]):
        rows = np.nonzero(data.group == g)[0]
        rows = rows[np.argsort(data.d_m[rows])]
        gap = np.log(data.d_m[rows]) - 0.5 * np.log(data.N[rows])
        cross = math.nan
        j = np.nonzero(np.diff(np.sign(gap)))[0]
        if len(j):
            a, b = rows[j[0]], rows[j[0] + 1]
            t = gap[j[0]] / (gap[j[0]] - gap[j[0] + 1])
            cross = float(math.exp((1 - t) * math.log(data.d_m[a]) + t * math.log(data.d_m[b])))
        out["measured"].append(
            {
                "P": m["P"],
                "d_m": m["d_m"],
                "N": m["N"],
                "ratio": m["d_m"] / math.sqrt(m["N"]) if np.isfinite(m["d_m"]) else math.nan,
                "best_row_ratio": (
                    m["best_row"]["d_m"] / math.sqrt(m["best_row"]["N"])
                    if m["best_row"]["d_m"]
                    else math.nan
                ),
                "d_m_where_d_m_eq_sqrt_N": cross,
                "within_optimum_interval": bool(
                    m["d_m_interval"][0] <= cross <= m["d_m_interval"][1]
                ),
            }
        )
    for name, rec in result["models"].items():
        o = [x for x in rec["optimum"] if not x["held_out"]]
        h = [x for x in rec["optimum"] if x["held_out"]]
        ratios = [x["d_m"] / math.sqrt(x["N"]) for x in o + h]
        # exponent of d_m* in N* between the held-out budgets (÷10, ×10) of the first budget
        lo, hi = h[0], h[1]
        expo = (
            math.log(hi["d_m"] / lo["d_m"]) / math.log(hi["N"] / lo["N"])
            if all(np.isfinite([lo["d_m"], hi["d_m"]])) and hi["N"] != lo["N"]
            else math.nan
        )
        out["models"][name] = {"ratio_at_budgets": ratios, "d_m_vs_N_exponent": expo}
    return out


def report(data, result, log):
    names = list(result["models"])
    metric = data.metric
    for name in names:
        rec = result["models"][name]
        flag = "converged" if rec["converged"] else "NOT CONVERGED"
        log(
            f"\n[{name}] {rec['label']}: {flag} (projected gradient {rec['grad_norm']:.1e}; "
            f"{rec['n_agree']}/{rec['n_starts']} starts reach the best objective; Huber δ "
            f"{rec['huber_delta']:.3g}; bootstrap {rec['bootstrap']['n']} resamples, "
            f"{rec['bootstrap']['not_converged']} of them not converged, kept)"
        )
        if rec["at_bound"]:
            log(f"  at the edge of the search box (not identified): {', '.join(rec['at_bound'])}")
        for k, p in list(rec["params"].items()) + list(rec["derived"].items()):
            lo, hi = p["interval"]
            dec = math.log10(hi / lo) if lo > 0 and hi > 0 else math.nan
            log(
                f"  {k:<8} {_fmt(p['value']):>11}  95% [{_fmt(lo)}, {_fmt(hi)}] "
                f"({dec:.1f} decades)   {p['meaning']}"
            )
    log(
        f"\nmodel comparison ({data.n} runs; residuals r = log ℓ̂ − log ℓ, ℓ = "
        f"{'1 − ' if metric in T.ACCURACY_METRICS else ''}{metric})"
    )
    head = f"{'model':<12}{'params':>7}{'rms r':>10}{'LOO rms r':>11}{'LOO |Δ' + metric + '|':>18}"
    if len(data.budgets) > 1:
        head += f"{'LOBO rms r':>12}"
    log(head)
    for name in names:
        rec = result["models"][name]
        line = (
            f"{name:<12}{rec['n_params']:>7}{rec['rms_log_residual']:>10.4f}"
            f"{rec['loo_rms_log_residual']:>11.4f}{rec['loo_mae_metric']:>18.4f}"
        )
        if "lobo_rms_log_residual" in rec:
            line += f"{rec['lobo_rms_log_residual']:>12.4f}"
        log(line)
    held = {n: result["models"][n].get("held_out_points") for n in names}
    if any(h and h.get("n") for h in held.values()):
        first = next(h for h in held.values() if h and h.get("n"))
        log(
            f"\nheld-out points (single-axis sweeps, not fitted; {first['n']} runs"
            + (f", {first['left_out_other_k_c']} at another k_c left out: k_c is fixed in the "
               "fit" if first["left_out_other_k_c"] else "")
            + f"): rms r and mean |Δ{metric}| per model"
        )  # fmt: skip
        log("   " + "   ".join(
            f"{n} {h['rms_log_residual']:.4f} / {h['mae_metric']:.4f}"
            for n, h in held.items() if h and h.get("n")))  # fmt: skip
        log(f"{'axis':>6}{'N':>6}{'k_e':>8}{'d_m':>6}{'measured':>10}"
            + "".join(f"{n + ' [95%]':>28}" for n in names))  # fmt: skip
        for i, pt in enumerate(first["points"]):
            line = (f"{pt['axis']:>6}{pt['N']:>6g}{pt['k_e']:>8g}"
                    f"{'' if pt['d_m'] is None else format(pt['d_m'], 'g'):>6}"
                    f"{pt['measured']:>10.4f}")  # fmt: skip
            for n in names:
                q = held[n]["points"][i]
                line += f"{q['predicted']:>10.4f} [{q['interval'][0]:.3f}, {q['interval'][1]:.3f}]"
            log(line)
    if len(data.budgets) > 1:
        log("\noptimum at a budget held out of the fit (fit on the other budgets; 95% bootstrap)")
        for name in names:
            for e in result["models"][name]["held_out_budget_optimum"]:
                mm = e["measured"]
                log(
                    f"   {name:<12} P {e['P']:,.0f}: predicted d_m* {_fmt(e['d_m'], 3)} "
                    f"[{_fmt(e['d_m_interval'][0], 3)}, {_fmt(e['d_m_interval'][1], 3)}] N* "
                    f"{_fmt(e['N'])} [{_fmt(e['N_interval'][0])}, {_fmt(e['N_interval'][1])}] "
                    f"{metric} {e['metric']:.4f} [{e['metric_interval'][0]:.4f}, "
                    f"{e['metric_interval'][1]:.4f}] | measured d_m* {_fmt(mm['d_m'], 3)} "
                    f"[{_fmt(mm['d_m_interval'][0], 3)}, {_fmt(mm['d_m_interval'][1], 3)}] N* "
                    f"{_fmt(mm['N'])} {metric} {mm['metric']:.4f}"
                    + ("" if e["converged"] else " (fit NOT CONVERGED)")
                    + (" (edge)" if e["at_edge"] else "")
                )
    log(f"\nleave-one-out predictions of {metric} per run")
    log(f"{'N':>6}{'k_e':>8}{'d_m':>6}{'measured':>10}" + "".join(f"{n:>12}" for n in names))
    order = np.lexsort((data.k_e, data.budget))
    for i in order:
        dm = "" if data.d_m is None else f"{data.d_m[i]:g}"
        line = f"{data.N[i]:>6g}{data.k_e[i]:>8g}{dm:>6}{data.to_metric(data.y[i]):>10.4f}"
        line += "".join(f"{result['models'][n]['loo_prediction'][i]:>12.4f}" for n in names)
        log(line)
    log("\noptimum at each measured budget (model: continuous optimum, 95% bootstrap interval)")
    for g, m in enumerate(result["measured_optimum"]):
        br = m["best_row"]
        log(
            f" P {m['P']:,.0f} (hidden {m['hidden']:,.0f}): measured best run d_m "
            f"{_fmt(br['d_m'])} N {br['N']:g} k_e {br['k_e']:g} → {br['metric']:.4f}; "
            f"3-point parabola k_e* {_fmt(m['k_e'])} [{_fmt(m['k_e_interval'][0])}, "
            f"{_fmt(m['k_e_interval'][1])}], d_m* {_fmt(m['d_m'], 3)} "
            f"[{_fmt(m['d_m_interval'][0], 3)}, {_fmt(m['d_m_interval'][1], 3)}]"
            + (" (at the sweep's edge)" if m["at_edge"] else "")
        )
        for name in names:
            o = result["models"][name]["optimum"][g]
            log(
                f"   {name:<12} k_e* {_fmt(o['k_e'])} [{_fmt(o['k_e_interval'][0])}, "
                f"{_fmt(o['k_e_interval'][1])}]  d_m* {_fmt(o['d_m'], 3)} "
                f"[{_fmt(o['d_m_interval'][0], 3)}, {_fmt(o['d_m_interval'][1], 3)}]  N* "
                f"{_fmt(o['N'])} [{_fmt(o['N_interval'][0])}, {_fmt(o['N_interval'][1])}]  "
                f"{metric} {o['metric']:.4f} [{o['metric_interval'][0]:.4f}, "
                f"{o['metric_interval'][1]:.4f}]" + (" (edge)" if o["at_edge"] else "")
            )
    log("\npredicted optimum at held-out budgets (hidden budget ÷10 and ×10)")
    for name in names:
        for o in [x for x in result["models"][name]["optimum"] if x["held_out"]]:
            log(
                f"   {name:<12} P {o['P']:>12,.0f}: k_e* {_fmt(o['k_e'])} "
                f"[{_fmt(o['k_e_interval'][0])}, {_fmt(o['k_e_interval'][1])}]  d_m* "
                f"{_fmt(o['d_m'], 3)} [{_fmt(o['d_m_interval'][0], 3)}, "
                f"{_fmt(o['d_m_interval'][1], 3)}]  N* {_fmt(o['N'])} [{_fmt(o['N_interval'][0])},"
                f" {_fmt(o['N_interval'][1])}]  {metric} {o['metric']:.4f} "
                f"[{o['metric_interval'][0]:.4f}, {o['metric_interval'][1]:.4f}]"
                + (" (edge)" if o["at_edge"] else "")
            )
    log(
        "\nrate of the optimum with the budget at each measured budget: d log k_e*/d log P, "
        "d log N*/d log P (P = hidden budget, over a decade)"
    )
    for name in names:
        for g, r in enumerate(result["models"][name]["rate"]):
            log(
                f"   {name:<12} P {data.budgets[g]:,.0f}: k_e* ∝ P^{r['k_e']:.3f} "
                f"[{r['k_e_interval'][0]:.3f}, {r['k_e_interval'][1]:.3f}]   N* ∝ P^{r['N']:.3f} "
                f"[{r['N_interval'][0]:.3f}, {r['N_interval'][1]:.3f}]"
            )
    sc = result["sqrt_check"]
    if "measured" in sc:
        log("\nd_m ~ √N at the optimum?")
        for m in sc["measured"]:
            log(
                f"   measured, P {m['P']:,.0f}: d_m*/√N* = {m['ratio']:.2f} (parabola), "
                f"{m['best_row_ratio']:.2f} (best run); the sweep crosses d_m = √N at d_m "
                f"{m['d_m_where_d_m_eq_sqrt_N']:.1f}, "
                f"{'inside' if m['within_optimum_interval'] else 'outside'} the 95% interval "
                f"of the measured optimum d_m*"
            )
        for name, m in sc["models"].items():
            log(
                f"   {name:<12} d_m*/√N* at the measured and held-out budgets: "
                + ", ".join(f"{v:.2f}" for v in m["ratio_at_budgets"])
                + f"; d_m* ∝ N*^{m['d_m_vs_N_exponent']:.2f} across two decades of budget"
            )
    if "scaling_law" in result:
        s = result["scaling_law"]
        log(
            f"\nscaling law along the measured frontier ({s['n_budgets']} budgets, "
            f"{s['n_boot']} bootstrap resamples)"
        )
        for f in s["frontier"]:
            log(
                f"   P {f['P']:,.0f}: {metric} {float(data.to_metric(f['loss'])):.4f} at k_e* "
                f"{f['k_e']:.4g}, N* {f['N']:.4g}" + (" (edge of sweep)" if f["at_edge"] else "")
            )
        p = s["plain"]
        log(
            f"   plain power law ℓ* = A P^−α: α = {p['alpha']:.4f} [{p['alpha_interval'][0]:.4f}, "
            f"{p['alpha_interval'][1]:.4f}]"
        )
        e = s["E_form"]
        if "E" in e:
            log(
                f"   ℓ* = E + A P^−α: α = {e['alpha']:.4f} [{e['alpha_interval'][0]:.4f}, "
                f"{e['alpha_interval'][1]:.4f}], E = {e['E']:.4g} [{e['E_interval'][0]:.4g}, "
                f"{e['E_interval'][1]:.4g}]" + ("" if e["E_identified"] else " (E not identified)")
            )
        else:
            log(f"   {e['note']}")
        for key, a in s["allocation"].items():
            log(
                f"   {key}* ∝ P^{a['exponent']:.3f} "
                f"[{a['interval'][0]:.3f}, {a['interval'][1]:.3f}]"
            )
    else:
        log("\nscaling law: not fitted (one budget; needs sweeps at ≥ 2 budgets)")


# ---------------------------------------------------------------------------------------
# Plots


def plot_task(data, result, fits, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    styles = {"information": ("C0", "-"), "power_law": ("C1", "--"), "null": ("C2", ":")}
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g, b in enumerate(data.budgets):
        rows = data.group == g
        hidden = data.hidden_budget(b)
        kc = float(np.median(data.k_c[rows]))
        ax.plot(
            data.k_e[rows],
            data.to_metric(data.y[rows]),
            "ko",
            ms=5,
            label="measured" if g == 0 else None,
        )
        ks = np.geomspace(
            data.k_e[rows].min() / 1.5, min(data.k_e[rows].max() * 1.5, hidden - kc - 1), 200
        )
        for name, f in fits.items():
            col, ls = styles[name]
            y = f.predict({"N": hidden / (ks + kc), "k_e": ks, "k_c": np.full_like(ks, kc)})
            ax.plot(ks, data.to_metric(y), color=col, ls=ls, label=name if g == 0 else None)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("k_e (parameters per neuron besides synapses); N = hidden budget / (k_e + k_c)")
    ax.set_ylabel(f"{data.task} {data.metric}")
    ax.set_title(f"{data.task}: fixed-budget sweep(s) and fitted models")
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out / f"{data.task}_fits.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rec in result["models"].items():
        col, ls = styles[name]
        c = rec["curve"]
        P = np.array(c["hidden"]) + result["readout"]
        for ax, key in zip(axes, ("k_e", "N"), strict=True):
            ax.plot(P, c[key], color=col, ls=ls, label=name)
            if f"{key}_band" in c:
                band = np.array(c[f"{key}_band"], dtype=float)
                ax.fill_between(P, band[:, 0], band[:, 1], color=col, alpha=0.15)
    for ax, key in zip(axes, ("k_e", "N"), strict=True):
        for i, m in enumerate(result["measured_optimum"]):
            lo, hi = m[f"{key}_interval"]
            err = [[max(m[key] - lo, 0.0)], [max(hi - m[key], 0.0)]]
            ax.errorbar(
                [m["P"]],
                [m[key]],
                yerr=err,
                fmt="ks",
                label="measured (parabola)" if i == 0 else None,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("budget P")
        ax.set_ylabel(f"optimal {key}")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{data.task}: predicted optimum against the budget (95% bootstrap bands)")
    fig.tight_layout()
    paths.append(_save(fig, out / f"{data.task}_optimum_vs_P.png"))
    plt.close(fig)

    if "scaling_law" in result:
        s = result["scaling_law"]
        fr = s["frontier"]
        P = np.array([f["P"] for f in fr])
        loss = np.array([f["loss"] for f in fr])
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(P, loss, "ks", label="measured frontier")
        Pg = np.geomspace(P.min() / 2, P.max() * 2, 100)
        p = s["plain"]
        ax.plot(Pg, p["A"] * Pg ** -p["alpha"], "C3--", label=f"A P^-α, α={p['alpha']:.3f}")
        if p.get("band"):
            b = p["band"]
            ax.fill_between(b["P"], b["lo"], b["hi"], color="C3", alpha=0.12)
        e = s["E_form"]
        if "E" in e:
            ax.plot(
                Pg,
                e["E"] + e["A"] * Pg ** -e["alpha"],
                "C0-",
                label=f"E + A P^-α, α={e['alpha']:.3f}",
            )
            band = s.get("E_form_band")
            if band:
                ax.fill_between(band["P"], band["lo"], band["hi"], color="C0", alpha=0.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("budget P")
        ax.set_ylabel(f"optimal {'error' if data.kind == 'error' else data.metric}")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, out / f"{data.task}_frontier.png"))
        plt.close(fig)
    return paths


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return str(path)


# ---------------------------------------------------------------------------------------
# Command line


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise UserError(f"--out {folder} is not a writable folder ({err.strerror})") from None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="*", help="results tables (CSV)")
    parser.add_argument(
        "--published", action="store_true", help="add the published Enwik8 and SHD-Adding sweeps"
    )
    parser.add_argument(
        "--split",
        choices=sorted(SPLIT_COLUMNS),
        default="test",
        help="which metric column to fit (default test_metric)",
    )
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument(
        "--starts",
        type=int,
        default=8,
        help="L-BFGS-B starts of each full fit (best points of a grid)",
    )
    parser.add_argument(
        "--scaling-law",
        action="store_true",
        help="require a scaling-law fit (an error for a single budget)",
    )
    parser.add_argument(
        "--include-excluded",
        action="store_true",
        help="keep rows marked exclude = 1 (e.g. a run that failed to train)",
    )
    parser.add_argument("--out", type=Path, help="folder for plots and results.json")
    args = parser.parse_args(argv)
    if args.out is not None:
        check_writable(args.out)
    if args.bootstrap < 1 or args.starts < 1:
        raise UserError("--bootstrap and --starts must be at least 1")
    paths = [Path(p) for p in args.results] + (published_paths() if args.published else [])
    if not paths:
        raise UserError("give one or more results tables, or --published")
    tasks = read_tables(paths, args.split, args.include_excluded)
    if args.scaling_law:
        single = [d.task for d in tasks if len(d.budgets) < 2]
        if single:
            raise UserError(
                f"--scaling-law needs sweeps at 2 or more budgets; {', '.join(single)} "
                f"{'has' if len(single) == 1 else 'have'} a single budget"
            )
    print(
        f"fitting {len(tasks)} task(s) from {len(paths)} table(s); split {args.split}; "
        f"{args.bootstrap} bootstrap resamples, seed {args.seed}"
    )
    results, plots = {}, []
    for data in tasks:
        res, fits = analyse_task(
            data, args.bootstrap, args.seed, args.scaling_law, n_starts=args.starts
        )
        results[data.task] = res
        if args.out is not None:
            plots += plot_task(data, res, fits, args.out)
    if args.out is not None:
        record = run_record(
            config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            seed=args.seed,
            data={str(p): stable_hash(Path(p).read_text(encoding="utf-8")) for p in paths},
        )
        write_json(
            args.out / "results.json",
            _jsonable({"results": results, "plots": plots, "provenance": record}),
        )
        print(f"\nwrote {args.out / 'results.json'} and {len(plots)} plots in {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    run_cli(main)
    sys.exit(0)
