"""Train an ELM Network on a task: `python -m elmnet.train --task shd-adding --data FOLDER`.

    python -m elmnet.train --task shd-adding --data FOLDER [--N 96 --d-m 5 --k-c 300]
    python -m elmnet.train --task enwik8 --data enwik8.zip [--budget 3510000 --d-m 30]

FOLDER holds shd_train.h5 and shd_test.h5 (any files in the official SHD layout);
without --data the files are looked up in the user cache (--download fetches them).

The whole run, top to bottom: the options over the task's defaults (`elmnet.tasks`:
each task's `TRAINING` and `NETWORK`), the task's data, the run folder (`elmbridge.runs`:
run.json, metrics.csv, checkpoint.pt, best.pt, result.json written last), then the loop:
per step the task's batch loss plus the regularisers, gradient clipping, the optimiser
with a warm-up + cosine schedule; every --log-every steps a training row; every
--eval-every steps a validation row, best.pt when it is the best so far, and a
checkpoint. Last, the best model's test score goes to result.json.

Hidden neurons from a fitted neuron (`elmnet.transfer`): `--neuron num_memory_20` gives
every hidden neuron the released d_m = 20 NeuronIO fit's architecture, MLP, memory time
constants and spike readout, `--neuron-weights frozen` (default) keeps those weights
fixed, `init` trains on from them, `random` keeps the architecture only (the control at
equal parameter count). Run folders and model files of `surrogate.fit` go through
`python -m surrogate.compose` with the same options (elmnet does not read them).

A run killed or stopped (--stop-after) continues where it left off when the same
command is run again; --resume insists on that, --restart discards the old run.

Defaults follow docs/elm-model.md §3–4: SHD-Adding uses Adamax, lr 5e-3, batch 8, 2000
batches per epoch and a cosine schedule, with last-step cross-entropy; Enwik8 uses Adam,
lr 5e-4, 100 warm-up steps then cosine, gradient clipping at 1.0, truncated BPTT over
100 characters with the state carried across batches, 300k steps, and tests at batch 1
with the state carried through the whole split. Where the document gives no value
(epochs for SHD-Adding, clipping for SHD-Adding, label smoothing, regulariser weights)
the default is stated in --help.
"""

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.runs import TENSORBOARD_DIR, BestTracker, MetricsLog, RunFolder, read_metrics
from elmbridge.training import (
    clip_gradients,
    cosine_lr,
    load_optimizer_state,
    new_optimizer,
    resolve_device,
    rng_state,
    set_lr,
    set_rng_state,
)
from elmnet.config import ELMNetworkConfig
from elmnet.network import ELMNetwork, regularisation
from elmnet.params import network_parameters
from elmnet.released import load_released
from elmnet.tasks import TASKS, task_module
from elmnet.transfer import MODES, neuron_network_fields, transfer_neuron

__all__ = ["main", "read_metrics"]

RUN_KIND = "elmnet-train"
# Options that may change between the invocations of one run.
# test_curve only adds rows to metrics.csv: a resumed run may switch it on or off.
RESUMABLE = {"resume", "restart", "stop_after", "device", "progress", "download", "data", "out",
             "threads", "test_curve"}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m elmnet.train", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--data", help="SHD: folder with shd_train.h5/shd_test.h5; Enwik8: zip/file")
    p.add_argument("--download", action="store_true", help="fetch missing data into the cache")
    p.add_argument("--out", help="run folder (default runs/<task>)")
    p.add_argument("--resume", action="store_true", help="fail unless a run exists to resume")
    p.add_argument("--restart", action="store_true", help="discard an existing run in --out")
    p.add_argument("--stop-after", type=int, help="stop (checkpointed) after this many steps")
    p.add_argument("--seed", type=int, default=0, help="init, batches and dropout")
    p.add_argument("--data-seed", type=int, default=0, help="validation split, fixed pairs")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--threads", type=int,
        help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)",
    )  # fmt: skip

    m = p.add_argument_group("network (the task's setup unless given)")
    m.add_argument("--N", type=int, help="hidden neurons")
    m.add_argument("--budget", type=int, help="parameter budget P; sets N (not with --N)")
    m.add_argument("--d-m", type=int, help="memory units per hidden neuron")
    m.add_argument("--d-mlp", type=int, help="MLP width (default 2·d_m)")
    m.add_argument("--k-c", type=int, help="synapses per neuron (a multiple of d_tree)")
    m.add_argument("--d-tree", type=int, help="branches per neuron")
    m.add_argument("--rho", type=float, help="share of recurrent synapses")
    m.add_argument("--dropout-in", type=float, help="input dropout")
    m.add_argument("--dropout-rec", type=float, help="recurrent dropout")
    m.add_argument(
        "--neuron",
        help="hidden neurons from a fitted ELM neuron: a released model (e.g. num_memory_20) "
        "or its folder; sets d_m, d_mlp, activation, dynamics and time constants",
    )
    m.add_argument(
        "--neuron-weights", choices=MODES,
        help="with --neuron: copy its weights and keep them fixed (frozen, the default), train on "
        "from them "
        "(init), or draw them at random (random: the same architecture as a control)",
    )  # fmt: skip

    o = p.add_argument_group("optimisation (task defaults: see the module docstring)")
    o.add_argument("--optimizer", choices=["adam", "adamax", "adamw"])
    o.add_argument("--lr", type=float)
    o.add_argument("--min-lr", type=float, default=0.0, help="end of the cosine schedule")
    o.add_argument("--batch", type=int)
    o.add_argument("--steps", type=int, help="total steps (default epochs × steps per epoch)")
    o.add_argument("--epochs", type=int, help="SHD-Adding: epochs (default 50, our choice)")
    o.add_argument("--steps-per-epoch", type=int, help="SHD-Adding: batches per epoch")
    o.add_argument("--warmup", type=int, help="linear warm-up steps")
    o.add_argument("--clip", type=float, help="gradient norm clip (0: none)")
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument("--label-smoothing", type=float, default=0.0)
    o.add_argument("--act-reg", type=float, default=0.0, help="weight of mean(o²), hidden")
    o.add_argument("--mlp-reg", type=float, default=0.0, help="weight of mean(z²), MLP outputs")
    o.add_argument("--eval-every", type=int, help="steps between validations (SHD: an epoch)")
    o.add_argument("--log-every", type=int, help="steps between training-loss rows")
    o.add_argument(
        "--test-curve", action="store_true",
        help="also score the test split at every validation (rows 'test_curve' of "
        "metrics.csv, for learning curves); the best step is still chosen on validation",
    )  # fmt: skip

    d = p.add_argument_group("data")
    d.add_argument("--bin-ms", type=float, default=2.0, help="SHD bin size (ms)")
    d.add_argument("--val-pairs", type=int, help="SHD-Adding validation pairs (default: pool)")
    d.add_argument("--test-pairs", type=int, help="SHD-Adding test pairs (default: test file)")
    d.add_argument("--eval-batch", type=int, default=64, help="SHD-Adding eval batch")
    d.add_argument("--bptt", type=int, default=100, help="Enwik8: truncated BPTT length")
    d.add_argument("--val-bytes", type=int, default=1_000_000, help="Enwik8: validation prefix")
    d.add_argument("--val-batch", type=int, default=8, help="Enwik8: validation streams")
    d.add_argument("--test-batch", type=int, default=1, help="Enwik8: test streams")
    d.add_argument("--test-bytes", type=int, help="Enwik8: test only this prefix (default all)")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the task's defaults and check the options."""
    for key, value in task_module(args.task).TRAINING.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.steps is None:
        args.steps = args.epochs * args.steps_per_epoch
    if args.eval_every is None:
        args.eval_every = args.steps_per_epoch or 1000
    if args.out is None:
        args.out = str(Path("runs") / args.task)
    if args.N is not None and args.budget is not None:
        raise UserError("give either --N or --budget (which sets N), not both")
    if args.neuron_weights is not None and args.neuron is None:
        raise UserError("--neuron-weights needs --neuron (the fitted neuron to take them from)")
    if args.neuron is not None and args.neuron_weights is None:
        args.neuron_weights = "frozen"
    if args.resume and args.restart:
        raise UserError("--resume and --restart contradict each other; choose one")
    check_numbers(args)
    if args.test_bytes is not None and args.test_bytes < 2:
        raise UserError(f"--test-bytes must be at least 2 (one prediction), got {args.test_bytes}")
    resolve_device(args.device)
    return args


# Options that must be ≥ 1 when given (None: the task's default, or not used by it).
AT_LEAST_ONE = (
    "epochs", "steps_per_epoch", "steps", "batch", "eval_every", "log_every", "bptt",
    "val_batch", "test_batch", "stop_after", "threads", "N", "budget", "d_m", "d_mlp", "k_c",
    "d_tree", "val_pairs", "test_pairs", "eval_batch", "val_bytes",
)  # fmt: skip
# Options that must be ≥ 0 (0 switches the feature off).
AT_LEAST_ZERO = ("warmup", "clip", "weight_decay", "min_lr", "act_reg", "mlp_reg")
# A run of more steps than this is a typo (the longest documented run has 300k).
MAX_STEPS = 100_000_000


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_numbers(args: argparse.Namespace) -> None:
    """Reject, never replace, numbers that make no sense (NaN fails every test)."""
    for name in AT_LEAST_ONE:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"{_option(name)} must be at least 1, got {value}")
    for name in AT_LEAST_ZERO:
        value = getattr(args, name, None)
        if value is not None and not value >= 0:
            raise UserError(f"{_option(name)} must be ≥ 0 (0: off), got {value}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if not args.min_lr <= args.lr:
        raise UserError(f"--min-lr ({args.min_lr}) must not exceed --lr ({args.lr})")
    if not 0 <= args.label_smoothing < 1:
        raise UserError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    for name in ("dropout_in", "dropout_rec"):
        value = getattr(args, name)
        if value is not None and not 0 <= value < 1:
            raise UserError(f"{_option(name)} must be in [0, 1), got {value}")
    if args.rho is not None and not 0 <= args.rho <= 1:
        raise UserError(f"--rho is a share of the synapses, in [0, 1]; got {args.rho}")
    if not (args.bin_ms > 0 and math.isfinite(args.bin_ms)):
        raise UserError(f"--bin-ms must be a positive number of ms, got {args.bin_ms}")
    if args.steps > MAX_STEPS:
        raise UserError(f"--steps {args.steps} is more than {MAX_STEPS:,}; is it a typo?")


def network_config(args, task, neuron=None) -> ELMNetworkConfig:
    """The network for the task's data, from the options (N directly or from --budget);
    with a fitted `neuron`, its architecture (`elmnet.transfer.neuron_network_fields`)."""
    overrides = {"d_in": task.d_in, "n_out": task.n_out, "seed": args.seed}
    if neuron is not None:
        fields = neuron_network_fields(neuron)
        for option in ("d_m", "d_mlp"):
            given = getattr(args, option)
            if given is not None and given != fields[option]:
                raise UserError(
                    f"{_option(option)} {given} contradicts the --neuron's {option}="
                    f"{fields[option]}; leave it out"
                )
        overrides.update(fields)
    for option, field in (("d_m", "d_m"), ("d_mlp", "d_mlp"), ("d_tree", "d_tree"),
                          ("rho", "rho"), ("dropout_in", "dropout_in"),
                          ("dropout_rec", "dropout_rec"), ("N", "N"), ("k_c", "k_c")):  # fmt: skip
        if getattr(args, option) is not None:
            overrides[field] = getattr(args, option)
    if args.budget is not None:
        d_m = overrides.pop("d_m", ELMNetworkConfig.for_task(args.task).d_m)
        k_c = overrides.pop("k_c", None)
        return ELMNetworkConfig.from_budget(
            args.budget, d_m=d_m, k_c=k_c, task=args.task, **overrides
        )
    return ELMNetworkConfig.for_task(args.task, **overrides)


def make_optimizer(args, model) -> torch.optim.Optimizer:
    """The run's optimiser (`new_optimizer`) over the trainable parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return new_optimizer(args.optimizer, trainable, args.lr, args.weight_decay)


def comparable(args) -> dict:
    """The options that decide the run's result (what a resume must repeat)."""
    return {k: v for k, v in vars(args).items() if k not in RESUMABLE}


def check_run(args, folder: RunFolder) -> None:
    """Refuse, writing nothing, a folder whose run this command cannot continue (another
    configuration), and --resume without a run to resume."""
    if args.restart:
        return
    if folder.exists() and (folder.result() is not None or folder.checkpoint_path().is_file()):
        recorded = folder.record().get("config", {})
        if "args" in recorded and "network" in recorded:  # the layout before elmbridge.runs
            recorded = {k: v for k, v in recorded["args"].items() if k not in RESUMABLE}
        folder.check_same_config(comparable(args), recorded=recorded)
    elif args.resume:
        raise UserError(f"--resume: no checkpoint in {folder.path} to resume from")


def prepare_run(args, folder: RunFolder, task, run: "Run") -> dict | None:
    """Create the run folder or pick up the run in it; returns the checkpoint or None."""
    check_run(args, folder)
    discarded = args.restart and folder.exists()
    if args.restart:
        folder.discard()
    if folder.exists() and folder.result() is None and not folder.checkpoint_path().is_file():
        # A run that stopped before its first checkpoint holds nothing worth keeping;
        # refusing it would make an earlier refused or killed command block this one.
        print(f"notice: {folder.path} holds a run that never reached a checkpoint; starting anew")
        folder.discard()
        discarded = True
    if folder.exists():
        return folder.load_checkpoint()
    count = network_parameters(run.config)
    extra = {} if run.neuron_record is None else {"neuron": run.neuron_record}
    folder.start(
        RUN_KIND, comparable(args), args.seed, task.data.describe(), reuse_folder=discarded,
        network=run.config.to_dict(),
        parameters={"P": count.total, "N": count.N, "k_e": count.k_e, "k_c": count.k_c,
                    "hidden": count.hidden, "readout": count.readout,
                    "trainable": run.trainable_parameters()},
        **extra,
    )  # fmt: skip
    return None


class Run:
    """The model, optimiser and counters of one training run, and their checkpoint."""

    def __init__(
        self, args, task, config: ELMNetworkConfig, device: torch.device, neuron=None,
        neuron_source: dict | None = None,
    ):  # fmt: skip
        torch.manual_seed(args.seed)
        self.args, self.task, self.config, self.device = args, task, config, device
        model = ELMNetwork(config)
        self.neuron_record = None
        if neuron is not None:
            self.neuron_record = {**(neuron_source or {}), "weights": args.neuron_weights}
            if args.neuron_weights != "random":
                mapping = transfer_neuron(model, neuron, freeze=args.neuron_weights == "frozen")
                self.neuron_record["branch_map"] = mapping.tolist()
        self.model = model.to(device)
        self.optimizer = make_optimizer(args, self.model)
        self.step = 0
        self.best = BestTracker(task.higher_is_better)

    def trainable_parameters(self) -> int:
        """Parameters the optimiser updates (fewer than P when a neuron is frozen)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def restore(self, saved: dict, where) -> None:
        """Continue from a checkpoint; one that does not fit this run is a `UserError`."""
        try:
            self._restore(saved)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise UserError(
                f"{where} does not fit this run ({type(err).__name__}: {first}); it is from "
                "another version or damaged: start anew with --restart"
            ) from err

    def _restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        load_optimizer_state(self.optimizer, saved["optimizer"])
        best = saved["best"]  # {step, value} only in checkpoints of the earlier layout
        self.step = saved["step"]
        self.best = BestTracker(self.task.higher_is_better, best["value"], best["step"])
        set_rng_state(saved["rng"])
        carried = saved["carried"]
        self.task.restore(None if carried is None else tuple(t.to(self.device) for t in carried))

    def checkpoint(self, folder: RunFolder) -> None:
        folder.save_checkpoint({
            "step": self.step, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "best": self.best.state_dict(),
            "rng": rng_state(), "carried": self.task.carried(), "config": self.config.to_dict(),
        })  # fmt: skip

    def train_step(self) -> tuple[float, float]:
        """One optimiser step; returns the task loss and the learning rate used."""
        lr = self.begin_step()
        x, state, target = self.task.batch(self.step, self.device)
        loss, total = self.objective(self.model.run(x, state), target)
        total.backward()
        self.end_step()
        return loss.item(), lr

    # The step in three parts, so that `elmnet.train_packed` can run the forward and
    # backward passes of K runs as one model between them.
    def begin_step(self) -> float:
        """Training mode, the schedule's learning rate, no gradients; returns the rate."""
        a = self.args
        self.model.train()
        lr = cosine_lr(self.step, a.steps, a.lr, a.warmup, a.min_lr)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def objective(self, out, target) -> tuple[torch.Tensor, torch.Tensor]:
        """(task loss, task loss + regularisers) of a batch's forward output."""
        loss = self.task.loss(out, target)
        return loss, loss + regularisation(out, self.args.act_reg, self.args.mlp_reg)

    def end_step(self) -> None:
        """Clip this run's gradients on their own, take the optimiser step, count it."""
        if self.args.clip:
            clip_gradients(self.model.parameters(), self.args.clip)
        self.optimizer.step()
        self.step += 1

    def validate(self, folder: RunFolder, log: MetricsLog, lr: float, elapsed: float) -> float:
        """Validation row; best.pt when it is the best so far; then a checkpoint."""
        self.model.eval()
        result = self.task.evaluate(self.model, "valid", self.device)
        log.log(step=self.step, split="valid", loss=result["loss"], metric=self.task.metric,
                value=result["value"], lr=lr, elapsed_s=elapsed)  # fmt: skip
        if self.args.test_curve:
            # Reported, never used to choose: selection stays on validation alone.
            scored = self.task.evaluate(self.model, "test", self.device)
            log.log(step=self.step, split="test_curve", loss=scored["loss"],
                    metric=self.task.metric, value=scored["value"], lr=lr,
                    elapsed_s=elapsed)  # fmt: skip
        if self.best.update(result["value"], self.step):
            folder.save_best({"step": self.step, "model": self.model.state_dict(),
                              "config": self.config.to_dict()})  # fmt: skip
        self.checkpoint(folder)
        return result["value"]


class Tally:
    """The training losses since the last training row of metrics.csv."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def add(self, loss: float) -> None:
        self.total, self.count = self.total + loss, self.count + 1

    def take(self) -> float:
        """Their mean, and start anew."""
        mean = self.total / self.count
        self.total, self.count = 0.0, 0
        return mean


def stop_step(args, step: int) -> int:
    """Where this invocation stops: --steps, or --stop-after steps past `step`."""
    return args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)


def after_step(run: Run, folder: RunFolder, log: MetricsLog, tally: Tally, loss: float,
               lr: float, elapsed: float, bar=None) -> None:  # fmt: skip
    """What follows a step: its loss counted, a training row every --log-every steps and
    a validation (best.pt, checkpoint) every --eval-every steps and at the end."""
    a = run.args
    tally.add(loss)
    elapsed = round(elapsed, 3)
    if run.step % a.log_every == 0 or run.step == a.steps:
        mean = tally.take()
        if bar is not None:
            bar.set_postfix(loss=f"{mean:.4f}")
        log.log(step=run.step, split="train", loss=mean, metric="", value="", lr=lr,
                elapsed_s=elapsed)  # fmt: skip
    if run.step % a.eval_every == 0 or run.step == a.steps:
        value = run.validate(folder, log, lr, elapsed)
        if bar is not None:
            bar.write(f"step {run.step}: valid {run.task.metric} {value:.4f}")


def train(run: Run, folder: RunFolder, log: MetricsLog, stop: int | None = None) -> None:
    """Steps from the run's step to --steps (or --stop-after steps more, or `stop`),
    checkpointed."""
    a = run.args
    stop = stop_step(a, run.step) if stop is None else stop
    start, tally, in_step = time.perf_counter(), Tally(), False
    bar = tqdm(total=a.steps, initial=run.step, disable=not a.progress, desc=a.task)
    try:
        while run.step < stop:
            # An interrupt inside a step would leave weights, carried state and step count
            # out of step with each other: then the last checkpoint is the one to keep.
            in_step = True
            loss, lr = run.train_step()
            in_step = False
            bar.update()
            after_step(run, folder, log, tally, loss, lr, time.perf_counter() - start, bar)
    except KeyboardInterrupt:
        if not in_step:
            run.checkpoint(folder)
        raise
    finally:
        bar.close()
    run.checkpoint(folder)


def test(run: Run, folder: RunFolder, log: MetricsLog) -> dict:
    """The best model's score on the test split, written to result.json."""
    best = folder.load_best(map_location=run.device)
    run.model.load_state_dict(best["model"])
    run.model.eval()
    result = run.task.evaluate(run.model, "test", run.device)
    report = {"metric": run.task.metric, "test": result["value"], "test_loss": result["loss"],
              "n": result["n"], "best_step": run.best.step, "valid": run.best.value,
              "parameters": network_parameters(run.config).total,
              "trainable_parameters": run.trainable_parameters()}  # fmt: skip
    log.log(step=run.step, split="test", loss=result["loss"], metric=run.task.metric,
            value=result["value"], lr="", elapsed_s="")  # fmt: skip
    folder.finish(report)
    return report


def load_neuron_source(source: str) -> tuple[torch.nn.Module, dict]:
    """A released model (name or folder) and a description of where it came from."""
    neuron = load_released(source)
    return neuron, {"source": str(source), "kind": "released"}


def open_run(args, folder: RunFolder, task, device: torch.device, neuron=None,
             neuron_source: dict | None = None) -> tuple[Run, MetricsLog]:  # fmt: skip
    """The run of `args` in `folder`: made anew (run.json written) or restored from its
    checkpoint, with its metrics.csv opened at the checkpoint's step."""
    config = network_config(args, task, neuron)
    # The model and optimiser are made before the run folder is written, so that a
    # refused option (the optimiser checks its own) leaves nothing behind.
    run = Run(args, task, config, device, neuron, neuron_source)
    saved = prepare_run(args, folder, task, run)
    if saved is not None:
        run.restore(saved, folder.checkpoint_path())
    log = MetricsLog(
        folder.path / "metrics.csv", run.step if saved is not None else None,
        tensorboard_dir=folder.path / TENSORBOARD_DIR,
    )  # fmt: skip
    return run, log


def main(argv: list[str] | None = None, load_neuron=load_neuron_source, prog=None) -> int:
    """The command. `load_neuron(source) -> (ELMNeuron, description)` reads --neuron
    (`surrogate.compose` passes one that also reads fits)."""
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = resolve(parser.parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    folder, device = RunFolder(args.out), resolve_device(args.device)
    folder.check_writable()
    neuron, neuron_source = None, None
    if args.neuron is not None:
        neuron, neuron_source = load_neuron(args.neuron)
    task = task_module(args.task).Task(args)
    run, log = open_run(args, folder, task, device, neuron, neuron_source)
    config = run.config
    count = network_parameters(config)
    print(
        f"{args.task}: N={config.N} d_m={config.d_m} k_c={config.k_c} k_e={config.k_e} "
        f"P={count.total:,} ({run.trainable_parameters():,} trainable) on {device}; steps "
        f"{run.step}→{args.steps}, out {folder.path}"
    )
    try:
        train(run, folder, log)
        if run.step < args.steps:
            print(f"stopped at step {run.step} of {args.steps}; run the same command to continue")
            return 0
        report = test(run, folder, log)
    finally:
        log.close()
    print(
        f"test {task.metric} {report['test']:.4f} (best validation {run.best.value:.4f} at "
        f"step {run.best.step}); results in {folder.path}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
