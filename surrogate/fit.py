"""Fit an ELM surrogate to a simulated cell: `python -m surrogate.fit --cell L5PC`.

The whole fit, top to bottom:

1. the configuration: a preset with options over it (`surrogate.config`);
2. the data: an existing store (`--data`), or the preset's default store, simulated by
   `python -m biophys.simulate` into the user cache when missing (`ensure_data`);
3. the run folder (`elmbridge.runs`): run.json with config, seed, versions, data
   provenance and the splits; resumed from checkpoint.pt when one exists;
4. the loop: per epoch, random training windows, Adam on 0.5·BCE(spike) + 0.5·MSE(soma)
   with a cosine schedule over all batches, then the validation metrics, best.pt when
   the epoch is the best so far, metrics.csv and checkpoint.pt;
5. the test: the best epoch's model on the test simulations with the published
   protocol (`surrogate.evaluate`), the report, and result.json, written last.

`--data STORE` fits on an existing store (one made by `python -m biophys.simulate` or
`python -m surrogate.neuronio_import`). A killed run continues with `--resume`.
"""

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.runs import REPORT_DIR, TENSORBOARD_DIR, BestTracker, MetricsLog, RunFolder
from elmbridge.training import cosine_lr, resolve_device, set_lr
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from elmnet.neuronio import SOMA, SOMA_OFFSET_MV, SOMA_SCALE, SPIKE, soma_target
from surrogate.config import (
    SELECT_BY,
    FitConfig,
    add_fit_options,
    combined_score,
    config_from_args,
    default_run_dir,
    preset_config,
    preset_table,
    recorded_config,
)
from surrogate.data import (
    StoreInfo,
    StoreReader,
    WindowDataset,
    check_inputs_fit,
    inspect_store,
    model_input,
)
from surrogate.data import split_simulations as make_splits
from surrogate.evaluate import evaluate, format_metrics, load_model, predict, score
from surrogate.model_file import build_model, count_parameters, load_model_file, save_model
from surrogate.stores import ensure_data, with_heldout_test

__all__ = ["FitConfig", "fit", "main", "preset_config"]

RUN_KIND = "surrogate-fit"


# ---------------------------------------------------------------------------------------
# Data


def open_test_data(config: FitConfig, info: StoreInfo) -> StoreInfo | None:
    """The store of `config.test_data`, refused unless it holds the same cell and inputs
    as the training store `info` (its simulations may be of another length)."""
    if config.test_data is None:
        return None
    test = inspect_store(config.test_data, min_time_ms=config.skip_ms + 1, verify=True)
    differ = [
        what
        for what, ours, theirs in (
            ("cell", info.cell, test.cell),
            ("input kinds", info.input_kind, test.input_kind),
            ("input segments", info.input_segment, test.input_segment),
        )
        if ours != theirs
    ]
    if differ:
        raise UserError(
            f"--test-data {test.path} differs from the training store {info.path} in its "
            f"{' and '.join(differ)}; a test store must be of the same cell and inputs"
        )
    return test


# ---------------------------------------------------------------------------------------
# Loss and model selection


def neuronio_loss(y: torch.Tensor, spike: torch.Tensor, soma: torch.Tensor) -> torch.Tensor:
    """0.5·BCE-with-logits on the spike channel + 0.5·MSE on the scaled soma channel."""
    y = y.to(spike.dtype)
    bce = F.binary_cross_entropy_with_logits(y[..., SPIKE], spike)
    return 0.5 * bce + 0.5 * F.mse_loss(y[..., SOMA], soma)


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """The loop state of a checkpoint written before `EpochSelector` (best, select_by)."""
    if "selector" in state:
        return state
    old = {k: state.pop(k, None) for k in ("best", "select_by")}
    selector = None
    if old["select_by"] is not None:
        best = math.nan if old["best"] is None else old["best"]
        tracker = BestTracker(SELECT_BY[old["select_by"]] > 0, best, state["epochs_done"])
        selector = {"key": old["select_by"], "tracker": tracker.state_dict()}
    return {**state, "selector": selector}


class EpochSelector:
    """Chooses the best epoch by a validation metric.

    The metric is fixed at the first epoch: `select_by`, or the validation loss when
    that metric is undefined there (no validation simulation within the spike-count
    filter, or none spikes). Without validation data the latest epoch is the best.
    """

    def __init__(self, select_by: str, state: dict[str, Any] | None = None):
        self.select_by = select_by
        self.key = state["key"] if state else None
        self.tracker = BestTracker.from_state(state["tracker"]) if state else None

    def is_best(self, row: dict[str, Any]) -> bool:
        """Whether the epoch of `row` (its validation metrics) is the best so far."""
        if "val_loss" not in row:
            return True
        if self.key is None:
            self.key = self.select_by
            if not math.isfinite(row.get(f"val_{self.key}", math.nan)):
                print(
                    f"notice: validation {self.key} is undefined on this data (no validation "
                    "simulation passes the spike-count filter, or none spikes); the best "
                    "epoch is chosen by the validation loss instead"
                )
                self.key = "loss"
            self.tracker = BestTracker(higher_is_better=SELECT_BY[self.key] > 0)
        return self.tracker.update(row.get(f"val_{self.key}", math.nan), row["epoch"])

    def out_of_patience(self, epoch: int, patience: int | None) -> bool:
        """Whether `patience` epochs up to `epoch` have passed without a new best (early
        stopping); never without `patience` or validation data."""
        if patience is None or self.tracker is None:
            return False
        return epoch - self.tracker.step >= patience

    def state_dict(self) -> dict[str, Any] | None:
        if self.key is None:
            return None
        return {"key": self.key, "tracker": self.tracker.state_dict()}


# ---------------------------------------------------------------------------------------
# The run


def open_run(
    config: FitConfig, folder: RunFolder, resume: bool
) -> tuple[StoreInfo, ELMConfig, dict[str, list[int]], StoreInfo | None]:
    """The data, model configuration, splits and test store (None: the test split is of
    the training store) of a run; records a new run's provenance.

    Everything is checked before the run folder is written, so that a refused command
    leaves nothing behind.
    """
    discarded = folder.exists() and folder.result() is None
    discarded = discarded and not folder.checkpoint_path().is_file()
    if discarded:
        # No epoch finished: the folder holds only the record of a start that was killed
        # or refused, and keeping it would block the corrected command.
        print(f"notice: {folder.path} holds a fit that never finished an epoch; starting anew")
        folder.discard()
    if folder.exists() and not resume:
        raise UserError(
            f"{folder.path} already holds a fit; continue it with --resume, or choose a new --out"
        )
    if folder.exists():
        check_same_fit(folder, config)
    else:
        folder.check_writable()
    info, generation_s = ensure_data(config)
    recorded_cell = info.cell
    if config.data is not None and recorded_cell and recorded_cell != config.cell:
        raise UserError(
            f"{info.path} holds simulations of {recorded_cell!r}, not {config.cell!r}; "
            f"pass --cell {recorded_cell} (or leave --cell out)"
        )
    check_inputs_fit(info, info.n_inputs, config.routing, what="the surrogate")
    test_info = open_test_data(config, info)
    model_config = config.model_config(info)
    if config.init is not None:
        warm_start(ELMNeuron(model_config), config.init)  # refuse a misfit before writing
    if folder.exists():
        record = folder.record()
        if record["data"]["protocol_hash"] != info.protocol_hash:
            raise UserError(
                f"the data of {folder.path} ({record['data']['store']}) was remade with "
                "another protocol since the fit started; start a new run with --out"
            )
        recorded_test = record.get("test_data")
        if test_info is not None:
            if recorded_test["protocol_hash"] != test_info.protocol_hash:
                raise UserError(
                    f"the test data of {folder.path} ({recorded_test['store']}) was remade "
                    "with another protocol since the fit started; start a new run with --out"
                )
            # The recorded test set, even if the test store was extended since.
            test_info = replace(test_info, simulations=tuple(recorded_test["simulations"]))
        return info, model_config, record["splits"], test_info
    test_fraction = 0.0 if test_info is not None else config.test_fraction
    splits = make_splits(info.simulations, config.val_fraction, test_fraction, config.seed)
    extra = {}
    if test_info is not None:
        extra["test_data"] = {**test_info.provenance(),
                              "simulations": [int(s) for s in test_info.simulations]}  # fmt: skip
    folder.start(
        RUN_KIND, asdict(config), config.seed, info.provenance(), reuse_folder=discarded,
        splits=splits, model_kind=config.model, model_config=model_config.to_dict(),
        n_parameters=count_parameters(new_model(config.model, model_config)),
        data_generation_s=generation_s, **extra,
    )  # fmt: skip
    return info, model_config, splits, test_info


def check_same_fit(folder: RunFolder, config: FitConfig) -> None:
    """Refuse to resume or reuse `folder` when it holds another fit than `config`."""
    recorded = folder.record().get("config", {})
    folder.check_same_config(asdict(config), recorded=recorded_config(recorded))


def new_model(kind: str, model_config):
    """A freshly initialised model of `kind` with `model_config` (torch's global RNG)."""
    return build_model(kind, model_config.to_dict())


def warm_start(model: ELMNeuron, source: str) -> None:
    """Load the weights of `source` (released model, run folder, model file) into `model`.

    Their configurations must agree in everything but the routing seed of the NeuronIO
    routing, which that routing does not use.
    """
    start, desc = load_model(source)
    ours, theirs = model.config.to_dict(), start.config.to_dict()
    if ours["routing"] == "neuronio":
        ours.pop("routing_seed"), theirs.pop("routing_seed")
    diff = [f"{k} {theirs[k]!r} (ours {ours[k]!r})" for k in ours if ours[k] != theirs.get(k)]
    if diff:
        raise UserError(
            f"--init {source}: its model differs from the one this fit trains in "
            f"{', '.join(diff)}; set the options to match it"
        )
    model.load_state_dict(start.state_dict())
    print(f"warm start from the {desc['kind']} model {desc['source']}")


def spike_prior_logit(info: StoreInfo, simulations, start_ms: int) -> float | None:
    """log(p / (1 − p)) of the fraction p of 1 ms bins with a spike in `simulations`
    from `start_ms` on (what training windows see); None when they hold no spike."""
    reader = StoreReader(info.path)
    spikes = bins = 0
    for sim in simulations:
        _, spike, _ = reader.read(int(sim), start_ms)
        spikes, bins = spikes + float(spike.sum()), bins + spike.size
    if spikes == 0 or bins == 0:
        return None
    p = spikes / bins
    return math.log(p / (1 - p))


class Trainer:
    """The model and what moves it: Adam, the cosine schedule, the loss scaler."""

    def __init__(self, model_config, config: FitConfig, dev: torch.device, amp: bool,
                 spike_logit: float | None = None):  # fmt: skip
        torch.manual_seed(config.seed)
        self.config, self.dev, self.amp = config, dev, amp
        self.model = new_model(config.model, model_config)
        if config.init is not None:
            warm_start(self.model, config.init)
        elif spike_logit is not None and config.model == "elm":
            # Spikes fill < 0.1 % of the bins. From a zero bias the first updates only push
            # every logit down, and a short fit can end with a spike output that follows
            # activity with the wrong sign (test AUC < 0.5 seen at d_m 5). Starting at the
            # base rate's logit (as for rare classes in detection) skips that phase.
            with torch.no_grad():
                self.model.head.bias[SPIKE] = spike_logit
        self.model.to(dev)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")
        self.amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
        self.total_steps = config.epochs * config.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in ("model", "optimizer", "scaler")}

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        for name in ("model", "optimizer", "scaler"):
            getattr(self, name).load_state_dict(blob[name])

    def lr(self, step: int) -> float:
        return cosine_lr(step, self.total_steps, self.config.lr)

    def train_epoch(self, loader, first_step: int, desc: str, progress: bool) -> list[float]:
        """One pass over `loader`, one optimiser step per batch; returns the batch losses."""
        self.model.train()
        losses: list[float] = []
        bar = tqdm(loader, desc=desc, disable=not progress)
        for i, (x, spike, soma) in enumerate(bar):
            x, spike, soma = (t.to(self.dev, non_blocking=True) for t in (x, spike, soma))
            x = model_input(self.model, x)
            set_lr(self.optimizer, self.lr(first_step + i))
            with torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.amp):
                y, _ = self.model(x)
            loss = neuronio_loss(y, spike, soma)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        return losses


def fit(
    config: FitConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | None = None,
    amp: bool = False,
    workers: int | None = None,
    stop_after_epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Fit a surrogate into `run_dir` and evaluate it on the test split.

    Args:
        config: what to fit.
        run_dir: the run folder (created; layout in `elmbridge.runs`).
        resume: continue the folder's last checkpoint (or start it if it has none).
        device: "cpu", "cuda", … (default: cuda when present).
        amp: mixed precision (bfloat16 on CPU, float16 with loss scaling on CUDA).
        workers: DataLoader worker processes (default: 0 on CPU, 4 on CUDA).
        stop_after_epochs: return after this many epochs of this call (for time-limited
            jobs that resume later); None runs to the end.
        progress: show progress bars.

    Returns:
        the result (test metrics, timings), or None when stopped early.
    """
    dev = resolve_device(device)
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be ≥ 0 (0: load data in this process), got {workers}")
    if stop_after_epochs is not None and stop_after_epochs < 1:
        raise UserError(f"stop_after_epochs must be at least 1, got {stop_after_epochs}")
    folder = RunFolder(run_dir)
    if resume and folder.result() is not None:
        check_same_fit(folder, with_heldout_test(config))
        print(f"{folder.path} is finished; reusing its result")
        return folder.result()
    # The test store first: its size (grown to hold enough spike bins) is part of the fit.
    config = with_heldout_test(config)
    info, model_config, splits, test_info = open_run(config, folder, resume)
    prior = spike_prior_logit(info, splits["train"], config.min_start_ms)
    trainer = Trainer(model_config, config, dev, amp, prior)
    state = {"epochs_done": 0, "selector": None, "history": [], "train_s": 0.0}
    saved = folder.load_checkpoint(map_location=dev) if resume else None
    if saved is not None:
        try:
            trainer.load_state_dict(saved)
            state = upgrade_state(saved["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise UserError(
                f"{folder.checkpoint_path()} does not fit this fit ({type(err).__name__}: "
                f"{first}); it is damaged or from another version: choose a new --out"
            ) from err
        print(f"resuming {folder.path} after epoch {state['epochs_done']} of {config.epochs}")
    n_test = len(splits["test"]) if test_info is None else len(test_info.simulations)
    test_where = "" if test_info is None else f" of {test_info.path}"
    print(
        f"fitting a {config.model_label()} ({count_parameters(trainer.model)} "
        f"parameters) on {len(splits['train'])} training simulations of {info.path} "
        f"({len(splits['val'])} validation, {n_test} test{test_where}); run: {folder.path}",
        flush=True,
    )
    finished = train(trainer, state, folder, info, splits, workers, stop_after_epochs, progress)
    if not finished:
        return None
    test_sims = splits["test"] if test_info is None else list(test_info.simulations)
    return final_test(folder, config, test_info or info, test_sims, state, dev, progress)


def train(trainer, state, folder, info, splits, workers, stop_after_epochs, progress) -> bool:
    """The epochs left to run; True when all of them are done."""
    config, dev = trainer.config, trainer.dev
    workers = (0 if dev.type == "cpu" else 4) if workers is None else workers
    selector = EpochSelector(config.select_by, state["selector"])
    dataset = WindowDataset(
        info, splits["train"], n_windows=config.batches_per_epoch * config.batch_size,
        window_ms=config.window_ms, min_start_ms=config.min_start_ms, seed=config.seed,
        input_dropout=config.input_dropout,
    )  # fmt: skip
    log = MetricsLog(
        folder.path / "metrics.csv", resume_step=state["epochs_done"] * config.batches_per_epoch,
        tensorboard_dir=folder.path / TENSORBOARD_DIR,
    )  # fmt: skip
    ran = 0
    try:
        for epoch in range(state["epochs_done"], config.epochs):
            if state.get("stopped_early"):
                break
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=config.batch_size, shuffle=False, num_workers=workers,
                pin_memory=dev.type == "cuda",
            )  # fmt: skip
            start = time.perf_counter()
            step = epoch * config.batches_per_epoch
            desc = f"epoch {epoch + 1}/{config.epochs}"
            losses = trainer.train_epoch(loader, step, desc, progress)
            row = epoch_row(trainer, epoch, losses, time.perf_counter() - start)
            if splits["val"]:
                row.update(validate(trainer.model, info, splits["val"], config, dev))
            state["train_s"] += row["train_s"]
            row["elapsed_s"] = state["train_s"]
            state["history"].append(row)
            if selector.is_best(row):
                save_model(trainer.model, folder.path / "best.pt", epoch=epoch + 1, row=row)
            state["epochs_done"], state["selector"] = epoch + 1, selector.state_dict()
            state["stopped_early"] = selector.out_of_patience(epoch + 1, config.patience)
            log.log(**row)
            folder.save_checkpoint({**trainer.state_dict(), "state": state})
            print(epoch_line(row), flush=True)
            if state["stopped_early"] and epoch + 1 < config.epochs:
                print(
                    f"stopping early: validation {selector.key} has not improved for "
                    f"{config.patience} epochs (best: epoch {selector.tracker.step})",
                    flush=True,
                )
            ran += 1
            if ran == stop_after_epochs and state["epochs_done"] < config.epochs:
                if not state["stopped_early"]:
                    return False
    finally:
        log.close()
    return True


def epoch_row(trainer: Trainer, epoch: int, losses: list[float], seconds: float) -> dict:
    """The training part of an epoch's metrics row."""
    step = (epoch + 1) * trainer.config.batches_per_epoch
    return {
        "epoch": epoch + 1,
        "step": step,
        "lr": trainer.lr(step),
        "train_loss": float(np.mean(losses)),
        "train_s": seconds,
    }


def validate(model, info, sims, config: FitConfig, dev) -> dict[str, float]:
    """Validation metrics (protocol windows) and the validation loss, prefixed `val_`."""
    protocol = config.protocol()
    pred = predict(model, info, sims, protocol, device=dev, progress=False)
    metrics, _ = score(pred, protocol)
    out = {f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}
    # The training loss over whole validation simulations, from the stitched outputs.
    raw_soma = (torch.from_numpy(pred.soma_mv).double() - SOMA_OFFSET_MV) * SOMA_SCALE
    y = torch.stack([torch.from_numpy(pred.spike_logit).double(), raw_soma], dim=-1)
    label = torch.from_numpy(pred.spike_label).double()
    target = soma_target(torch.from_numpy(pred.soma_true_mv).double())
    out["val_loss"] = float(neuronio_loss(y, label, target))
    out["val_combined"] = combined_score(
        out.get("val_AUC", math.nan), out.get("val_soma_RMSE", math.nan)
    )
    return out


def final_test(folder, config, info, test_sims, state, dev, progress) -> dict[str, Any]:
    """The best epoch's model on the test simulations `test_sims` of the store `info`:
    the report, then result.json."""
    best, best_info = load_model_file(folder.best_path())
    report_dir = folder.path / REPORT_DIR
    test_metrics = evaluate(
        best, info, test_sims, report_dir, config.protocol(), device=dev,
        title=f"{config.cell}: {config.model_label()}, epoch {best_info['epoch']} (test)",
        context={"model": {"kind": "run", "source": str(folder.path.resolve())}, "split": "test"},
        progress=progress,
    )  # fmt: skip
    selector = state["selector"]
    result = {
        "test_metrics": test_metrics,
        "best_epoch": best_info["epoch"],
        "epochs_run": state["epochs_done"],
        "stopped_early": bool(state.get("stopped_early", False)),
        "selected_by": f"val_{selector['key']}" if selector else "latest epoch",
        "n_parameters": count_parameters(best),
        "model": config.model,
        "d_m": config.d_m,
        "train_s": state["train_s"],
        "data_generation_s": folder.record().get("data_generation_s"),
        "report": str(report_dir),
    }
    folder.finish(result)
    return result


def epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"train loss {row['train_loss']:.4f}"]
    for key, fmt in (("val_loss", ".4f"), ("val_AUC", ".4f"), ("val_soma_RMSE", ".3f")):
        if key in row and math.isfinite(row[key]):
            parts.append(f"{key.replace('_', ' ')} {row[key]:{fmt}}")
    parts.append(f"{row['train_s']:.0f} s")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m surrogate.fit",
        description=__doc__.split("\n")[0],
        epilog=preset_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_fit_options(parser)
    parser.add_argument("--d-m", type=int, help="memory units (default 20)")
    parser.add_argument(
        "--out", type=Path, help="run directory (default runs/<cell>_dm<d_m>_<preset>_seed<seed>)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run directory's last checkpoint"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    resolve_device(args.device)
    run_dir = args.out or default_run_dir(config)
    start = time.perf_counter()
    try:
        result = fit(
            config, run_dir, resume=args.resume, device=args.device, amp=args.amp,
            workers=args.workers,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: epochs finished so far are saved in {run_dir}; continue with the "
            "same command and --resume.",
            file=sys.stderr,
        )
        return 130
    wall = time.perf_counter() - start
    print(f"test metrics ({config.cell}, {config.model_label()}):")
    print(format_metrics(result["test_metrics"]))
    print(f"wall time {wall / 60:.1f} min; report: {Path(result['report']) / 'report.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
