"""The published evaluation protocol: stitched windows, filtering, released models."""

import json

import numpy as np
import pytest
import torch
from toy_cell import make_toy_store

from elmbridge.errors import UserError
from elmnet.neuron import ELMConfig, ELMNeuron
from surrogate import metrics
from surrogate.data import inspect_store
from surrogate.evaluate import EvalProtocol, Predictions, evaluate, predict, score, trace_rows


def published_windowed_prediction(model, x, window=500, burn_in=150):
    """The published stitching loop (Beniaguev et al.; Spieler et al.), one simulation."""
    n_time = x.shape[0]
    stride = window - burn_in
    n_splits = int(2 + (n_time - window) / stride)
    out = np.zeros((n_time, 2), np.float32)
    for k in range(n_splits):
        start, end = k * stride, k * stride + window
        chunk = np.zeros((window, x.shape[1]), np.float32)
        part = x[start:end]
        chunk[: len(part)] = part
        with torch.no_grad():
            y = model(torch.from_numpy(chunk)[None])[0][0].numpy()
        if k == 0:
            out[:end] = y[: min(end, n_time)]
        elif k == n_splits - 1:
            t0 = start + burn_in
            out[t0:] = y[burn_in : burn_in + n_time - t0]
        else:
            out[start + burn_in : end] = y[burn_in:]
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "toy.zarr"
    records = make_toy_store(path, n_sims=3, n_time=1700)
    return path, records


def test_prediction_matches_the_published_stitching(toy):
    path, records = toy
    info = inspect_store(path)
    torch.manual_seed(0)
    model = ELMNeuron(ELMConfig(d_in=16, d_m=6, d_tree=4, d_brch=4, routing="neuronio"))
    pred = predict(model, info, [0, 2], batch_windows=5, progress=False)
    for row, sim in enumerate([0, 2]):
        rec = records[sim]
        n_seg = 8
        x = (rec.input_spikes * np.r_[np.ones(n_seg), -np.ones(n_seg)]).astype(np.float32)
        ref = published_windowed_prediction(model, x)
        np.testing.assert_allclose(pred.spike_logit[row], ref[:, 0], atol=2e-5)
        np.testing.assert_allclose(pred.soma_mv[row], ref[:, 1] / 0.1 - 67.7, atol=2e-4)
        assert np.array_equal(pred.soma_true_mv[row], rec.soma_v.astype(np.float32))
        assert np.flatnonzero(pred.spike_label[row]).tolist() == sorted(
            {int(t) for t in rec.spike_times}
        )


def test_score_rescales_over_all_then_filters_and_skips():
    rng = np.random.default_rng(0)
    n, t = 3, 1000
    label = np.zeros((n, t), np.uint8)
    label[0, rng.choice(np.arange(500, 1000), 5, replace=False)] = 1
    label[0, 100] = 1  # in the skipped start: counts for the filter, not for the metrics
    label[1, rng.choice(np.arange(500, 1000), 3, replace=False)] = 1
    label[2, rng.choice(np.arange(1000), 30, replace=False)] = 1  # > 24 spikes: dropped
    true = rng.normal(-65, 4, (n, t)).astype(np.float32)
    guess = (0.5 * true + rng.normal(0, 1, (n, t))).astype(np.float32)
    logit = (3 * label + rng.normal(0, 1, (n, t))).astype(np.float32)
    pred = Predictions(np.arange(n), logit, guess, label, true)
    out, keep = score(pred, EvalProtocol())
    assert keep.tolist() == [True, True, False]
    target = np.minimum(true, -55.0)
    rescaled = metrics.rescale_to_target(guess, target)  # statistics over all 3 simulations
    expected = metrics.soma_metrics(target[:2, 500:], rescaled[:2, 500:])
    expected.update(metrics.spike_metrics(label[:2, 500:], logit[:2, 500:]))
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key
    assert (out["n_simulations"], out["n_simulations_kept"], out["n_spike_bins"]) == (3, 2, 8)
    loose, _ = score(pred, EvalProtocol(max_spikes=100, skip_ms=0))
    assert loose["n_simulations_kept"] == 3 and loose["n_spike_bins"] == 39
    # The report shows the kept simulations with most spikes first.
    assert trace_rows(pred, keep, 3).tolist() == [0, 1]
    assert trace_rows(pred, np.ones(3, bool), 2).tolist() == [2, 0]


def test_evaluate_writes_report(toy, tmp_path):
    info = inspect_store(toy[0])
    model = ELMNeuron(ELMConfig(d_in=16, d_m=4, d_tree=4, d_brch=4, routing="neuronio"))
    out = evaluate(model, info, [0, 1, 2], tmp_path / "r", progress=False)
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    flat = {k: v for k, v in out.items() if not isinstance(v, dict)}
    assert {k: report["metrics"][k] for k in flat} == pytest.approx(flat, nan_ok=True)
    nested = {k: v for k, v in out.items() if isinstance(v, dict)}
    assert {k: report["metrics"][k] for k in nested} == json.loads(json.dumps(nested))
    assert set(report["metrics"]) == set(out)
    assert report["data"]["attrs_hash"] == info.attrs_hash
    assert (tmp_path / "r" / "report.png").stat().st_size > 10_000
    with pytest.raises(UserError, match="expects 1278 inputs"):
        predict(ELMNeuron(ELMConfig.branch_elm_neuronio(d_m=1)), info, [0], progress=False)


def test_released_model_on_a_synthetic_store(cli, released_models_dir, tmp_path):
    """The published d_m = 20 model runs on a 1278-input store through the CLI."""
    store_path = tmp_path / "neuronio_like.zarr"
    make_toy_store(store_path, n_sims=2, n_segments=639, n_time=1200)
    model = released_models_dir / "num_memory_20"
    done = cli(
        "surrogate.evaluate", "--model", model, "--data", store_path, "--out", tmp_path / "rep",
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert report["model"]["kind"] == "released"
    assert report["model"]["n_parameters"] == 8002
    assert report["split"] == "all" and report["simulations"] == [0, 1]
    assert 0.0 <= report["metrics"]["AUC"] <= 1.0
    assert np.isfinite(report["metrics"]["soma_RMSE"])
    assert "published:" in done.stdout
    assert (tmp_path / "rep" / "report.png").is_file()


def test_released_on_store_benchmark_runs(released_models_dir, tmp_path, capsys):
    from benchmarks import released_on_store

    store_path = tmp_path / "wide.zarr"
    make_toy_store(store_path, n_sims=1, n_segments=639, n_time=900)
    released_on_store.main(
        ["--data", str(store_path), "--models", "num_memory_1", "--models-dir",
         str(released_models_dir), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "num_memory_1" in out and "0.9437" in out  # the published AUC beside ours
    rows = json.loads((tmp_path / "out" / "released_on_store.json").read_text())["rows"]
    assert rows[0]["parameters"] == 4601 and 0 <= rows[0]["AUC"] <= 1


def _fake_predictions(rng, n_sims, n_time, separation):
    """Spike logits ~ N(separation, 1) on spike bins and N(0, 1) elsewhere, per simulation."""
    labels = (rng.random((n_sims, n_time)) < 0.02).astype(np.uint8)
    logits = rng.normal(size=(n_sims, n_time)) + separation * labels
    soma = rng.normal(-70, 3, size=(n_sims, n_time))
    return Predictions(
        simulations=np.arange(n_sims),
        spike_logit=logits.astype(np.float32),
        soma_mv=(soma + rng.normal(size=soma.shape)).astype(np.float32),
        spike_label=labels,
        soma_true_mv=soma.astype(np.float32),
    )


def test_bootstrap_intervals_cover_the_true_auc():
    """Binormal scores with unit variances and separation d have AUC Φ(d/√2) exactly;
    the 95 % intervals over simulations must cover it about 95 % of the time. (The
    percentile bootstrap over 30 simulations covers ≈ 90 % here: a little narrow, as
    bootstraps over few clusters are; the bound below allows for that and for the
    40-repeat noise.)"""
    from scipy.stats import norm

    from surrogate.evaluate import bootstrap_intervals

    separation = 1.0
    truth = norm.cdf(separation / np.sqrt(2))
    protocol = EvalProtocol(skip_ms=0, max_spikes=10_000)
    rng = np.random.default_rng(0)
    covered, repeats = 0, 40
    for _ in range(repeats):
        pred = _fake_predictions(rng, n_sims=30, n_time=200, separation=separation)
        metrics, keep = score(pred, protocol)
        ci = bootstrap_intervals(pred, keep, protocol, n_boot=100, seed=1)
        low, high = ci["AUC"]
        assert low <= metrics["AUC"] <= high
        covered += low <= truth <= high
    assert 0.8 <= covered / repeats <= 1.0


def test_evaluate_reports_intervals_and_split_sizes(toy, tmp_path):
    path, _ = toy
    info = inspect_store(path)
    torch.manual_seed(0)
    model = ELMNeuron(ELMConfig(d_in=16, d_m=6, d_tree=4, d_brch=4, routing="neuronio"))
    protocol = EvalProtocol(max_spikes=10_000)
    result = evaluate(model, info, [0, 1, 2], tmp_path / "r", protocol, progress=False, n_boot=50)
    split = result["split"]
    assert split["n_simulations"] == 3 and split["simulated_s"] == pytest.approx(3 * 1.7)
    assert split["scored_s"] == pytest.approx(split["n_simulations_scored"] * 1.2)
    written = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]
    assert written["split"] == split and set(written["intervals_95"]) <= {
        "AUC", "TP @ 0.0100 FP", "TP @ 0.0025 FP", "soma_RMSE", "soma_explained_variance_percent"
    }  # fmt: skip
    for key, (low, high) in written["intervals_95"].items():
        assert low <= high, key
