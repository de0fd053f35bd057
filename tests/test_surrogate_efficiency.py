"""`benchmarks.surrogate_efficiency` end to end at the small preset, on toy stores."""

import csv
import json

import pytest
from morph_cell import make_branched_store

from benchmarks import surrogate_efficiency as study
from elmbridge.errors import UserError
from elmnet.neuron import ELMNeuron
from surrogate import stores as heldout
from surrogate.config import preset_config
from surrogate.data import inspect_store
from surrogate.model_file import save_model


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def toy_stores(tmp_path_factory):
    """Toy stores of the branched toy morphology named as the small preset wants them,
    and a model file of the preset's architecture to warm-start from."""
    root = tmp_path_factory.mktemp("efficiency")
    stores = root / "stores"
    make_branched_store(stores / "L5PC_1200ms.zarr", "L5PC", n_sims=4, n_time=1200, seed=0)
    make_branched_store(stores / "L5PC_2400ms.zarr", "L5PC", n_sims=2, n_time=2400, seed=1)
    make_branched_store(stores / "L5PC-ampa_1200ms.zarr", "L5PC-ampa", n_sims=4, n_time=1200,
                        seed=2)  # fmt: skip
    for i, cell in enumerate(("L5PC", "L5PC-ampa")):
        make_branched_store(stores / f"{cell}_test.zarr", cell, n_sims=3, n_time=1500,
                            seed=10 + i)  # fmt: skip
    info = inspect_store(stores / "L5PC_1200ms.zarr")
    model = ELMNeuron(preset_config(**study.PRESETS["small"]["fit"]).elm_config(info.n_inputs))
    save_model(model, root / "start.pt", epoch=0)
    return stores, root / "start.pt"


@pytest.fixture(scope="module")
def small(toy_stores):
    """The small preset run once on the toy stores."""
    stores, start = toy_stores
    out = stores.parent / "out"
    args = ["--preset", "small", "--stores", str(stores), "--out", str(out), "--init",
            str(start)]  # fmt: skip
    assert study.main(args) == 0
    return out, args


def test_small_preset_makes_every_table_and_figure(small):
    out, _ = small
    preset = study.PRESETS["small"]
    table = rows(out / "results.csv")
    assert {r["status"] for r in table} == {"finished"}
    assert {r["study"] for r in table} == set(study.STUDIES)
    seconds = sorted(float(r["train_seconds"]) for r in table if r["study"] == "seconds")
    assert seconds == [2.4, 4.8]  # 2 and 4 simulations of 1.2 s
    # Equal simulated seconds as 4 × 1.2 s and 2 × 2.4 s.
    lengths = {(int(r["sim_length_ms"]), int(r["n_sims"])) for r in table
               if r["study"] == "sim_length"}  # fmt: skip
    assert lengths == {(1200, 4), (2400, 2)}
    # The recipe: the base and one change at a time; batch 4 keeps the windows (2 × 2).
    recipe = [r for r in table if r["study"] == "recipe"]
    assert len(recipe) == 1 + sum(len(v) for v in preset["recipe"].values())
    wide = next(r for r in recipe if r["batch_size"] == "4")
    assert int(wide["batches_per_epoch"]) * 4 == 2 * 2
    warm = {(r["cell"], r["init"] != "random") for r in table if r["study"] == "warm_start"}
    assert warm == {("L5PC-ampa", False), ("L5PC-ampa", True)}
    # Every fit of a cell is scored on the whole test store of that cell: 3 × 1.5 s, the
    # spike bins after the skipped 500 ms counted independently from the store.
    protocol = preset_config(**preset["fit"]).protocol()
    for cell in ("L5PC", "L5PC-ampa"):
        path = out.parent / "stores" / f"{cell}_test.zarr"
        bins = heldout.scored_spike_bins(path, protocol)
        assert {int(r["n_test_spike_bins"]) for r in table if r["cell"] == cell} == {bins}
    for r in table:
        assert float(r["AUC_lo"]) <= float(r["AUC"]) <= float(r["AUC_hi"])
        assert float(r["soma_RMSE_lo"]) <= float(r["soma_RMSE"]) <= float(r["soma_RMSE_hi"])
        assert 1 <= int(r["epochs_run"]) <= 2 and float(r["fit_wall_s"]) > 0
        metrics = json.loads((out / r["folder"] / "result.json").read_text())
        assert metrics["test_metrics"]["split"]["n_simulations"] == 3
    assert (out / "auc_vs_seconds.png").stat().st_size > 10_000
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config"]["preset"]["cell"] == "L5PC" and provenance["software"]


def test_rerun_skips_finished_points_and_report_only_fits_nothing(small, capsys):
    out, args = small
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert study.main(args) == 0
    assert "0 points failed" in capsys.readouterr().out
    assert study.main([*args, "--report-only"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == stamp
    assert len(rows(out / "results.csv")) == len(stamp) + 2  # shared points: a row per study


def test_dry_run_lists_points_and_bad_requests_are_one_line(toy_stores, tmp_path, capsys):
    stores, start = toy_stores
    args = ["--preset", "small", "--stores", str(stores), "--out", str(tmp_path / "dry")]
    assert study.main([*args, "--dry-run", "--init", str(start)]) == 0
    words = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    listed = [w for w in words if w in study.STUDIES]
    # 2 seconds + 2 sim_length + 1 + 6 recipe + 2 warm_start rows.
    assert listed.count("seconds") == 2 and listed.count("warm_start") == 2
    assert len(listed) == 13
    assert study.main([*args, "--dry-run"]) == 0  # without --init: no warm_start study
    text = capsys.readouterr().out
    assert "distinct fits" in text
    assert "warm_start" not in [line.split()[0] for line in text.splitlines() if line.strip()]
    assert not (tmp_path / "dry").exists()
    with pytest.raises(UserError, match=r"no stores\.json"):
        study.main(["--preset", "small", "--report-only", "--out", str(tmp_path / "none")])
    with pytest.raises(UserError, match="has no store"):
        study.main(["--preset", "small", "--stores", str(tmp_path), "--out", str(tmp_path / "o")])


def test_a_short_test_store_grows_under_its_new_size(monkeypatch):
    """The cached test store is renamed to its grown size and extended until it holds the
    spike bins asked for; a rerun finds the grown store and simulates nothing."""
    import shutil

    from biophys.store import completed_simulations
    from surrogate.data import StoreReader
    from surrogate.stores import default_store_path

    made = []

    def fake_ensure_data(config):
        # The toy cell stands in for biophys: simulation i is the same at every size.
        path = default_store_path(config.cell, config.n_sims, config.duration_ms,
                                  config.data_seed)  # fmt: skip
        have = len(completed_simulations(path)) if path.exists() else 0
        if have < config.n_sims:
            made.append((path.name, have))
            shutil.rmtree(path, ignore_errors=True)
            make_branched_store(path, config.cell, config.n_sims, config.duration_ms, seed=3)
        return inspect_store(path), 1.0 if have < config.n_sims else None

    monkeypatch.setattr(heldout, "ensure_data", fake_ensure_data)
    protocol = preset_config(max_spikes=1_000_000).protocol()
    preset = {"test": dict(n_sims=2, duration_ms=1500, data_seed=9, max_sims=40)}
    # Ask for more spike bins than the two simulations hold.
    first = default_store_path("L5PC", 2, 1500, 9)
    first.parent.mkdir(parents=True, exist_ok=True)
    make_branched_store(first, "L5PC", 2, 1500, seed=3)
    two = heldout.scored_spike_bins(first, protocol)
    preset["test"]["min_spike_bins"] = two + 1
    entry = heldout.make_test_store("L5PC", preset["test"], protocol)
    n = entry["n_sims"]
    assert n > 2 and not first.exists()
    assert entry["path"] == str(default_store_path("L5PC", n, 1500, 9).resolve())
    # The spike bins after the skipped 500 ms, counted afresh from the store.
    reader = StoreReader(entry["path"])
    count = sum(int(reader.read(i)[1][500:].sum()) for i in range(n))
    assert entry["scored_spike_bins"] == count >= two + 1
    assert heldout.cached_test_sizes("L5PC", preset["test"]) == [n]
    made.clear()
    assert heldout.make_test_store("L5PC", preset["test"], protocol)["path"] == entry["path"]
    assert made == []
