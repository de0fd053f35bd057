"""Fit an ELM surrogate to a simulated cell: `python -m surrogate.fit --cell L5PC`.

On a fresh machine this generates a small default dataset through `biophys` (into the
user cache), fits a Branch-ELM (d_m 20, neuronio routing) with Adam (lr 5e-4, cosine
schedule over all steps) on 0.5·BCE(spike) + 0.5·MSE(soma), evaluates the model of the
best validation epoch on the test simulations with the published protocol, and prints
the metrics and where the report is.

Presets (`--preset`; every value can be overridden by its option):

=========  ===================  ======  ===========  ==========================
preset     default data         epochs  batches/ep.  meant for
=========  ===================  ======  ===========  ==========================
laptop     24 sims × 3 s        20      200          ≈11 min on 2 cores, all in
long       64 sims × 6 s        30      500          hours on a CPU, minutes on a GPU
paper      1408 sims × 6 s      35      10000        the published protocol (GPU)
=========  ===================  ======  ===========  ==========================

All presets: batch 8, windows of 500 ms starting ≥ 500 ms into a simulation, 1/6 (laptop)
or 1/11 (long, paper: 9 : 1 : 1 as the published files) of the simulations for
validation and as many for test. `--data STORE` fits on an existing store instead
(e.g. one made by `python -m biophys.simulate` or `python -m surrogate.neuronio_import`).

Every epoch ends with a checkpoint; `--resume` continues a killed run from its last
finished epoch. The run directory layout is described in `surrogate.runs`.
"""

import argparse
import csv
import importlib.util
import io
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from biophys import store
from elmbridge.cli import run_cli
from elmbridge.download import cache_dir
from elmbridge.errors import MissingDataError, UserError
from elmbridge.files import write_json, write_text
from elmbridge.provenance import run_record
from elmnet.neuron import ELMConfig, ELMNeuron
from elmnet.neuronio import SOMA, SOMA_OFFSET_MV, SOMA_SCALE, SPIKE, soma_target
from elmnet.params import neuron_parameters
from surrogate import runs
from surrogate.data import StoreInfo, WindowDataset, check_inputs_fit, inspect_store
from surrogate.data import split_simulations as make_splits
from surrogate.evaluate import (
    EvalProtocol,
    default_device,
    evaluate,
    format_metrics,
    predict,
    score,
)

# Seconds of wall time per simulated second of the full L5PC on one core (l5pc-model.md).
SIM_COST_S_PER_S = 10.0


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a fit's result (device and speed options excluded).

    Data: `data` is a store path, or None for the default store of `cell` with
    `n_sims` simulations of `duration_ms` made from `data_seed`.
    Model: a Branch-ELM with `d_m` memory units, `d_tree` branches of `d_brch` synapses.
    Training: `epochs` × `batches_per_epoch` batches of `batch_size` windows.
    """

    cell: str = "L5PC"
    preset: str = "laptop"
    data: str | None = None
    n_sims: int = 24
    duration_ms: int = 3000
    data_seed: int = 0
    val_fraction: float = 1 / 6
    test_fraction: float = 1 / 6
    d_m: int = 20
    d_tree: int = 45
    d_brch: int = 100
    routing: str = "neuronio"
    dynamics: str = "v1"
    activation: str = "relu"
    # 4000 batches: ≈5 min of training on 2 cores; with 800 the spike AUC stays ≈0.66.
    epochs: int = 20
    batches_per_epoch: int = 200
    batch_size: int = 8
    lr: float = 5e-4
    window_ms: int = 500
    min_start_ms: int = 500
    burn_in_ms: int = 150
    skip_ms: int = 500
    min_spikes: int = 0
    max_spikes: int = 24
    select_by: str = "soma_RMSE"
    seed: int = 0

    def __post_init__(self):
        for name in ("n_sims", "duration_ms", "epochs", "batches_per_epoch", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"the learning rate must be positive, got {self.lr}")
        if self.select_by not in SELECT_BY:
            raise UserError(f"select_by must be one of {sorted(SELECT_BY)}, got {self.select_by}")

    def protocol(self) -> EvalProtocol:
        return EvalProtocol(
            window_ms=self.window_ms,
            burn_in_ms=self.burn_in_ms,
            skip_ms=self.skip_ms,
            min_spikes=self.min_spikes,
            max_spikes=self.max_spikes,
        )


# Validation metric → +1 if larger is better, −1 if smaller is better.
SELECT_BY = {"soma_RMSE": -1, "AUC": +1, "loss": -1}

PRESETS: dict[str, dict[str, Any]] = {
    "laptop": {},
    "long": dict(
        n_sims=64, duration_ms=6000, epochs=30, batches_per_epoch=500,
        val_fraction=1 / 11, test_fraction=1 / 11,
    ),
    "paper": dict(
        n_sims=1408, duration_ms=6000, epochs=35, batches_per_epoch=10000,
        val_fraction=1 / 11, test_fraction=1 / 11,
    ),
}  # fmt: skip


def preset_config(preset: str = "laptop", **overrides: Any) -> FitConfig:
    """The configuration of a preset with some values replaced (None values are ignored)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FitConfig(**values)


def default_store_path(cell: str, n_sims: int, duration_ms: int, seed: int) -> Path:
    """Where the default dataset of a cell lives in the user cache."""
    return cache_dir("datasets") / f"{cell}_{n_sims}x{duration_ms}ms_seed{seed}.zarr"


def generate_store(cell: str, n_sims: int, duration_ms: int, seed: int, path: Path) -> None:
    """Make (or finish) a store with `python -m biophys.simulate` in a subprocess.

    The subprocess inherits the terminal, so its progress bar shows; it resumes a store
    that a killed earlier attempt left unfinished.
    """
    if importlib.util.find_spec("biophys.simulate") is None:
        raise MissingDataError(
            f"no dataset at {path}, and this installation cannot make one: the simulator "
            "(biophys.simulate) is not available. Make a store elsewhere with `python -m "
            "biophys.simulate` and pass it with --data."
        )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable, "-m", "biophys.simulate", "--cell", cell, "--n-sims", str(n_sims),
        "--duration-ms", str(duration_ms), "--seed", str(seed), "--out", str(path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise UserError(
            f"making the dataset failed (exit status {done.returncode}; see the messages "
            f"above). Run it by hand to resume: {' '.join(command[1:])}"
        )


def ensure_data(config: FitConfig) -> tuple[StoreInfo, float | None]:
    """The store to fit on, generating the default one when it is missing or unfinished.

    Returns:
        the store and the seconds spent generating it (None when nothing was made).
    """
    needed = config.min_start_ms + config.window_ms
    if config.data is not None:
        return inspect_store(config.data, min_time_ms=needed), None
    path = default_store_path(config.cell, config.n_sims, config.duration_ms, config.data_seed)
    have = len(store.completed_simulations(path)) if (path / "zarr.json").exists() else 0
    elapsed = None
    if have < config.n_sims:
        cores = os.cpu_count() or 1
        estimate_min = (
            (config.n_sims - have) * config.duration_ms / 1000 * SIM_COST_S_PER_S / cores / 60
        )
        print(
            f"No complete default dataset for {config.cell} at {path} ({have} of "
            f"{config.n_sims} simulations).\nGenerating {config.n_sims - have} simulations of "
            f"{config.duration_ms} ms with biophys (≈{estimate_min:.0f} min on {cores} cores); "
            "interrupting is safe, the next run continues it.",
            flush=True,
        )
        start = time.perf_counter()
        generate_store(config.cell, config.n_sims, config.duration_ms, config.data_seed, path)
        elapsed = time.perf_counter() - start
    return inspect_store(path, min_time_ms=needed), elapsed


def store_cell(info: StoreInfo) -> str | None:
    """The cell name a store records, when it records one."""
    for source in (info.attrs, info.attrs.get("protocol") or {}):
        if isinstance(source, dict) and isinstance(source.get("cell"), str):
            return source["cell"]
    return None


def elm_config(config: FitConfig, n_inputs: int) -> ELMConfig:
    """The ELM neuron a fit trains, for a store with `n_inputs` inputs."""
    return ELMConfig(
        d_in=n_inputs,
        d_out=2,
        d_m=config.d_m,
        d_tree=config.d_tree,
        d_brch=config.d_brch,
        routing=config.routing,
        dynamics=config.dynamics,
        activation=config.activation,
        routing_seed=config.seed,
    )


def neuronio_loss(y: torch.Tensor, spike: torch.Tensor, soma: torch.Tensor) -> torch.Tensor:
    """0.5·BCE-with-logits on the spike channel + 0.5·MSE on the scaled soma channel."""
    y = y.to(spike.dtype)
    bce = F.binary_cross_entropy_with_logits(y[..., SPIKE], spike)
    return 0.5 * bce + 0.5 * F.mse_loss(y[..., SOMA], soma)


def resolve_device(device: str | None) -> torch.device:
    name = device or default_device()
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"unknown device {name!r} ({err}); use cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU; use cpu")
    return dev


class _TensorBoard:
    """TensorBoard scalars when the package is installed; silently nothing otherwise."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(folder))

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if isinstance(value, float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV, rewritten whole and atomically (a resumed fit adds no duplicates)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def _is_best(row: dict[str, Any], state: dict[str, Any], select_by: str) -> bool:
    """Whether this epoch's model is the best so far (updates `state`).

    The criterion is fixed at the first epoch: `select_by` on the validation split, or
    the validation loss when that metric is undefined there (no validation simulation
    within the spike-count filter, or no spike). Without validation data the latest
    epoch is the best.
    """
    if "val_loss" not in row:
        return True
    if state.get("select_by") is None:
        key = select_by
        if not math.isfinite(row.get(f"val_{key}", float("nan"))):
            print(
                f"notice: validation {key} is undefined on this data (no validation simulation "
                "passes the spike-count filter, or none spikes); the best epoch is chosen by "
                "the validation loss instead"
            )
            key = "loss"
        state["select_by"] = key
    key = state["select_by"]
    value = row.get(f"val_{key}", float("nan"))
    if not math.isfinite(value):
        return state["best"] is None
    if state["best"] is None or SELECT_BY[key] * (value - state["best"]) > 0:
        state["best"] = value
        return True
    return False


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]


def _open_run(
    config: FitConfig, run_dir: Path, resume: bool
) -> tuple[StoreInfo, ELMConfig, dict[str, list[int]]]:
    """The data, model configuration and splits of a run; records a new run's provenance."""
    info, generation_s = ensure_data(config)
    recorded_cell = store_cell(info)
    if config.data is not None and recorded_cell and recorded_cell != config.cell:
        raise UserError(
            f"{info.path} holds simulations of {recorded_cell!r}, not {config.cell!r}; "
            f"pass --cell {recorded_cell} (or leave --cell out)"
        )
    check_inputs_fit(info, info.n_inputs, config.routing, what="the surrogate")
    model_config = elm_config(config, info.n_inputs)
    if resume and runs.is_run_dir(run_dir):
        record = runs.read_run(run_dir)
        if record["data"]["protocol_hash"] != info.protocol_hash:
            raise UserError(
                f"the data of {run_dir} ({record['data']['store']}) was remade with another "
                "protocol since the fit started; start a new run with --out"
            )
        return info, model_config, record["splits"]
    splits = make_splits(info.simulations, config.val_fraction, config.test_fraction, config.seed)
    record = run_record(asdict(config), config.seed, info.provenance())
    record.update(
        splits=splits,
        elm_config=model_config.to_dict(),
        n_parameters=neuron_parameters(model_config).total,
        data_generation_s=generation_s,
    )
    write_json(run_dir / runs.RUN_FILE, record)
    return info, model_config, splits


class _Trainer:
    """The model and everything that moves it: optimiser, cosine schedule, loss scaler."""

    def __init__(self, model_config: ELMConfig, config: FitConfig, dev: torch.device, amp: bool):
        torch.manual_seed(config.seed)
        self.model = ELMNeuron(model_config).to(dev)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs * config.batches_per_epoch
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")
        self.amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
        self.amp, self.dev = amp, dev

    def state_dict(self) -> dict[str, Any]:
        parts = ("model", "optimizer", "scheduler", "scaler")
        return {name: getattr(self, name).state_dict() for name in parts}

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        for name in ("model", "optimizer", "scheduler", "scaler"):
            getattr(self, name).load_state_dict(blob[name])

    def train_epoch(self, loader, desc: str, progress: bool) -> list[float]:
        """One pass over `loader`, one optimiser step per batch; returns the batch losses."""
        self.model.train()
        losses: list[float] = []
        bar = tqdm(loader, desc=desc, disable=not progress)
        for x, spike, soma in bar:
            x, spike, soma = (t.to(self.dev, non_blocking=True) for t in (x, spike, soma))
            with torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.amp):
                y, _ = self.model(x)
            loss = neuronio_loss(y, spike, soma)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
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
        run_dir: the run directory (created).
        resume: continue a run directory's last checkpoint (or start it if it has none).
        device: "cpu", "cuda", … (default: cuda when present).
        amp: mixed precision (bfloat16 on CPU, float16 with loss scaling on CUDA).
        workers: DataLoader worker processes (default: 0 on CPU, 4 on CUDA).
        stop_after_epochs: return after this many epochs of this call (for time-limited
            jobs that resume later); None runs to the end.
        progress: show progress bars.

    Returns:
        the result (test metrics, timings), or None when stopped early.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    workers = (0 if dev.type == "cpu" else 4) if workers is None else workers
    if runs.is_run_dir(run_dir) and not resume:
        raise UserError(
            f"{run_dir} already holds a fit; continue it with --resume, or choose a new --out"
        )
    if run_dir.exists() and not runs.is_run_dir(run_dir) and any(run_dir.iterdir()):
        raise UserError(f"{run_dir} is a non-empty folder but not a run directory; choose --out")
    if resume and runs.is_run_dir(run_dir):
        diff = _config_diff(runs.read_run(run_dir)["config"], asdict(config))
        if diff:
            raise UserError(
                f"{run_dir} was fitted with another configuration; resume with the same "
                f"options or choose a new --out. Differences: {'; '.join(diff)}"
            )
        result = runs.run_result(run_dir)
        if result is not None:
            print(f"{run_dir} is finished; reusing its result")
            return result

    info, model_config, splits = _open_run(config, run_dir, resume)
    count = neuron_parameters(model_config)

    trainer = _Trainer(model_config, config, dev, amp)
    state = {"epochs_done": 0, "best": None, "select_by": None, "history": [], "train_s": 0.0}
    checkpoint = run_dir / runs.CHECKPOINT_FILE
    if resume and checkpoint.is_file():
        blob = torch.load(checkpoint, map_location=dev, weights_only=True)
        trainer.load_state_dict(blob)
        state = blob["state"]
        print(f"resuming {run_dir} after epoch {state['epochs_done']} of {config.epochs}")

    print(
        f"fitting a Branch-ELM (d_m {config.d_m}, {count.total} parameters) on "
        f"{len(splits['train'])} training simulations of {info.path} "
        f"({len(splits['val'])} validation, {len(splits['test'])} test); run: {run_dir}",
        flush=True,
    )
    protocol = config.protocol()
    dataset = WindowDataset(
        info,
        splits["train"],
        n_windows=config.batches_per_epoch * config.batch_size,
        window_ms=config.window_ms,
        min_start_ms=config.min_start_ms,
        seed=config.seed,
    )
    board = _TensorBoard(run_dir / "tensorboard")
    epochs_this_call = 0
    try:
        for epoch in range(state["epochs_done"], config.epochs):
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=config.batch_size,
                shuffle=False,
                num_workers=workers,
                pin_memory=dev.type == "cuda",
            )
            start = time.perf_counter()
            desc = f"epoch {epoch + 1}/{config.epochs}"
            losses = trainer.train_epoch(loader, desc, progress)
            train_s = time.perf_counter() - start
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * config.batches_per_epoch,
                "lr": trainer.scheduler.get_last_lr()[0],
                "train_loss": float(np.mean(losses)),
                "train_s": train_s,
            }
            if splits["val"]:
                row.update(_validate(trainer.model, info, splits["val"], protocol, dev))
            state["train_s"] += train_s
            row["elapsed_s"] = state["train_s"]
            state["history"].append(row)
            if _is_best(row, state, config.select_by):
                runs.save_model(
                    trainer.model, run_dir / runs.BEST_MODEL_FILE, epoch=epoch + 1, row=row
                )
            state["epochs_done"] = epoch + 1
            write_csv(run_dir / runs.METRICS_FILE, state["history"])
            board.log(row, row["step"])
            runs.save_torch({**trainer.state_dict(), "state": state}, checkpoint)
            print(_epoch_line(row), flush=True)
            epochs_this_call += 1
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                if state["epochs_done"] < config.epochs:
                    return None
    finally:
        board.close()

    best, best_info = runs.load_model_file(run_dir / runs.BEST_MODEL_FILE)
    report_dir = run_dir / runs.REPORT_DIR
    test_metrics = evaluate(
        best,
        info,
        splits["test"],
        report_dir,
        protocol,
        device=dev,
        title=f"{config.cell}: Branch-ELM d_m {config.d_m}, epoch {best_info['epoch']} (test)",
        context={"model": {"kind": "run", "source": str(run_dir.resolve())}, "split": "test"},
        progress=progress,
    )
    result = {
        "test_metrics": test_metrics,
        "best_epoch": best_info["epoch"],
        "selected_by": f"val_{state['select_by']}" if state["select_by"] else "latest epoch",
        "n_parameters": count.total,
        "d_m": config.d_m,
        "train_s": state["train_s"],
        "data_generation_s": runs.read_run(run_dir).get("data_generation_s"),
        "report": str(report_dir),
    }
    write_json(run_dir / runs.RESULT_FILE, result)
    return result


def _validate(model, info, sims, protocol, dev) -> dict[str, float]:
    """Validation metrics (protocol windows) and the validation loss, prefixed `val_`."""
    pred = predict(model, info, sims, protocol, device=dev, progress=False)
    metrics, _ = score(pred, protocol)
    out = {f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}
    # The training loss over whole validation simulations, from the stitched outputs.
    raw_soma = (torch.from_numpy(pred.soma_mv).double() - SOMA_OFFSET_MV) * SOMA_SCALE
    y = torch.stack([torch.from_numpy(pred.spike_logit).double(), raw_soma], dim=-1)
    label = torch.from_numpy(pred.spike_label).double()
    target = soma_target(torch.from_numpy(pred.soma_true_mv).double())
    out["val_loss"] = float(neuronio_loss(y, label, target))
    return out


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"train loss {row['train_loss']:.4f}"]
    for key, fmt in (("val_loss", ".4f"), ("val_AUC", ".4f"), ("val_soma_RMSE", ".3f")):
        if key in row and math.isfinite(row[key]):
            parts.append(f"{key.replace('_', ' ')} {row[key]:{fmt}}")
    parts.append(f"{row['train_s']:.0f} s")
    return " | ".join(parts)


def default_run_dir(config: FitConfig) -> Path:
    stem = Path(config.data).stem if config.data else config.cell
    return Path("runs") / f"{stem}_dm{config.d_m}_{config.preset}_seed{config.seed}"


def preset_table() -> str:
    """The presets' sizes as a small text table (for --help)."""
    lines = ["presets (unset options take the preset's value):"]
    for name in PRESETS:
        c = preset_config(name)
        lines.append(
            f"  {name:<7} data {c.n_sims} sims × {c.duration_ms} ms, {c.epochs} epochs × "
            f"{c.batches_per_epoch} batches of {c.batch_size}, validation/test "
            f"{c.val_fraction:.3g}/{c.test_fraction:.3g} of the simulations"
        )
    return "\n".join(lines)


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by `fit` and `ablate` (all but --d-m, --out and --resume)."""
    add = parser.add_argument
    add(
        "--cell",
        default=None,
        help="cell variant of biophys (default L5PC; with --data: the store's)",
    )
    add(
        "--preset",
        default="laptop",
        choices=list(PRESETS),
        help="sizes (see below); default laptop",
    )
    add("--data", help="an existing store to fit on (default: generate the preset's store)")
    add("--n-sims", type=int, help="simulations of the generated default store")
    add("--duration-ms", type=int, help="duration of each generated simulation, ms")
    add("--data-seed", type=int, help="base seed of the generated store")
    add("--epochs", type=int, help="training epochs (see below)")
    add("--batches-per-epoch", type=int, help="batches per epoch (see below)")
    add("--batch-size", type=int, help="windows per batch (default 8)")
    add("--lr", type=float, help="Adam learning rate, cosine-annealed to 0 (default 5e-4)")
    add("--d-tree", type=int, help="branches (default 45)")
    add("--d-brch", type=int, help="synapses per branch (default 100)")
    add("--routing", choices=["neuronio", "random"])
    add("--activation", choices=["relu", "silu"])
    add("--dynamics", choices=["v1", "v2"])
    add("--val-fraction", type=float, help="share of simulations for validation (see below)")
    add("--test-fraction", type=float, help="share of simulations for the test (see below)")
    add("--max-spikes", type=int, help="evaluate simulations with at most this many spikes (24)")
    add("--select-by", choices=list(SELECT_BY), help="validation metric picking the best epoch")
    add("--seed", type=int, help="seed of initialisation, splits and windows (default 0)")
    add("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    add("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    add("--workers", type=int, help="DataLoader workers (default 0 on CPU, 4 on CUDA)")  # fmt: skip


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


OPTION_FIELDS = {f.name for f in fields(FitConfig)} - {"preset"}


def config_from_args(args: argparse.Namespace) -> FitConfig:
    """The fit configuration of parsed command-line options."""
    overrides = {k: v for k, v in vars(args).items() if k in OPTION_FIELDS}
    if overrides.get("data") is not None:
        overrides["data"] = str(Path(overrides["data"]).resolve())
        if args.cell is None:
            info = inspect_store(overrides["data"])
            overrides["cell"] = store_cell(info) or Path(overrides["data"]).stem
    return preset_config(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
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
    print(f"test metrics ({config.cell}, d_m {config.d_m}):")
    print(format_metrics(result["test_metrics"]))
    print(f"wall time {wall / 60:.1f} min; report: {Path(result['report']) / 'report.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
