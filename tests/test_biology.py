"""`benchmarks.biology` (small preset on toy stores), its analysis helpers, and the four
notebooks run as plain scripts on its tables (their CI small mode)."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from morph_cell import make_branched_store, n_segments

from benchmarks import biology
from benchmarks.biology_analysis import (
    budget_for_k_e,
    fci,
    interval_bars,
    load_network_results,
    margin_table,
    network_optimum,
)
from elmbridge.errors import UserError
from surrogate.data import inspect_store
from surrogate.morphology import morphology_branches

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "01_complexity_per_mechanism.py": ["01_complexity.png", "01_margin.csv", "01_conclusion.txt"],
    "02_timescales.py": ["02_learned_tau.png", "02_tau_max.png", "02_freeze.png",
                         "02_freeze_table.csv", "02_conclusion.txt"],
    "03_branches.py": ["03_routing.png", "03_d_tree.png", "03_weights_on_morphology.png",
                       "03_routing.csv", "03_conclusion.txt"],
    "04_neuron_vs_network.py": ["04_k_e.png", "04_k_e_table.csv", "04_conclusion.txt"],
}  # fmt: skip


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def run_notebook(notebook: str, results: Path, figures: Path) -> subprocess.CompletedProcess:
    """Execute a notebook's percent script as a plain Python script (no Jupyter needed)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "BIOLOGY_RESULTS": str(results), "BIOLOGY_FIGURES": str(figures),
           "MPLBACKEND": "Agg", "PYTHONPATH": path}  # fmt: skip
    env.pop("NETWORK_RESULTS", None)  # notebook 4 then reads the published table
    return subprocess.run([sys.executable, str(REPO / "notebooks" / notebook)], cwd=figures,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def biology_small(tmp_path_factory):
    """The small preset on toy stores of the branched toy morphology (≈30 s)."""
    root = tmp_path_factory.mktemp("biology")
    for i, cell in enumerate(biology.PRESETS["small"]["cells"]):
        make_branched_store(root / "stores" / f"{cell}.zarr", cell, n_sims=4, seed=i)
    out = root / "out"
    biology.main(["--preset", "small", "--stores", str(root / "stores"), "--out", str(out)])
    return out


def test_small_preset_makes_every_table(biology_small):
    preset = biology.PRESETS["small"]
    table = rows(biology_small / "results.csv")
    assert {r["status"] for r in table} == {"finished"}
    studies = {r["study"] for r in table}
    assert studies == set(biology.STUDIES)
    grid = [(r["cell"], int(r["d_m"])) for r in table if r["study"] == "d_m"]
    assert sorted(grid) == sorted((c, d) for c in preset["cells"] for d in preset["d_m"])
    # The three branched routings have the same parameter count by construction; count
    # it from the ELM formula: synapse slots + MLP (d_tree + d_m → 2 d_m → d_m) + readout.
    routing = {r["routing"]: r for r in table if r["study"] == "routing"}
    d_m, d_tree = preset["d_m_ref"], preset["routing_d_tree"]
    d_brch = int(routing["morphology"]["d_brch"])
    mlp = (d_tree + d_m) * 2 * d_m + 2 * d_m + 2 * d_m * d_m + d_m
    expected = d_tree * d_brch + mlp + 2 * d_m + 2
    for name in ("neuronio", "random", "morphology"):
        assert int(routing[name]["n_parameters"]) == expected
    assert int(routing["none"]["d_tree"]) == 2 * n_segments()


def test_points_of_a_cell_with_a_held_out_store_are_tested_on_it(tmp_path):
    preset = biology.PRESETS["small"]
    stores = {}
    for i, cell in enumerate(preset["cells"]):
        make_branched_store(tmp_path / f"{cell}.zarr", cell, n_sims=4, seed=i)
        stores[cell] = inspect_store(tmp_path / f"{cell}.zarr")
    held_out = str((tmp_path / "L5PC_test.zarr").resolve())
    configs = biology.point_configs(preset, stores, 0, {"L5PC": held_out})
    for _, _, config in configs:
        assert config.test_data == (held_out if config.cell == "L5PC" else None)
    assert biology.prepare_test_stores(preset, None) == {}  # the small preset has none
    assert biology.prepare_test_stores(biology.PRESETS["cpu"], tmp_path) == {}  # --stores


def test_results_carry_the_fits_intervals_and_spike_counts(biology_small):
    import json

    for row in rows(biology_small / "results.csv"):
        result = json.loads((biology_small / row["folder"] / "result.json").read_text())
        metrics = result["test_metrics"]
        assert int(row["test_spike_bins"]) == metrics["split"]["n_spike_bins_scored"]
        for key in ("AUC", "soma_RMSE"):
            low, high = float(row[f"{key} low"]), float(row[f"{key} high"])
            if key in metrics["intervals_95"]:
                assert [low, high] == pytest.approx(metrics["intervals_95"][key])
                assert low <= high
            else:
                assert math.isnan(low) and math.isnan(high)


def test_small_preset_tables_are_consistent(biology_small):
    preset = biology.PRESETS["small"]
    learned = rows(biology_small / "learned_tau.csv")
    assert len(learned) == preset["d_m_ref"] * len(preset["learn_tau_cells"])
    assert all(1.0 <= float(r["tau_ms"]) <= 150.0 for r in learned)
    freeze = rows(biology_small / "freeze.csv")
    for point in {r["point"] for r in freeze}:
        mine = [r for r in freeze if r["point"] == point]
        assert [float(r["tau_cut_ms"]) for r in mine] == [math.inf, *preset["freeze_cuts_ms"]]
        assert float(mine[0]["AUC_lost"]) == 0.0
        # n_frozen counts the units above each cut among the log-spaced initial τ (fixed τ).
        if mine[0]["learn_tau_m"] == "False":
            taus = np.logspace(0, np.log10(150.0), preset["d_m_ref"])
            assert [int(r["n_frozen"]) for r in mine[1:]] == [
                int((taus > c).sum()) for c in preset["freeze_cuts_ms"]
            ]
    # Every input of the morphology-routed fit on the branch of its subtree.
    weights = rows(biology_small / "weights.csv")
    info = inspect_store(biology_small.parent / "stores" / "L5PC.zarr")
    branches = morphology_branches(info.segments, info.input_kind, info.input_segment,
                                   preset["routing_d_tree"])  # fmt: skip
    expected = {c: k for k, b in enumerate(branches) for c in b}
    assert {int(r["input"]): int(r["branch"]) for r in weights} == expected
    segments = rows(biology_small / "segments.csv")
    assert len(segments) == len(preset["cells"]) * n_segments()


def test_rerun_reuses_every_finished_point(biology_small, capsys):
    stamp = {p: p.stat().st_mtime_ns for p in biology_small.glob("runs/*/result.json")}
    biology.main(["--preset", "small", "--stores", str(biology_small.parent / "stores"),
                  "--out", str(biology_small)])  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in biology_small.glob("runs/*/result.json")} == stamp
    assert "0 points failed" in capsys.readouterr().out


def test_bad_biology_requests_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"has no store L5PC\.zarr"):
        biology.main(["--preset", "small", "--stores", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="--seed must be"):
        biology.main(["--preset", "small", "--seed", "-1"])


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_notebook_runs_in_small_mode(notebook, biology_small, tmp_path):
    """Each notebook, executed as its percent script, writes every figure and table."""
    done = run_notebook(notebook, biology_small, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NOTEBOOKS[notebook]:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name


def test_notebooks_run_on_partial_results(biology_small, tmp_path):
    """While the command still runs, only some studies are finished: nothing may break."""
    partial = tmp_path / "partial"
    partial.mkdir()
    table = pd.read_csv(biology_small / "results.csv")
    table[table["study"] == "d_m"].to_csv(partial / "results.csv", index=False)
    for name, columns in biology.EMPTY.items():
        (partial / f"{name}.csv").write_text(",".join(columns) + "\n")
    (partial / "segments.csv").write_text((biology_small / "segments.csv").read_text())
    for notebook in sorted(NOTEBOOKS):
        done = run_notebook(notebook, partial, tmp_path)
        assert done.returncode == 0, (notebook, done.stderr[-3000:])


def test_fci_matches_its_definition():
    assert fci(0.999) == pytest.approx(0.0)
    assert fci(0.9) == pytest.approx(1.0)
    assert fci(0.99) == pytest.approx(0.5)
    assert fci(1.0) == -math.inf


def test_margin_table_picks_the_smallest_good_model():
    grid = pd.DataFrame({
        "cell": ["a"] * 4 + ["b"] * 3, "d_m": [1, 2, 5, 10, 1, 5, 20],
        "AUC": [0.90, 0.985, 0.99, 0.988, 0.97, 0.95, 0.96],
        "soma_RMSE": [1.0] * 7, "n_parameters": [10, 20, 50, 100, 10, 50, 200],
        "k_e": [5, 15, 45, 95, 5, 45, 195],
    })  # fmt: skip
    table = margin_table(grid, 0.005).set_index("cell")
    assert table.loc["a", "best_d_m"] == 5 and table.loc["a", "d_m_at_margin"] == 2
    assert table.loc["a", "k_e_at_margin"] == 15
    assert table.loc["a", "FCI_at_margin"] == pytest.approx(math.log10(15) / 2)
    assert table.loc["b", "best_d_m"] == 1 and table.loc["b", "d_m_at_margin"] == 1
    assert margin_table(grid, 0.0).set_index("cell").loc["a", "d_m_at_margin"] == 5
    assert math.isnan(table.loc["a", "best_AUC_low"])  # no interval columns given
    ranged = grid.assign(**{"AUC low": grid["AUC"] - 0.01, "AUC high": grid["AUC"] + 0.02})
    row = margin_table(ranged, 0.005).set_index("cell").loc["a"]
    assert (row["best_AUC_low"], row["best_AUC_high"]) == pytest.approx((0.98, 1.01))
    assert (row["AUC_at_margin_low"], row["AUC_at_margin_high"]) == pytest.approx((0.975, 1.005))
    # The best of "a" (0.99) has its interval from 0.98; d_m 1 (0.90, up to 0.92) stays
    # below it, d_m 2 (up to 1.005) reaches it: the smallest unresolved model is d_m 2.
    assert row["d_m_unresolved"] == 2 and math.isnan(table.loc["a", "d_m_unresolved"])
    wide = grid.assign(**{"AUC low": grid["AUC"] - 0.1, "AUC high": grid["AUC"] + 0.1})
    assert margin_table(wide, 0.005).set_index("cell").loc["a", "d_m_unresolved"] == 1
    with pytest.raises(UserError, match="non-negative"):
        margin_table(grid, -0.1)


def test_interval_bars_are_the_distances_to_the_interval_ends():
    rows = pd.DataFrame({"AUC": [0.9, 0.95], "AUC low": [0.85, 0.951], "AUC high": [0.93, 0.97]})
    bars = interval_bars(rows, "AUC")
    assert bars == pytest.approx(np.array([[0.05, 0.0], [0.03, 0.02]]))  # 0.95 < its low: 0
    assert interval_bars(rows.drop(columns=["AUC low", "AUC high"]), "AUC") is None


def test_network_optimum_and_the_budget_that_would_reach_a_k_e(tmp_path):
    sweep = pd.DataFrame({
        "budget": [1000] * 4 + [10000] * 4, "k_e": [10, 40, 10, 40, 10, 40, 160, 160],
        "test": [0.5, 0.4, 0.6, 0.45, 0.5, 0.7, 0.6, 0.62], "seed": [0, 0, 1, 1, 0, 0, 0, 1],
        "status": ["finished"] * 8,
    })  # fmt: skip
    path = tmp_path / "results.csv"
    sweep.to_csv(path, index=False)
    table, source = load_network_results(path)
    best = network_optimum(table).set_index("budget")["best_k_e"].to_dict()
    assert best == {1000: 10, 10000: 40} and source == str(path)
    # k_e* = 10 · (budget / 1000)^(log10 4): reaching k_e 160 needs budget 100,000.
    assert budget_for_k_e(network_optimum(table), 160) == pytest.approx(1e5, rel=1e-9)
    published, name = load_network_results(None)
    assert "published" in name and published["budget"].nunique() == 1
    assert math.isnan(budget_for_k_e(network_optimum(published), 1000))


def test_execute_notebooks_writes_ipynb_with_outputs_and_provenance(biology_small, tmp_path):
    """The command that makes docs/notebooks (needs the optional extra `notebooks`)."""
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    import nbformat

    from benchmarks import execute_notebooks

    out = tmp_path / "executed"
    execute_notebooks.main(["--results", str(biology_small), "--out", str(out),
                            "--only", "04_neuron_vs_network"])  # fmt: skip
    notebook = nbformat.read(out / "04_neuron_vs_network.ipynb", as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not any(o.get("output_type") == "error" for o in outputs)
    record = pd.read_json(out / "provenance.json", typ="series")
    assert record["biology"]["config"]["preset"] == "small"
    assert (out / "figures" / "04_conclusion.txt").is_file()


def test_execute_notebooks_refuses_a_folder_without_results(tmp_path):
    from benchmarks import execute_notebooks

    with pytest.raises(UserError, match=r"holds no results\.csv"):
        execute_notebooks.main(["--results", str(tmp_path), "--out", str(tmp_path / "o")])
    (tmp_path / "results.csv").write_text("study\n")
    with pytest.raises(UserError, match="no notebook '07'"):
        execute_notebooks.main(["--results", str(tmp_path), "--only", "07"])


def test_dry_run_lists_points_and_makes_nothing(biology_small, tmp_path, capsys):
    stores = biology_small.parent / "stores"
    biology.main(["--preset", "small", "--stores", str(stores), "--out", str(tmp_path / "o"),
                  "--dry-run"])  # fmt: skip
    listed = capsys.readouterr().out
    preset = biology.PRESETS["small"]
    n_grid = sum(line.startswith("d_m ") for line in listed.splitlines())
    assert n_grid == len(preset["cells"]) * len(preset["d_m"])
    # One row per (study, point); the routing study's morphology point is also a d_tree row.
    assert f"{len(rows(biology_small / 'results.csv')) - 1} distinct fits" in listed
    # Without stores, a dry run says what it would simulate and simulates nothing.
    biology.main(["--preset", "small", "--out", str(tmp_path / "o2"), "--dry-run"])
    assert "would first simulate the stores of L5PC" in capsys.readouterr().out
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
