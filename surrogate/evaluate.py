"""Evaluate an ELM surrogate on a NeuronIO store with the published protocol.

    python -m surrogate.evaluate --model RUN_DIR --data STORE
    python -m surrogate.evaluate --model num_memory_20 --data data/L5PC.zarr
    python -m surrogate.evaluate --model path/to/released/num_memory_20 --data STORE

`--model` is a run directory of `surrogate.fit`, a model file, or a released model (its
folder, or its name: the copy packaged with `elmnet`, so no network is needed). The
protocol (Spieler et al. 2024, after Beniaguev et al. 2021): every simulation is cut
into 500 ms windows with a stride of 350 ms, each run from a zero state; the first
window's outputs are kept whole, later ones after their 150 ms burn-in. The soma
prediction is rescaled to the target's mean and standard deviation over all evaluated
simulations and times. Simulations whose output spike count (whole simulation) lies
outside [0, 24] are then dropped, and so are the first 500 ms of every simulation. Spike
metrics are over all remaining 1 ms bins; see `surrogate.metrics` for their exact
definitions. Spikes are scored by the model's logit: the ROC curve does not change under
the sigmoid, except that float32 probabilities round to 1 for logits above ≈17 and tie
there, which the published code (scoring probabilities) suffers and this avoids. Spike
labels follow the store (a spike at t ms marks bin floor(t)); the published loader used
int(t − 0.5).

The report (a folder) holds metrics.json and report.png: the ROC curve and true vs
predicted soma voltage and spike probability for a few simulations.
"""

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import check_output_dir, user_writes, write_json
from elmbridge.provenance import software_versions
from elmbridge.runs import RunFolder
from elmbridge.training import resolve_device
from elmnet.neuron import ELMNeuron
from elmnet.neuronio import SOMA, SOMA_CLIP_MV, SPIKE, soma_mv
from elmnet.released import load_released, released_metadata, resolve_released
from surrogate.data import (
    SPLITS,
    StoreInfo,
    StoreReader,
    check_inputs_fit,
    evaluation_windows,
    inspect_store,
    model_input,
)
from surrogate.metrics import (
    DEFAULT_FPR_LEVELS,
    rescale_to_target,
    roc_curve,
    soma_metrics,
    spike_metrics,
)
from surrogate.model_file import count_parameters, load_model_file, model_kind


@dataclass(frozen=True)
class EvalProtocol:
    """The published evaluation protocol; every number in ms or spikes.

    Attributes:
        window_ms: window length.
        burn_in_ms: outputs discarded at the start of every window but the first.
        skip_ms: bins at the start of each simulation left out of the metrics.
        min_spikes, max_spikes: keep simulations with this many output spikes (inclusive,
            counted over the whole simulation as spike bins).
        fpr_levels: false-positive rates for the TP and partial-AUC metrics.
    """

    window_ms: int = 500
    burn_in_ms: int = 150
    skip_ms: int = 500
    min_spikes: int = 0
    max_spikes: int = 24
    fpr_levels: tuple[float, ...] = DEFAULT_FPR_LEVELS

    def __post_init__(self):
        if not 0 <= self.burn_in_ms < self.window_ms:
            raise UserError(
                f"burn-in must be in [0, window), got {self.burn_in_ms} and {self.window_ms}"
            )
        if self.skip_ms < 0 or self.min_spikes < 0 or self.max_spikes < self.min_spikes:
            raise UserError(
                "need skip ≥ 0 and 0 ≤ min_spikes ≤ max_spikes, got "
                f"skip {self.skip_ms}, spikes [{self.min_spikes}, {self.max_spikes}]"
            )


@dataclass
class Predictions:
    """Whole-simulation outputs of a model next to the data, (simulation, time) arrays."""

    simulations: np.ndarray
    spike_logit: np.ndarray
    soma_mv: np.ndarray
    spike_label: np.ndarray
    soma_true_mv: np.ndarray


def predict(
    model: ELMNeuron,
    info: StoreInfo,
    simulations: list[int],
    protocol: EvalProtocol = EvalProtocol(),
    device: str | torch.device = "cpu",
    batch_windows: int = 64,
    progress: bool = True,
) -> Predictions:
    """Run `model` over whole simulations through the protocol's sequential windows.

    Args:
        model: an ELM neuron with the NeuronIO outputs (spike logit, scaled soma).
        info: the store.
        simulations: labels of the simulations to run.
        protocol: window, burn-in.
        device: where to run the model.
        batch_windows: windows per forward pass (memory: window·n_inputs bytes each, int8).
        progress: show a progress bar.
    """
    check_inputs_fit(info, model.config.d_in, model.config.routing)
    if not simulations:
        raise UserError("no simulation to evaluate")
    windows = evaluation_windows(info.n_time, protocol.window_ms, protocol.burn_in_ms)
    padded_time = windows[-1][0] + protocol.window_ms
    reader = StoreReader(info.path)
    n, t = len(simulations), info.n_time
    out = Predictions(
        simulations=np.asarray(simulations),
        spike_logit=np.zeros((n, t), np.float32),
        soma_mv=np.zeros((n, t), np.float32),
        spike_label=np.zeros((n, t), np.uint8),
        soma_true_mv=np.zeros((n, t), np.float32),
    )
    sims_per_pass = max(1, batch_windows // len(windows))
    model = model.to(device).eval()
    for first in tqdm(range(0, n, sims_per_pass), desc="evaluating", disable=not progress):
        rows = range(first, min(first + sims_per_pass, n))
        xs = []
        for row in rows:
            x, spike, soma = reader.read(int(simulations[row]), spikes_int8=True)
            out.spike_label[row], out.soma_true_mv[row] = spike, soma
            x = np.concatenate([x, np.zeros((padded_time - t, x.shape[1]), x.dtype)])
            xs += [x[start : start + protocol.window_ms] for start, _, _ in windows]
        with torch.inference_mode():
            y, _ = model(model_input(model, torch.from_numpy(np.stack(xs)).to(device)))
        y = y.float().cpu().numpy().reshape(len(rows), len(windows), protocol.window_ms, -1)
        for i, row in enumerate(rows):
            for k, (start, keep_from, keep_to) in enumerate(windows):
                part = y[i, k, keep_from - start : keep_to - start]
                out.spike_logit[row, keep_from:keep_to] = part[:, SPIKE]
                out.soma_mv[row, keep_from:keep_to] = soma_mv(part[:, SOMA])
    return out


def score(
    pred: Predictions, protocol: EvalProtocol = EvalProtocol()
) -> tuple[dict[str, Any], np.ndarray]:
    """The protocol's metrics of some predictions.

    Returns:
        metrics (published key names, plus counts), and a boolean mask of the kept
        simulations. The soma prediction is rescaled over all simulations and times
        before the spike-count filter and the skip, as published.
    """
    target = np.minimum(pred.soma_true_mv, SOMA_CLIP_MV)
    rescaled = rescale_to_target(pred.soma_mv, target)
    counts = pred.spike_label.sum(axis=1)
    keep = (counts >= protocol.min_spikes) & (counts <= protocol.max_spikes)
    after = slice(protocol.skip_ms, None)
    labels = pred.spike_label[keep, after]
    metrics: dict[str, Any] = {
        "n_simulations": len(keep),
        "n_simulations_kept": int(keep.sum()),
        "n_bins": int(labels.size),
        "n_spike_bins": int(labels.sum()),
    }
    if keep.any() and labels.size:
        metrics.update(spike_metrics(labels, pred.spike_logit[keep, after], protocol.fpr_levels))
        metrics.update(soma_metrics(target[keep, after], rescaled[keep, after]))
    else:
        metrics["note"] = (
            f"no simulation has {protocol.min_spikes}–{protocol.max_spikes} output spikes "
            "and more than the skipped start; nothing to score"
        )
    return metrics, keep


INTERVAL_KEYS = ("AUC", "TP @ 0.0100 FP", "TP @ 0.0025 FP", "soma_RMSE",
                 "soma_explained_variance_percent")  # fmt: skip


def bootstrap_intervals(
    pred: Predictions,
    keep: np.ndarray,
    protocol: EvalProtocol = EvalProtocol(),
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of the metrics over the kept simulations.

    The simulations, not the 1 ms bins, are resampled with replacement: bins of one
    simulation share its input rates and are far from independent. The soma rescaling
    stays the one of the full evaluation. A resample without a spike (or only spikes)
    has no spike metrics and is left out of those intervals.

    Returns:
        {metric: [low, high]} for the metrics of `INTERVAL_KEYS` that are defined; empty
        with fewer than two kept simulations.
    """
    rows = np.flatnonzero(keep)
    if rows.size < 2:
        return {}
    after = slice(protocol.skip_ms, None)
    target = np.minimum(pred.soma_true_mv, SOMA_CLIP_MV)
    rescaled = rescale_to_target(pred.soma_mv, target)
    labels, logits = pred.spike_label[:, after], pred.spike_logit[:, after]
    target, rescaled = target[:, after], rescaled[:, after]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.choice(rows, size=rows.size, replace=True)
        values = spike_metrics(labels[pick], logits[pick], protocol.fpr_levels)
        values.update(soma_metrics(target[pick], rescaled[pick]))
        for key in INTERVAL_KEYS:
            if key in values and np.isfinite(values[key]):
                samples.setdefault(key, []).append(values[key])
    tail = 100 * (1 - level) / 2
    return {
        key: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
        for key, v in samples.items()
        if len(v) >= n_boot // 2
    }


def split_sizes(pred: Predictions, keep: np.ndarray, protocol: EvalProtocol) -> dict[str, Any]:
    """How much data the metrics rest on: simulations, simulated seconds, spike bins."""
    scored = pred.spike_label[keep, protocol.skip_ms :]
    return {
        "n_simulations": len(keep),
        "n_simulations_scored": int(keep.sum()),
        "simulated_s": float(pred.spike_label.size / 1000),
        "scored_s": float(scored.size / 1000),
        "n_spike_bins_scored": int(scored.sum()),
    }


def load_model(source: str | os.PathLike) -> tuple[ELMNeuron, dict[str, Any]]:
    """A model from a run directory, a model file, or a released model (folder or name).

    Returns:
        the model (eval mode, CPU) and a description: kind, source, parameter count and,
        for a run, its record; for a released model, its published metrics.
    """
    path = Path(source)
    folder = RunFolder(path) if path.is_dir() else None
    if folder is not None and folder.exists():
        model, info = load_model_file(folder.best_path())
        record = folder.record()
        desc = {"kind": "run", "source": str(path.resolve()), "epoch": info.get("epoch")}
        desc["run"] = {k: record[k] for k in ("config", "seed", "data", "splits", "test_data")
                     if k in record}  # fmt: skip
    elif path.is_file():
        model, info = load_model_file(path)
        desc = {"kind": "model file", "source": str(path.resolve()), "epoch": info.get("epoch")}
    else:
        folder = resolve_released(source)
        model = load_released(folder)
        desc = {"kind": "released", "source": str(folder), "name": folder.name}
        published = released_metadata(folder).get("eval_results")
        if published:
            desc["published_results"] = published
    desc["n_parameters"] = count_parameters(model)
    desc["model_kind"] = model_kind(model)
    desc["model_config"] = model.config.to_dict()
    return model, desc


def run_simulations(desc: dict[str, Any], info: StoreInfo, split: str | None) -> tuple[list, str]:
    """Which simulations of a store to evaluate: a split of the run's own store, or all."""
    run = desc.get("run")
    own_store = run is not None and Path(run["data"]["store"]) == info.path.resolve()
    test_data = (run or {}).get("test_data")  # a fit scored on a store of its own
    if test_data is not None and Path(test_data["store"]) == info.path.resolve():
        if split in (None, "test"):
            if test_data["protocol_hash"] != info.protocol_hash:
                raise UserError(
                    f"{info.path} was remade with another protocol since the fit; its test "
                    "set no longer holds; use --split all or refit"
                )
            return list(test_data["simulations"]), "test"
    elif own_store and test_data is not None and split in (None, "test"):
        raise UserError(
            f"this fit's test set is the store {test_data['store']}, not {info.path}; "
            "evaluate on that store, or pick --split val or train"
        )
    if split is None:
        split = "test" if own_store else "all"
    if split == "all":
        return list(info.simulations), split
    if not own_store:
        raise UserError(
            f"--split {split} refers to the splits of a fit, but {info.path} is not the store "
            "the model was fitted on; use --split all"
        )
    if run["data"]["protocol_hash"] != info.protocol_hash:
        raise UserError(
            f"{info.path} was remade with another protocol since the fit, so the recorded "
            "splits no longer hold; use --split all or refit"
        )
    sims = run["splits"][split]
    missing = sorted(set(sims) - set(info.simulations))
    if missing:
        raise UserError(f"the {split} split lists simulations not in {info.path}: {missing}")
    return sims, split


def trace_rows(pred: Predictions, keep: np.ndarray, n: int) -> np.ndarray:
    """Rows of the `n` kept simulations with the most spikes (they show the most)."""
    rows = np.flatnonzero(keep)
    n_spikes = pred.spike_label[rows].sum(axis=1, dtype=np.int64)
    return rows[np.argsort(-n_spikes, kind="stable")][:n]


def plot_report(
    pred: Predictions,
    keep: np.ndarray,
    metrics: dict[str, Any],
    protocol: EvalProtocol,
    path: str | os.PathLike,
    title: str,
    n_traces: int = 3,
) -> None:
    """ROC curve (full and low-FPR) and stacked soma / spike-probability traces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    after = slice(protocol.skip_ms, None)
    target = np.minimum(pred.soma_true_mv, SOMA_CLIP_MV)
    rescaled = rescale_to_target(pred.soma_mv, target)
    rows = trace_rows(pred, keep, n_traces)
    fig = plt.figure(figsize=(15, 3 + 2.6 * max(len(rows), 1)), layout="constrained")
    grid = fig.add_gridspec(max(2 * len(rows), 2), 3)
    roc_ax = fig.add_subplot(grid[: max(len(rows), 1), 0])
    zoom_ax = fig.add_subplot(grid[max(len(rows), 1) :, 0])
    labels = pred.spike_label[keep, after]
    if 0 < labels.sum() < labels.size:
        fpr, tpr, _ = roc_curve(labels, pred.spike_logit[keep, after])
        for ax in (roc_ax, zoom_ax):
            ax.plot(fpr, tpr, c="k", lw=1)
            ax.set(xlabel="false-positive rate", ylabel="true-positive rate")
        roc_ax.plot([0, 1], [0, 1], c="0.7", ls=":", lw=1)
        roc_ax.set_title(f"spike ROC, AUC = {metrics['AUC']:.4f}")
        zoom_ax.set(xlim=(0, 0.02), ylim=(0, 1), title="low false-positive rates")
        for level in protocol.fpr_levels:
            zoom_ax.axvline(level, c="tab:red", ls="--", lw=0.8)
            zoom_ax.annotate(
                f"TP {metrics[f'TP @ {level:.4f} FP']:.3f}",
                (level, 0.05),
                rotation=90,
                fontsize=8,
                color="tab:red",
            )
    else:
        roc_ax.text(0.5, 0.5, "no spikes: ROC undefined", ha="center")
    threshold = None
    if 0 < labels.sum() < labels.size:
        # The logit at which 1 % of the scored no-spike bins are called spikes.
        negatives = pred.spike_logit[keep, after][labels == 0]
        threshold = float(np.quantile(negatives, 0.99))
    time = np.arange(pred.soma_mv.shape[1])
    for i, row in enumerate(rows):
        v_ax = fig.add_subplot(grid[2 * i, 1:])
        p_ax = fig.add_subplot(grid[2 * i + 1, 1:], sharex=v_ax)
        v_ax.plot(time, target[row], c="k", lw=0.8, label="simulated (clipped)")
        v_ax.plot(
            time, rescaled[row], c="tab:blue", lw=0.8,
            label="surrogate (z-scored, set to the target's mean and SD: published rescaling)",
        )  # fmt: skip
        v_ax.set(ylabel="soma (mV)", title=f"simulation {pred.simulations[row]}")
        probability = 1 / (1 + np.exp(-pred.spike_logit[row].astype(np.float64)))
        p_ax.semilogy(time, np.maximum(probability, 1e-6), c="tab:purple", lw=0.8)
        true_spikes = np.flatnonzero(pred.spike_label[row])
        for t_spike in true_spikes:
            p_ax.axvline(t_spike, c="k", lw=0.6, alpha=0.6)
        if threshold is not None:
            called = pred.spike_logit[row] >= threshold
            onsets = np.flatnonzero(called & ~np.r_[False, called[:-1]])
            onsets = onsets[onsets >= protocol.skip_ms]  # the zero-state start is not scored
            p_ax.axhline(1 / (1 + np.exp(-threshold)), c="tab:red", ls=":", lw=0.8)
            p_ax.plot(onsets, np.full(onsets.size, 1.5), "v", c="tab:red", ms=5, clip_on=False)
        p_ax.set(ylabel="P(spike)", ylim=(1e-6, 2))
        for ax in (v_ax, p_ax):
            ax.axvspan(0, protocol.skip_ms, color="0.9", zorder=0)
        if i == 0:
            v_ax.legend(loc="upper right", fontsize=8)
        if i == len(rows) - 1:
            p_ax.set_xlabel(
                "time (ms); grey: skipped start; black lines: simulated spikes; red ▼: "
                "predicted spikes at the threshold of 1 % false positives (dotted)"
            )
    split = split_sizes(pred, keep, protocol)
    fig.suptitle(
        f"{title}\nscored: {split['n_simulations_scored']} of {split['n_simulations']} "
        f"simulations, {split['scored_s']:.1f} s, {split['n_spike_bins_scored']} spike bins"
    )
    with user_writes(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(
    model: ELMNeuron,
    info: StoreInfo,
    simulations: list[int],
    out_dir: str | os.PathLike | None = None,
    protocol: EvalProtocol = EvalProtocol(),
    device: str | torch.device = "cpu",
    title: str = "",
    context: dict[str, Any] | None = None,
    progress: bool = True,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Predict, score and (when `out_dir` is given) write metrics.json and report.png.

    Returns:
        the metrics (see `score`), with "intervals_95" (bootstrap over simulations,
        `n_boot` resamples; 0 skips it) and "split" (`split_sizes`).
    """
    if out_dir is not None:
        check_output_dir(out_dir)  # before the predictions, which may take a while
    pred = predict(model, info, simulations, protocol, device=device, progress=progress)
    metrics, keep = score(pred, protocol)
    if n_boot:
        metrics["intervals_95"] = bootstrap_intervals(pred, keep, protocol, n_boot)
    metrics["split"] = split_sizes(pred, keep, protocol)
    if out_dir is not None:
        out_dir = Path(out_dir)
        report = {
            "metrics": metrics,
            "protocol": asdict(protocol),
            "data": info.provenance(),
            "simulations": [int(s) for s in simulations],
            "simulations_kept": [int(s) for s in pred.simulations[keep]],
            "software": software_versions(),
            **(context or {}),
        }
        write_json(out_dir / "metrics.json", report)
        plot_report(pred, keep, metrics, protocol, out_dir / "report.png", title)
    return metrics


def format_metrics(metrics: dict[str, Any], reference: dict[str, Any] | None = None) -> str:
    """A small text table of the metrics, their 95 % intervals, and a reference column."""
    lines = []
    intervals = metrics.get("intervals_95", {})
    for key, value in metrics.items():
        if key in ("intervals_95", "split"):
            continue
        if isinstance(value, float):
            low_high = intervals.get(key)
            ci = f"  [{low_high[0]:.4f}, {low_high[1]:.4f}]" if low_high else ""
            ref = reference.get(key) if reference else None
            extra = f"   (published: {ref:.4f})" if isinstance(ref, float) else ""
            lines.append(f"  {key:<34} {value:10.4f}{ci}{extra}")
        else:
            lines.append(f"  {key:<34} {value!s:>10}")
    if intervals:
        lines.append("  [95 % bootstrap interval over the scored simulations]")
    split = metrics.get("split")
    if split:
        lines.append(
            f"  scored: {split['n_simulations_scored']} of {split['n_simulations']} "
            f"simulations, {split['scored_s']:.1f} s, {split['n_spike_bins_scored']} spike bins"
        )
    return "\n".join(lines)


PROTOCOL_HELP = {
    "window_ms": "window length (ms)",
    "burn_in_ms": "outputs discarded at the start of every window but the first (ms)",
    "skip_ms": "start of each simulation left out of the metrics (ms)",
    "min_spikes": "evaluate simulations with at least this many output spike bins",
    "max_spikes": "evaluate simulations with at most this many output spike bins",
}


def add_protocol_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--window-ms, --burn-in-ms, --skip-ms, --min-spikes, --max-spikes.

    The default values are `EvalProtocol`'s, the one place they are written. With
    `defaults=False` unset options stay None (a preset fills them).
    """
    base = EvalProtocol()
    for name, text in PROTOCOL_HELP.items():
        value = getattr(base, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=value if defaults else None,
            help=f"{text}; default {value}",
        )


def protocol_from_args(args: argparse.Namespace) -> EvalProtocol:
    """The protocol of parsed `add_protocol_options` options."""
    return EvalProtocol(**{name: getattr(args, name) for name in PROTOCOL_HELP})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m surrogate.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model", required=True, help="run directory, model file or released model"
    )
    parser.add_argument("--data", type=Path, help="store to evaluate on (default: the run's store)")
    parser.add_argument(
        "--split", choices=[*SPLITS, "all"], help="default: test for the run's own store, else all"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: beside the model)")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if present)"
    )
    add_protocol_options(parser, defaults=True)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.out is not None:
        check_output_dir(args.out)

    model, desc = load_model(args.model)
    data = args.data
    if data is None:
        if desc["kind"] != "run":
            raise UserError("--data is required for a released model or a model file")
        data = Path(desc["run"]["data"]["store"])
    protocol = protocol_from_args(args)
    info = inspect_store(data, min_time_ms=protocol.skip_ms + 1)
    sims, split = run_simulations(desc, info, args.split)
    out = args.out
    if out is None:
        stem = f"eval-{Path(data).stem}-{split}"
        base = Path(desc["source"]) if desc["kind"] == "run" else Path("reports")
        out = base / (stem if desc["kind"] == "run" else f"{Path(desc['source']).stem}-{stem}")
    print(
        f"evaluating {desc['kind']} model {desc['source']} ({desc['n_parameters']} parameters) "
        f"on {len(sims)} simulations ({split}) of {data}"
    )
    metrics = evaluate(
        model,
        info,
        sims,
        out,
        protocol,
        device=device,
        title=f"{Path(desc['source']).name} on {Path(data).name} ({split})",
        context={"model": desc, "split": split},
    )
    reference = desc.get("published_results", {}).get("test_results")
    print(format_metrics(metrics, reference))
    if reference:
        print("  (published: the model's own NeuronIO test-set results)")
    print(f"report: {out / 'metrics.json'} and {out / 'report.png'}")


if __name__ == "__main__":
    run_cli(main)
