"""Network sweeps: plain SHD, the sweep engine, the trade-off / axes / scaling commands.

Points are tiny (a few steps on the small SHD files of tests/task_files.py) and run in
this process (--scheduler synchronous) except in the one test of the real LocalCluster.
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from task_files import write_shd_pair

from benchmarks import axes, scaling, sweep, tradeoff
from benchmarks.sweep_presets import PRESETS
from elmbridge import sweep as engine
from elmbridge.errors import UserError
from elmnet import train
from elmnet.config import ELMNetworkConfig
from elmnet.network import ELMNetwork
from elmnet.params import network_parameters
from elmnet.tasks import TASKS, shd_adding, shd_classify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 5,170 parameters: d_m 2 → N 7 (P 5,155), d_m 3 → N 5 (P 5,165), both within 1 %.
TINY = ["--task", "shd", "--budget", "5170", "--k-c", "60", "--d-m", "2", "3", "--seeds", "2",
        "--steps", "4", "--bin-ms", "100", "--set", "eval-every=2", "--set", "log-every=2",
        "--scheduler", "synchronous", "--threads", "1", "--no-progress"]  # fmt: skip
# What may differ between two runs of one sweep: wall time and where the folders are.
VOLATILE = ("wall_s", "folder")


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=80, n_test=30)


def table(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(fh)]


def run_tradeoff(shd_dir, runs: Path, *extra):
    return tradeoff.main([*TINY, "--data", str(shd_dir), "--runs-dir", str(runs), *extra])


# --------------------------------------------------------------------------- plain SHD


def test_shd_task_is_registered_with_the_adding_setup():
    assert TASKS["shd"] is shd_classify
    assert shd_classify.NETWORK == {**shd_adding.NETWORK, "n_out": 20}
    assert shd_classify.TRAINING == shd_adding.TRAINING
    assert ELMNetworkConfig.for_task("shd").n_out == 20


def test_shd_classification_learns_above_chance(tmp_path):
    data = write_shd_pair(tmp_path / "shd", n_train=200, n_test=60)
    out = tmp_path / "run"
    args = ["--task", "shd", "--data", data, "--out", out, "--N", 16, "--d-m", 3, "--k-c", 60,
            "--bin-ms", 100, "--dropout-in", 0, "--dropout-rec", 0, "--steps", 300,
            "--eval-every", 100, "--log-every", 50, "--no-progress"]  # fmt: skip
    assert train.main(list(map(str, args))) == 0
    rows = train.read_metrics(out / "metrics.csv")
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert losses[0] > 2.8 and losses[-1] < losses[0] - 0.8  # from chance, ln 20 = 3.0 nats
    result = json.loads((out / "result.json").read_text())
    # The test files code the digit, not the language: 0.5 is the ceiling, 0.05 chance.
    assert result["metric"] == "accuracy" and result["n"] == 60
    assert result["test"] > 0.2 and result["valid"] > 0.1
    record = json.loads((out / "run.json").read_text())["data"]
    assert record["task"] == "shd" and record["pool_sizes"] == {"train": 160, "valid": 40,
                                                                "test": 60}  # fmt: skip


def test_shd_validation_split_is_the_adding_one(shd_dir):
    from elmnet.tasks.shd import load_split

    train_split = load_split(shd_dir / "shd_train.h5")
    test_split = load_split(shd_dir / "shd_test.h5")
    plain = shd_classify.SHDClassify(train_split, test_split, bin_ms=100, data_seed=3)
    adding = shd_adding.SHDAdding(train_split, test_split, bin_ms=100, data_seed=3)
    assert (plain.pools["valid"] == adding.pools["valid"]).all()
    x, y = plain.train_batch(seed=1, step=5, batch_size=4)
    x2, y2 = plain.train_batch(seed=1, step=5, batch_size=4)
    assert x.shape == (4, 10, 700) and (x == x2).all() and (y == y2).all()


# --------------------------------------------------------------------------- commands


def test_tiny_tradeoff_end_to_end(shd_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert run_tradeoff(shd_dir, runs) == 0
    out = capsys.readouterr().out
    assert "interior optimum in d_m" in out and "test accuracy" in out
    rows = table(runs)
    assert [(r["d_m"], r["seed"]) for r in rows] == [("2", "0"), ("2", "1"), ("3", "0"), ("3", "1")]
    assert list(next(csv.DictReader(open(runs / "results.csv")))) == list(sweep.COLUMNS)
    for row in rows:
        assert row["status"] == "finished" and row["error"] == ""
        assert row["task"] == "shd" and row["budget"] == "5170" and row["steps"] == "4"
        assert 0 <= float(row["test"]) <= 1 and 0 <= float(row["valid"]) <= 1
        assert row["device"] == "cpu" and row["metric"] == "accuracy"
    assert [r["N"] for r in rows] == ["7", "7", "5", "5"]
    import xarray as xr

    with xr.open_dataset(runs / "results.nc", engine="scipy") as data:
        assert data.sizes["point"] == 4 and list(data["P"].values) == [5155, 5155, 5165, 5165]
    assert (runs / "tradeoff_d_m.png").is_file()
    record = json.loads((runs / "provenance.json").read_text())
    assert record["points"]["finished"] == 4 and record["config"]["seeds"] == 2
    assert record["config"]["train"]["steps"] == 4 and "torch" in record["software"]
    # Each point is an elmnet.train run folder named by the hash of its config.
    folders = sorted(p for p in runs.iterdir() if p.name.startswith("shd_"))
    assert len(folders) == 4 and all((f / "result.json").is_file() for f in folders)
    # A rerun skips every finished point and gives the same table.
    assert run_tradeoff(shd_dir, runs) == 0
    assert "4 of 4 points finished before" in capsys.readouterr().out
    assert table(runs) == rows
    # --report-only trains nothing: a third seed is listed as unfinished, no folder made.
    assert run_tradeoff(shd_dir, runs, "--seeds", "3", "--report-only") == 0
    third = [r for r in table(runs) if r["seed"] == "2"]
    assert [r["status"] for r in third] == ["unfinished", "unfinished"]
    assert len([p for p in runs.iterdir() if p.name.startswith("shd_")]) == 4
    assert [r for r in table(runs) if r["seed"] != "2"] == rows


def test_axes_and_scaling_commands(shd_dir, tmp_path, capsys):
    common = ["--task", "shd", "--data", str(shd_dir), "--seeds", "1", "--steps", "2",
              "--bin-ms", "100", "--set", "eval-every=2", "--scheduler", "synchronous",
              "--threads", "1", "--no-progress"]  # fmt: skip
    runs = tmp_path / "axes"
    assert axes.main([*common, "--runs-dir", str(runs), "--N", "3", "6", "--d-m", "2", "3",
                      "--k-c", "30", "60", "--base-N", "3", "--base-d-m", "2",
                      "--base-k-c", "30"]) == 0  # fmt: skip
    rows = table(runs)
    assert [r["axis"] for r in rows].count("N") == 2 and len(rows) == 6
    assert len({r["P"] for r in rows}) == 4  # the base point is shared by the three axes
    assert len([p for p in runs.iterdir() if p.name.startswith("shd_")]) == 4
    assert (runs / "axes.png").is_file()
    runs = tmp_path / "scaling"
    assert scaling.main([*common, "--runs-dir", str(runs), "--budgets", "5170", "51700",
                         "--d-m", "2", "3", "--tolerance", "0.05"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "best allocation per budget" in out and "Pareto frontier" in out
    assert "best N ∝ P^a" in out and (runs / "scaling.png").is_file()
    assert {r["budget"] for r in table(runs)} == {"5170", "51700"}


# --------------------------------------------------------------------------- counting


def built_parameters(config) -> int:
    return sum(p.numel() for p in ELMNetwork(config).parameters())


@pytest.mark.parametrize("task", ["shd", "shd-adding"])
def test_cpu_preset_points_have_exact_counts_within_one_percent(task, tmp_path):
    preset = PRESETS["cpu"][task]
    settings = sweep.Settings(task=task, data=None, train=dict(preset.train), runs_dir=tmp_path)
    specs = [sweep.Spec(d_m, preset.k_c, 0, budget=b) for b in preset.budgets for d_m in preset.d_m]
    for item in sweep.plan(specs, settings):
        assert item.point is not None, item.error
        config = sweep.network_for(item.spec, task)
        assert item.fields["P"] == built_parameters(config) == network_parameters(config).total
        assert abs(item.fields["P"] - item.spec.budget) <= 0.01 * item.spec.budget
    assert preset.budgets[1] / preset.budgets[0] >= 9.9  # a decade apart


def test_points_off_budget_are_rejected_with_a_fitting_budget(tmp_path):
    settings = sweep.Settings(task="shd-adding", data=None, train={}, runs_dir=tmp_path)
    specs = [sweep.Spec(d_m, 300, 0, budget=77_000) for d_m in (3, 5, 9, 15, 25)]
    planned = sweep.plan(specs, settings)
    for item in planned:
        config = sweep.network_for(item.spec, "shd-adding")
        exact = built_parameters(config)
        assert item.fields["P"] == exact == network_parameters(config).total
        assert (item.point is None) == (abs(exact - 77_000) > 770)
    rejected = [item for item in planned if item.point is None]
    assert [item.spec.d_m for item in rejected] == [15, 25]
    assert "-2.5 % from the budget 77,000" in rejected[0].error
    hint = int(rejected[0].error.rsplit("a budget of ", 1)[1].split()[0].replace(",", ""))
    again = sweep.plan([sweep.Spec(15, 300, 0, budget=hint)], settings)[0]
    assert again.point is not None


def test_paper_preset_counts_with_its_tolerance(tmp_path):
    preset = PRESETS["paper"]["shd-adding"]
    settings = sweep.Settings(task="shd-adding", data=None, train=dict(preset.train),
                              runs_dir=tmp_path, tolerance=preset.tolerance)  # fmt: skip
    specs = [sweep.Spec(d_m, 300, 0, budget=preset.budgets[0]) for d_m in preset.d_m]
    planned = sweep.plan(specs, settings)
    # The published N of every d_m (docs/shared published-sweeps.md).
    assert [item.fields["N"] for item in planned] == [155, 130, 111, 96, 73, 57, 46, 32, 21, 15]
    assert all(item.point is not None for item in planned)
    assert planned[0].fields["steps"] == 140_000


# --------------------------------------------------------------------------- resume


def test_stopped_sweep_resumes_to_the_same_table(shd_dir, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_tradeoff(shd_dir, straight, "--steps", "6") == 0
    assert run_tradeoff(shd_dir, stopped, "--steps", "6", "--stop-after", "3") == 0
    assert {r["status"] for r in table(stopped)} == {"unfinished"}
    assert run_tradeoff(shd_dir, stopped, "--steps", "6") == 0
    assert table(stopped) == table(straight)
    folder = next(p for p in stopped.iterdir() if p.name.startswith("shd_"))
    assert engine.point_record(folder)["invocations"] == 2  # resumed, not restarted
    a = torch.load(folder / "best.pt", weights_only=True)["model"]
    b = torch.load(straight / folder.name / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sweep_killed_with_sigkill_resumes_to_the_same_table(shd_dir, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_tradeoff(shd_dir, straight, "--steps", "30") == 0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    args = [*TINY, "--data", str(shd_dir), "--runs-dir", str(killed), "--steps", "30"]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.tradeoff", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(killed.glob("shd_*/result.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        # Into the second point: it has a run folder but no result yet.
        while len(list(killed.glob("shd_*/run.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = len(list(killed.glob("shd_*/result.json")))
    assert 1 <= finished < 4
    assert run_tradeoff(shd_dir, killed, "--steps", "30") == 0
    assert table(killed) == table(straight)


# --------------------------------------------------------------------------- engine


def test_failed_points_are_retried_once_then_reported(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    points = [engine.Point(name, str(tmp_path / name), {"name": name, "calls": str(calls)})
              for name in ("flaky", "broken", "fine")]  # fmt: skip
    outcomes = engine.run_sweep(points, flaky_job, None, progress=False)
    assert [o.status for o in outcomes] == ["finished", "failed", "finished"]
    assert [o.attempts for o in outcomes] == [2, 2, 1]
    assert outcomes[1].error == "RuntimeError: broken for good"
    assert sorted(p.name for p in calls.iterdir()) == ["broken-1", "broken-2", "fine-1",
                                                       "flaky-1", "flaky-2"]  # fmt: skip


def flaky_job(job: dict) -> str:
    """Fails on its first call ("flaky"), on every call ("broken"), or never ("fine");
    a success writes a finished run folder."""
    from elmbridge.runs import RunFolder

    calls = Path(job["calls"])
    attempt = 1 + sum(1 for p in calls.iterdir() if p.name.startswith(job["name"]))
    (calls / f"{job['name']}-{attempt}").touch()
    if job["name"] == "broken" or (job["name"] == "flaky" and attempt == 1):
        raise RuntimeError(f"{job['name']} for good" if job["name"] == "broken" else "once")
    folder = RunFolder(Path(job["calls"]).parent / job["name"])
    folder.start("test", {}, 0)
    folder.finish({"ok": True})
    return "done"


def test_a_failing_point_is_a_row_not_a_stop(shd_dir, tmp_path, capsys, monkeypatch):
    from elmnet import train

    def refuse(self):
        raise UserError("n_val must be at least 1 (the simulated failure of a point)")

    runs = tmp_path / "runs"
    # Every point fails inside elmnet.train's loop, twice (synchronous: same process).
    monkeypatch.setattr(train.Run, "train_step", refuse)
    assert run_tradeoff(shd_dir, runs) == 0
    rows = table(runs)
    assert {r["status"] for r in rows} == {"failed"} and len(rows) == 4
    assert rows[0]["error"].startswith("UserError: n_val must be at least 1")
    assert "failed: budget 5170" in capsys.readouterr().out


def test_real_local_cluster(shd_dir, tmp_path, cli):
    """The default path, as a user runs it: a LocalCluster of 2 worker processes."""
    runs = tmp_path / "runs"
    args = [a for a in TINY if a not in ("--scheduler", "synchronous")]
    args[args.index("--seeds") + 1] = "1"
    done = cli("benchmarks.tradeoff", *args, "--workers", "2", "--data", shd_dir,
               "--runs-dir", runs, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "interior optimum in d_m" in done.stdout
    rows = table(runs)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert (runs / "results.nc").is_file()


def test_pack_sweep_equals_solo_sweep(shd_dir, tmp_path):
    """--pack 5: the six d_m-2 points train as a pack of five and one alone, the two d_m-3
    points as a pack of two; the table is --pack 1's (elmnet.train_packed's equality with
    solo runs is tested in tests/test_train_packed.py)."""
    common = ["--task", "shd", "--data", str(shd_dir), "--seeds", "2", "--steps", "2",
              "--bin-ms", "100", "--set", "eval-every=2", "--scheduler", "synchronous",
              "--threads", "1", "--no-progress", "--N", "3", "6", "--d-m", "2", "3",
              "--k-c", "30", "60", "--base-N", "3", "--base-d-m", "2",
              "--base-k-c", "30"]  # fmt: skip
    assert axes.main([*common, "--runs-dir", str(tmp_path / "solo")]) == 0
    assert axes.main([*common, "--runs-dir", str(tmp_path / "packed"), "--pack", "5"]) == 0
    rows = table(tmp_path / "packed")
    assert rows == table(tmp_path / "solo")
    assert {r["status"] for r in rows} == {"finished"}
    folders = sorted(p for p in (tmp_path / "packed").iterdir() if p.name.startswith("shd_"))
    packs = sorted(engine.point_record(f)["pack"] for f in folders)
    assert packs == [1, 2, 2, 5, 5, 5, 5, 5]
    record = json.loads((tmp_path / "packed" / "provenance.json").read_text())
    assert record["config"]["pack"] == 5 and record["points"]["pack"] == 5
    assert record["points"]["rows_trained_in_packs"] == len(rows) - 1


def pack_job(jobs: list[dict]) -> list[str]:
    """Writes a finished folder per member (or fails for a member named "broken")."""
    return [flaky_job(job) for job in jobs]


def test_engine_packs_on_dask(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    names = ["fine", "flaky", "broken", "alone", "other"]
    keys = {"fine": 0, "flaky": 0, "broken": 1, "alone": 2, "other": 1}
    points = [engine.Point(n, str(tmp_path / n), {"name": n, "calls": str(calls), "key": keys[n]})
              for n in names]  # fmt: skip
    packs = engine.pack_points(points, 2, lambda p: p.job["key"])
    assert [[m.name for m in p.members] or p.name for p in packs] == [
        ["fine", "flaky"], ["broken", "other"], "alone"]  # fmt: skip
    resources = engine.Resources(workers=1, threads=1, processes=False)
    with engine.sweep_client(resources, len(points)) as (client, _):
        outcomes = engine.run_sweep(points, flaky_job, client, progress=False, pack=2,
                                    pack_key=lambda p: p.job["key"], pack_fn=pack_job)  # fmt: skip
    status = {o.point.name: (o.status, o.attempts) for o in outcomes}
    # The pack of fine and flaky failed once (flaky) and was retried as a pack; the pack
    # of broken and other failed twice, so both of its points fail.
    assert status == {"fine": ("finished", 2), "flaky": ("finished", 2),
                      "broken": ("failed", 2), "other": ("failed", 2),
                      "alone": ("finished", 1)}  # fmt: skip
    assert [o.point.name for o in outcomes] == names
    assert outcomes[0].result == "done"


def test_points_on_dask_keep_freed_memory(tmp_path, monkeypatch):
    """A point's job on a Dask worker runs after the worker's process was set to keep
    freed memory for reuse, as a command's own process is (workers never pass through
    run_cli)."""
    kept = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: kept.append(True))
    calls = tmp_path / "calls"
    calls.mkdir()
    points = [engine.Point("fine", str(tmp_path / "fine"), {"name": "fine", "calls": str(calls)})]
    resources = engine.Resources(workers=1, threads=1, processes=False)
    with engine.sweep_client(resources, 1) as (client, _):
        outcomes = engine.run_sweep(points, flaky_job, client, progress=False)
    assert [o.status for o in outcomes] == ["finished"]
    assert kept == [True]


def test_resources_layout_and_checks():
    assert engine.Resources(cores=16).local_layout(30) == (16, 1)
    assert engine.Resources(cores=16).local_layout(4) == (4, 4)
    assert engine.Resources(cores=16, gpus=4, points_per_gpu=2).local_layout(30) == (4, 2)
    assert engine.Resources(gpus=1, points_per_gpu=4).gpu_share() == 0.25
    with pytest.raises(UserError, match="exceeds this machine's 2 cores"):
        engine.Resources(workers=2, threads=2, cores=2).check()
    for address in ("tcp://10.0.0.1:8786", "127.0.0.1:8786", "tls://node-3.cluster:40123"):
        engine.Resources(scheduler=address).check()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("extra", "message"), [
    (["--budget", "1000"], "less than one neuron"),
    (["--d-m"], "expected at least one argument"),
    (["--task", "nope"], "unknown task 'nope'"),
    (["--k-c", "45"], "multiple of the 30 branches"),
    (["--scheduler", "not an address"], "is not a Dask scheduler address"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--d-m", "2", "2"], "lists a value twice"),
    (["--set", "no-such-option=1"], "unrecognized arguments: --no-such-option 1"),
    (["--set", "lr=-1"], "--lr must be a positive number"),
])  # fmt: skip
def test_bad_input_gets_one_clear_line(shd_dir, tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        run_tradeoff(shd_dir, tmp_path / "runs", *extra)
    assert not (tmp_path / "runs").exists()  # refused before anything was made


def test_bad_input_on_the_command_line(cli, tmp_path):
    done = cli("benchmarks.tradeoff", "--task", "shd", "--budget", "1000", "--data", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: a budget of 1000 parameters")
    assert len(done.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- analysis


def curve(means, sds, n=3):
    return [{"d_m": d, "mean": m, "sd": s, "se": s / math.sqrt(n)}
            for d, m, s in zip((2, 5, 9, 15), means, sds, strict=True)]  # fmt: skip


def test_interior_optimum_needs_two_standard_errors():
    assert sweep.interior_optimum(curve([0.5, 0.8, 0.7, 0.6], [0.01] * 4), "d_m").startswith(
        "yes: d_m 5"
    )
    assert sweep.interior_optimum(curve([0.5, 0.8, 0.7, 0.78], [0.05] * 4), "d_m").startswith(
        "not significant"
    )
    assert sweep.interior_optimum(curve([0.5, 0.6, 0.7, 0.8], [0.01] * 4), "d_m").startswith("no:")
    loss = curve([2.0, 1.5, 1.7, 1.9], [0.01] * 4)
    assert sweep.interior_optimum(loss, "d_m", higher_is_better=False).startswith("yes: d_m 5")


def test_frontier_and_best_allocation():
    rows = [{"budget": b, "P": p, "mean": m, "N": n, "k_e": k}
            for b, p, m, n, k in [(1, 10, 0.5, 5, 10), (1, 11, 0.6, 4, 20), (2, 100, 0.55, 40, 20),
                                  (2, 101, 0.8, 20, 40)]]  # fmt: skip
    assert [r["P"] for r in sweep.pareto(rows)] == [10, 11, 101]
    best = sweep.best_per_budget(rows)
    assert [r["P"] for r in best] == [11, 101]
    assert sweep.log_slope(best, "N") == pytest.approx(math.log(5) / math.log(101 / 11))


def test_published_sweep_is_shipped_for_the_overlay():
    rows = sweep.published("shd-adding")
    assert [r["d_m"] for r in rows] == [2, 3, 4, 5, 7, 9, 11, 15, 20, 25]
    assert max(rows, key=lambda r: r["test"])["d_m"] == 9
    assert sweep.matches_published("shd-adding", 77_000, 300)
    assert not sweep.matches_published("shd-adding", 15_300, 300)
    assert sweep.published("shd") == []
