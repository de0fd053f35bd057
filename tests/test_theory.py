"""The trade-off models of benchmarks.theory against independent truths.

- parameter recovery: data drawn from each model with known parameters are fitted back
  inside the bootstrap intervals in ≥ 90 % of checks;
- the numerical optimum at a fixed budget equals each model's closed-form (Lagrange)
  solution;
- the scaling law along the frontier of synthetic multi-budget data matches the
  information model's own frontier;
- malformed tables are rejected with one-line messages; `--published` runs end to end.
"""

import json
import math

import numpy as np
import pytest

from benchmarks import fit_theory
from benchmarks import theory as T
from elmbridge.errors import UserError

TRUE = {
    "information": {"L_inf": 1.2, "a": 0.18, "S": 5.0, "kappa_e": 3000.0, "rho": 0.01},
    "power_law": {"E": 1.0, "A": 20.0, "alpha": 0.5, "B": 30.0, "beta": 0.5},
    "null": {"E": 1.0, "A": 50.0, "gamma": 0.5, "kappa_e": 2000.0},
}
BUDGETS = [1e5, 1e6, 1e7]
K_E = list(np.geomspace(100, 3e4, 8))
K_C = 750.0


def _coverage(model, n_repeats, n_boot, seed0=100, noise=0.01):
    """Per repeat and parameter: is the true value inside the 95 % bootstrap interval?"""
    truth = TRUE[model.name]
    hits = []
    for r in range(n_repeats):
        rng = np.random.default_rng(seed0 + r)
        data = T.synthetic_sweep(model, truth, BUDGETS, K_E, K_C, noise, 1, rng)
        f = T.fit(model, data, require_convergence=True)
        thetas, _, failed = T.bootstrap(f, data, n_boot, rng)
        # non-converged replicates are kept (theory.bootstrap); there should be few
        assert failed <= n_boot // 4
        row = []
        for j, name in enumerate(model.names):
            lo, hi = T.percentile_interval(thetas[:, j])
            row.append(lo <= truth[name] <= hi)
        hits.append(row)
    return np.array(hits)


@pytest.mark.parametrize("cls", T.MODELS, ids=lambda c: c.name)
def test_parameters_are_recovered_within_bootstrap_intervals(cls):
    # small version: 6 data sets × 25 resamples, pooled over the parameters
    hits = _coverage(cls("loss"), n_repeats=6, n_boot=25)
    assert hits.mean() >= 0.9, hits


POWER_LAW_UNDERCOVERS = pytest.mark.xfail(
    reason="measured: the percentile intervals of the power law's A (B) cover 77.5 % "
    "(87.5 %) of 40 repeats — small-sample undercoverage of the case bootstrap with 24 runs "
    "and 5 parameters (docs/theory.md §10)",
    strict=False,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls",
    [T.InformationModel, pytest.param(T.PowerLawModel, marks=POWER_LAW_UNDERCOVERS), T.NullModel],
    ids=lambda c: c.name,
)
def test_parameters_are_recovered_within_bootstrap_intervals_per_parameter(cls):
    hits = _coverage(cls("loss"), n_repeats=40, n_boot=100, seed0=1000)
    assert (hits.mean(axis=0) >= 0.9).all(), hits.mean(axis=0)


def test_noise_free_fit_recovers_parameters_exactly():
    for cls in T.MODELS:
        m = cls("loss")
        data = T.synthetic_sweep(
            m, TRUE[m.name], BUDGETS, K_E, K_C, 0.0, 1, np.random.default_rng(0)
        )
        f = T.fit(m, data, require_convergence=True)
        for k, v in TRUE[m.name].items():
            assert f.theta[k] == pytest.approx(v, rel=1e-4), (m.name, k)


def test_error_link_of_the_information_model_is_recovered():
    m = T.InformationModel("error")
    truth = {"L_inf": 0.05, "a": 0.72, "S": 2.0, "kappa_e": 500.0, "rho": 0.05}
    data = T.synthetic_sweep(
        m,
        truth,
        [3e4, 3e5, 3e6],
        list(np.geomspace(50, 1e4, 8)),
        300,
        0.0,
        1,
        np.random.default_rng(0),
        metric="accuracy",
    )
    assert data.kind == "error"
    f = T.fit(m, data, require_convergence=True)
    for k, v in truth.items():
        assert f.theta[k] == pytest.approx(v, rel=1e-4), k


# --- optimum under the budget constraint -------------------------------------------------


@pytest.mark.parametrize("hidden", [3e4, 3e5, 3e6, 3e7])
def test_information_optimum_equals_lagrange_solution(hidden):
    m = T.InformationModel("loss")
    th = TRUE["information"]
    numeric = T.numeric_optimum(m, th, hidden, K_C)
    closed = m.closed_form_optimum(th, hidden, K_C)
    assert numeric["k_e"] == pytest.approx(closed, rel=1e-5)
    # and the inverse: the Lagrange condition maps k_e* back to the budget
    assert float(m.budget_for_optimum(th, closed, K_C)) == pytest.approx(hidden, rel=1e-9)


def test_information_optimum_moves_to_more_and_more_complex_neurons_as_sqrt_p():
    m = T.InformationModel("loss")
    th = {"L_inf": 1.0, "a": 0.18, "S": 5.0, "kappa_e": 300.0, "rho": 0.01}
    ks = [m.closed_form_optimum(th, h, 0.0 + 1e-9) for h in (1e10, 1e12)]
    ns = [h / k for h, k in zip((1e10, 1e12), ks, strict=True)]
    # asymptotically k_e* ∝ √P and N* ∝ √P (docs/theory.md §3)
    assert math.log(ks[1] / ks[0]) / math.log(100) == pytest.approx(0.5, abs=0.01)
    assert math.log(ns[1] / ns[0]) / math.log(100) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("hidden", [3e4, 3e6])
def test_null_and_power_law_optima_equal_closed_forms(hidden):
    null = T.NullModel("loss")
    assert T.numeric_optimum(null, TRUE["null"], hidden, K_C)["k_e"] == pytest.approx(
        null.closed_form_optimum(TRUE["null"], hidden, K_C), rel=1e-5
    )
    pl = T.PowerLawModel("loss")
    assert T.numeric_optimum(pl, TRUE["power_law"], hidden, K_C)["k_e"] == pytest.approx(
        pl.lagrange_optimum(TRUE["power_law"], hidden, K_C), rel=1e-5
    )


def test_redundancy_of_the_suggested_form_makes_the_optimum_independent_of_p():
    # I = ½ log2(1 + N s / (1 + (N − 1) ρ s)) depends on the allocation through
    # (1/s − ρ)(k_e + k_c) / P only (docs/theory.md §2), so its optimum does not move.
    def loss(k, hidden, rho=0.01, S=5.0, kappa=3000.0, kc=K_C):
        s = S * k / (k + kappa)
        n = hidden / (k + kc)
        return -np.log2(1 + n * s / (1 + (n - 1) * rho * s))

    ks = np.geomspace(1, 1e6, 20001)
    best = [ks[np.argmin(loss(ks, h))] for h in (1e7, 1e9, 1e11)]
    assert best[0] == pytest.approx(best[1], rel=1e-3) == pytest.approx(best[2], rel=1e-3)


def test_two_dimensional_optimum_satisfies_the_k_c_condition():
    m = T.InformationModel("loss", kc_varies=True)
    th = {**TRUE["information"], "kappa_c": 400.0}
    o = T.numeric_optimum(m, th, 1e6, 750.0, kc_range=(10.0, 1e5))
    # ∂ log s/∂k_e = ∂ log s/∂k_c at the optimum
    lhs = th["kappa_e"] / (o["k_e"] * (o["k_e"] + th["kappa_e"]))
    rhs = th["kappa_c"] / (o["k_c"] * (o["k_c"] + th["kappa_c"]))
    assert lhs == pytest.approx(rhs, rel=1e-3)


# --- scaling law ----------------------------------------------------------------------


def test_scaling_law_on_synthetic_multi_budget_data():
    m = T.InformationModel("loss")
    th = TRUE["information"]
    budgets = list(np.geomspace(1e5, 1e8, 5))
    k_grid = list(np.geomspace(100, 1e5, 25))
    data = T.synthetic_sweep(m, th, budgets, k_grid, K_C, 0.002, 1, np.random.default_rng(1))
    law = T.fit_scaling_law(data, n_boot=40, seed=0)
    assert law["n_budgets"] == 5 and "E" in law["E_form"]
    # truth: the model's own frontier at the same budgets (continuous optimum)
    opt = [T.numeric_optimum(m, th, data.hidden_budget(b), K_C) for b in data.budgets]
    slope_k = np.polyfit(np.log(data.budgets), np.log([o["k_e"] for o in opt]), 1)[0]
    slope_n = np.polyfit(np.log(data.budgets), np.log([o["N"] for o in opt]), 1)[0]
    lo, hi = law["allocation"]["k_e"]["interval"]
    assert lo <= slope_k <= hi and slope_k > 0
    lo, hi = law["allocation"]["N"]["interval"]
    assert lo <= slope_n <= hi and slope_n > 0
    for f, o in zip(law["frontier"], opt, strict=True):
        assert f["loss"] == pytest.approx(o["loss"], rel=0.01)
    assert law["E_form"]["converged"]
    assert law["E_form"]["E"] < min(o["loss"] for o in opt)


def test_scaling_law_needs_two_budgets():
    m = T.InformationModel("loss")
    data = T.synthetic_sweep(
        m, TRUE["information"], [1e6], K_E, K_C, 0.0, 1, np.random.default_rng(0)
    )
    with pytest.raises(UserError, match="2 or more budgets"):
        T.fit_scaling_law(data)


# --- tables and the command -------------------------------------------------------------


def _write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "task,P,N,d_m,k_e,k_c,seed,metric,test_metric\n"


def test_missing_columns_are_rejected(tmp_path):
    path = _write(tmp_path, "task,P,N,k_e,seed,metric,test_metric\nx,1e6,10,100,0,bpc,1.5\n")
    with pytest.raises(UserError, match="missing columns k_c"):
        fit_theory.read_tables([path])


def test_non_positive_metric_is_rejected(tmp_path):
    rows = "".join(f"x,1e6,{100 + i},5,1000,100,0,bpc,{1.5 - i}\n" for i in range(3))
    with pytest.raises(UserError, match="non-positive bpc"):
        fit_theory.read_tables([_write(tmp_path, HEADER + rows)])
    rows = "".join(f"x,1e6,{100 + i},5,1000,100,0,accuracy,{0.8 + 0.1 * i}\n" for i in range(3))
    with pytest.raises(UserError, match=r"non-positive 1 − accuracy"):
        fit_theory.read_tables([_write(tmp_path, HEADER + rows)])


def test_command_rejects_malformed_tables(tmp_path, cli):
    bad = _write(tmp_path, "task,P,N\nx,1,2\n", "bad.csv")
    r = cli("benchmarks.fit_theory", bad)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "missing columns" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="2 or more budgets; enwik8, shd-adding have a single"):
        fit_theory.main(["--published", "--scaling-law"])
    with pytest.raises(UserError, match="not a writable folder"):
        fit_theory.main(["--published", "--out", "/proc/no-such-folder"])


def test_published_tables_match_elmnet_parameter_counts():
    from elmnet.params import hidden_neuron_parameters, readout_layer_parameters

    tasks = fit_theory.read_tables(fit_theory.published_paths(), include_excluded=True)
    assert {d.task for d in tasks} == {"enwik8", "shd-adding"}
    for d in tasks:
        d_tree = {"enwik8": 50, "shd-adding": 30}[d.task]
        assert d.d_tree == d_tree
        for dm, ke in zip(d.d_m, d.k_e, strict=True):
            assert hidden_neuron_parameters(int(dm), 2 * int(dm), d_tree, 1).k_e == ke
        # one budget: N = floor(hidden budget / (k_e + k_c)) for every row, the hidden budget
        # being P less the readout layer (and one parameter per readout neuron, SOURCES.md)
        n_out, d_brch = {"enwik8": (204, 15), "shd-adding": (19, 10)}[d.task]
        hidden = d.budgets[0] - readout_layer_parameters(n_out, 3, d_tree, d_brch) - n_out
        assert np.all(d.N == np.floor(hidden / (d.k_e + d.k_c)))


def test_published_runs_end_to_end(tmp_path, cli):
    out = tmp_path / "theory"
    r = cli(
        "benchmarks.fit_theory",
        "--published",
        "--bootstrap",
        "4",
        "--starts",
        "3",
        "--out",
        out,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for text in (
        "=== enwik8",
        "=== shd-adding",
        "model comparison",
        "LOO rms r",
        "d_m ~ √N",
        "scaling law: not fitted",
    ):
        assert text in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res["results"]) == {"enwik8", "shd-adding"}
    assert res["provenance"]["seed"] == 0 and "software" in res["provenance"]
    for task in ("enwik8", "shd-adding"):
        models = res["results"][task]["models"]
        assert set(models) == {"information", "power_law", "null"}
        assert all(m["converged"] for m in models.values())
        assert (out / f"{task}_fits.png").stat().st_size > 10_000
        assert (out / f"{task}_optimum_vs_P.png").is_file()


def test_command_fits_the_scaling_law_of_a_multi_budget_table(tmp_path, capsys):
    m = T.InformationModel("loss")
    data = T.synthetic_sweep(
        m,
        TRUE["information"],
        [1e5, 1e6, 1e7, 1e8],
        list(np.geomspace(100, 1e5, 10)),
        K_C,
        0.002,
        1,
        np.random.default_rng(3),
    )
    lines = ["task,P,N,k_e,k_c,seed,metric,test_metric"]
    lines += [
        f"synthetic,{p:g},{n:g},{k:g},{c:g},{s},bpc,{y:.6f}"
        for p, n, k, c, s, y in zip(
            data.budget, data.N, data.k_e, data.k_c, data.seed, data.y, strict=True
        )
    ]
    table = _write(tmp_path, "\n".join(lines) + "\n", "multi.csv")
    out = tmp_path / "out"
    assert (
        fit_theory.main(
            [str(table), "--scaling-law", "--bootstrap", "5", "--starts", "3", "--out", str(out)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "scaling law along the measured frontier (4 budgets" in text
    assert "E + A P^−α" in text and "LOBO rms r" in text
    res = json.loads((out / "results.json").read_text())["results"]["synthetic"]
    assert res["scaling_law"]["allocation"]["k_e"]["exponent"] > 0
    assert (out / "synthetic_frontier.png").stat().st_size > 10_000


def test_sweep_tables_are_read_by_budget_and_single_axis_points_are_predicted(tmp_path, capsys):
    """A table of the sweep commands (benchmarks.sweep.COLUMNS) is read as it is written:
    rows grouped by their budget column (not by their exact P), unfinished points left out,
    a point listed twice counted once, and the single-axis rows (no budget) predicted as
    held-out points; noise-free data from the information model are predicted exactly."""
    from benchmarks.sweep import COLUMNS

    truth = TRUE["information"]
    m = T.InformationModel("loss")
    data = T.synthetic_sweep(m, truth, BUDGETS, K_E, K_C, 0.0, 1, np.random.default_rng(0))
    rows = []
    for i in range(data.n):
        rows.append({"task": "synthetic", "axis": "", "budget": f"{data.budget[i]:g}",
                     "P": f"{data.N[i] * (data.k_e[i] + K_C):g}", "N": f"{data.N[i]:g}",
                     "k_e": f"{data.k_e[i]:g}", "k_c": f"{K_C:g}", "seed": 0, "metric": "bpc",
                     "test": f"{data.y[i]:.10g}", "status": "finished",
                     "folder": f"/runs/p{i}"})  # fmt: skip
    rows.append({**rows[0]})  # the same run listed again (tradeoff and scaling tables)
    rows.append({**rows[1], "folder": "/runs/failed", "test": "", "status": "failed"})
    axis_points = [(50, 300.0), (200, 300.0), (100, 1000.0), (100, 5000.0)]
    for j, (n, ke) in enumerate(axis_points):
        y = float(m.predict(truth, {"N": np.array([n]), "k_e": np.array([ke]),
                                    "k_c": np.array([K_C])})[0])  # fmt: skip
        rows.append({"task": "synthetic", "axis": "N" if j < 2 else "d_m", "budget": "",
                     "P": f"{n * (ke + K_C):g}", "N": n, "k_e": ke, "k_c": f"{K_C:g}",
                     "seed": 0, "metric": "bpc", "test": f"{y:.10g}", "status": "finished",
                     "folder": f"/runs/axis{j}"})  # fmt: skip
    # a single-axis point at another k_c cannot be predicted by a fit at fixed k_c
    rows.append({**rows[-1], "k_c": "1500", "folder": "/runs/kc", "axis": "k_c"})
    lines = [",".join(COLUMNS)] + [",".join(str(r.get(c, "")) for c in COLUMNS) for r in rows]
    table = _write(tmp_path, "\n".join(lines) + "\n", "results.csv")

    (read,) = fit_theory.read_tables([table])
    assert list(read.budgets) == BUDGETS and read.n == data.n
    assert len(read.off_budget["y"]) == len(axis_points) + 1

    out = tmp_path / "out"
    assert (
        fit_theory.main([str(table), "--bootstrap", "4", "--starts", "3", "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "leaving out 1 point(s) without a result (1 failed)" in text
    assert "held-out points (single-axis sweeps" in text and "1 at another k_c left out" in text
    res = json.loads((out / "results.json").read_text())["results"]["synthetic"]
    held = res["models"]["information"]["held_out_points"]
    assert held["n"] == len(axis_points) and held["left_out_other_k_c"] == 1
    for point in held["points"]:
        assert point["predicted"] == pytest.approx(point["measured"], rel=1e-3)
    # the optimum at each budget, predicted by a fit on the other two, is the true model's
    # closed-form (Lagrange) optimum there
    for entry in res["models"]["information"]["held_out_budget_optimum"]:
        truth_k_e = m.closed_form_optimum(truth, entry["hidden"], K_C)
        assert entry["k_e"] == pytest.approx(truth_k_e, rel=0.02)
    assert "optimum at a budget held out of the fit" in text


def test_a_sweep_table_and_the_published_tables_are_read_together(tmp_path):
    """The published tables have no budget column: each is one sweep at its P, also when
    given beside a sweep table whose single-axis rows have an empty budget."""
    from benchmarks.sweep import COLUMNS

    row = {"task": "shd", "axis": "", "budget": "15300", "P": "15264", "N": "24", "k_e": "421",
           "k_c": "60", "seed": "0", "metric": "accuracy", "test": "0.44",
           "status": "finished", "folder": "/runs/a"}  # fmt: skip
    rows = [row, {**row, "N": "56", "k_e": "145", "P": "15200", "test": "0.43", "folder": "/b"},
            {**row, "axis": "N", "budget": "", "N": "8", "P": "7568", "folder": "/c"}]  # fmt: skip
    lines = [",".join(COLUMNS)] + [",".join(r.get(c, "") for c in COLUMNS) for r in rows]
    table = _write(tmp_path, "\n".join(lines) + "\n", "results.csv")
    tasks = {d.task: d for d in fit_theory.read_tables([table, *fit_theory.published_paths()])}
    assert set(tasks) == {"shd", "shd-adding", "enwik8"}
    assert list(tasks["shd"].budgets) == [15300] and len(tasks["shd"].off_budget["y"]) == 1
    for name in ("shd-adding", "enwik8"):
        assert len(tasks[name].budgets) == 1 and not len(tasks[name].off_budget["y"])
