"""Train an ELM Network on SHD-Adding or Enwik8.

    python -m elmnet.train --task shd-adding --data FOLDER [--N 96 --d-m 5 --k-c 300]
    python -m elmnet.train --task enwik8 --data enwik8.zip [--budget 3510000 --d-m 30]

FOLDER holds shd_train.h5 and shd_test.h5 (any files in the official SHD layout);
without --data the files are looked up in the user cache (--download fetches them).

Everything a run writes goes to --out (default runs/<task>): config.json (configuration,
seed, software versions, data provenance), metrics.csv, checkpoint.pt (latest, written
atomically), best.pt (best validation score) and test.json (the best checkpoint's test
score). A run killed or stopped (--stop-after) continues where it left off when the same
command is run again; --resume insists on that, --restart discards the old run.

Defaults follow elm-model.md §3–4: SHD-Adding uses Adamax, lr 5e-3, batch 8, 2000 batches
per epoch and a cosine schedule, with last-step cross-entropy; Enwik8 uses Adam, lr 5e-4,
100 warm-up steps then cosine, gradient clipping at 1.0, truncated BPTT over 100
characters with the state carried across batches, 300k steps, and tests at batch 1 with
the state carried through the whole split. Where the document gives no value (epochs for
SHD-Adding, clipping for SHD-Adding, label smoothing, regulariser weights) the default is
stated in --help.
"""

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import atomic_path, write_json
from elmbridge.provenance import run_record
from elmnet.network import ELMNetwork, ELMNetworkConfig, regularisation
from elmnet.params import network_parameters

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "shd-adding": dict(
        optimizer="adamax", lr=5e-3, batch=8, steps_per_epoch=2000, epochs=50, warmup=0,
        clip=1.0, eval_every=None, log_every=100,
    ),
    "enwik8": dict(
        optimizer="adam", lr=5e-4, batch=8, steps_per_epoch=None, epochs=None, steps=300_000,
        warmup=100, clip=1.0, eval_every=5000, log_every=100,
    ),
}  # fmt: skip

# Options that may change between the invocations of one run.
RESUMABLE = {
    "resume",
    "restart",
    "stop_after",
    "device",
    "progress",
    "download",
    "data",
    "out",
    "threads",
}
METRIC_FIELDS = ["step", "split", "loss", "metric", "value", "lr", "elapsed_s"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m elmnet.train", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--task", required=True, choices=["shd-adding", "enwik8"])
    p.add_argument("--data", help="SHD: folder with shd_train.h5/shd_test.h5; Enwik8: zip/file")
    p.add_argument("--download", action="store_true", help="fetch missing data into the cache")
    p.add_argument("--out", help="run folder (default runs/<task>)")
    p.add_argument("--resume", action="store_true", help="fail unless a run exists to resume")
    p.add_argument("--restart", action="store_true", help="discard an existing run in --out")
    p.add_argument("--stop-after", type=int, help="stop (checkpointed) after this many steps")
    p.add_argument("--seed", type=int, default=0, help="init, batches and dropout")
    p.add_argument("--data-seed", type=int, default=0, help="validation split, fixed pairs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
    for key, value in TASK_DEFAULTS[args.task].items():
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
    for name in ("steps", "batch", "eval_every", "log_every", "bptt", "val_batch", "test_batch"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if not 0 <= args.label_smoothing < 1:
        raise UserError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.resume and args.restart:
        raise UserError("--resume and --restart contradict each other; choose one")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device here; use --device cpu")
    return args


# ---------------------------------------------------------------------------------------
# Tasks: the same four methods for both.


class SHDAddingTask:
    """SHD-Adding: last-step classification of independent pairs; accuracy."""

    metric, higher_is_better = "accuracy", True

    def __init__(self, args):
        from elmnet.tasks.shd import find_shd, load_split
        from elmnet.tasks.shd_adding import N_CLASSES, SHDAdding

        train_path, test_path = find_shd(args.data, download=args.download)
        self.data = SHDAdding(
            load_split(train_path), load_split(test_path), bin_ms=args.bin_ms,
            data_seed=args.data_seed, n_val_pairs=args.val_pairs, n_test_pairs=args.test_pairs,
        )  # fmt: skip
        self.args, self.d_in, self.n_out = args, self.data.n_channels, N_CLASSES

    def batch_loss(self, model, step, device):
        x, y = self.data.train_batch(self.args.seed, step, self.args.batch)
        out = model.run(torch.from_numpy(x).to(device))
        logits = out.logits[:, -1]
        y = torch.from_numpy(y).to(device)
        return F.cross_entropy(logits, y, label_smoothing=self.args.label_smoothing), out

    @torch.no_grad()
    def evaluate(self, model, split, device):
        correct, total, loss = 0, 0, 0.0
        for x, y in self.data.eval_batches(split, self.args.eval_batch):
            logits = model(torch.from_numpy(x).to(device))[0][:, -1].float()
            y = torch.from_numpy(y).to(device)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
            total += len(y)
        return {"loss": loss / total, "value": correct / total, "n": total}

    def carried(self):
        return None

    def restore(self, carried):
        pass


class Enwik8Task:
    """Enwik8: next-byte prediction with the state carried across batches; BPC."""

    metric, higher_is_better = "bpc", False

    def __init__(self, args):
        from elmnet.tasks.enwik8 import Enwik8, Streams, find_enwik8

        self.data = Enwik8.load(find_enwik8(args.data, download=args.download))
        self.streams = Streams(self.data.train, args.batch, args.bptt)
        self.args, self.d_in = args, self.data.n_tokens
        self.n_out = self.data.n_tokens
        self.state = None

    def batch_loss(self, model, step, device):
        window = step % len(self.streams)
        if window == 0:  # a new pass over the training streams starts from zero state
            self.state = None
        x, y = (t.to(device) for t in self.streams.window(window))
        out = model.run(x, self.state)
        self.state = out.state.detach()
        loss = F.cross_entropy(
            out.logits.flatten(0, 1), y.flatten(), label_smoothing=self.args.label_smoothing
        )
        return loss, out

    @torch.no_grad()
    def evaluate(self, model, split, device):
        from elmnet.tasks.enwik8 import evaluate_bpc

        a = self.args
        batch, limit = (
            (a.val_batch, a.val_bytes) if split == "valid" else (a.test_batch, a.test_bytes)
        )
        result = evaluate_bpc(
            model, self.data.split(split), batch=batch, bptt=a.bptt, device=device,
            max_bytes=limit, progress=a.progress,
        )  # fmt: skip
        return {"loss": result["nll_nats"], "value": result["bpc"], "n": result["n_predictions"]}

    def carried(self):
        return self.state

    def restore(self, carried):
        self.state = carried


TASK_CLASSES = {"shd-adding": SHDAddingTask, "enwik8": Enwik8Task}


def network_config(args, task) -> ELMNetworkConfig:
    """The network for the task's data, from the options (N directly or from --budget)."""
    overrides = {"d_in": task.d_in, "n_out": task.n_out, "seed": args.seed}
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


def learning_rate(step: int, args) -> float:
    """Linear warm-up to lr, then a cosine down to min_lr at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    span = max(1, args.steps - args.warmup)
    progress = min(1.0, (step - args.warmup) / span)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(args, model) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}
    return cls[args.optimizer](model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


# ---------------------------------------------------------------------------------------
# Run folder: checkpoints and metrics.


@dataclass
class Best:
    step: int = -1
    value: float = float("nan")

    def improved_by(self, value: float, higher_is_better: bool) -> bool:
        if self.step < 0:
            return True
        return value > self.value if higher_is_better else value < self.value


def save_checkpoint(path: Path, **payload) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def comparable(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in RESUMABLE}


class Metrics:
    """metrics.csv, one row per log or evaluation; rows past a resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, METRIC_FIELDS).writerow(row)


def prepare_run(args, out: Path, task, config) -> dict | None:
    """Create the run folder or pick up the run in it; returns the checkpoint or None."""
    checkpoint = out / "checkpoint.pt"
    if args.restart:
        for name in ("checkpoint.pt", "best.pt", "metrics.csv", "test.json", "config.json"):
            (out / name).unlink(missing_ok=True)
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved["args"] != comparable(args):
            diff = sorted(
                k for k in set(saved["args"]) | set(comparable(args))
                if saved["args"].get(k) != comparable(args).get(k)
            )  # fmt: skip
            raise UserError(
                f"{out} holds a run with other settings ({', '.join(diff)} differ). Run the "
                f"same command to resume it, choose another --out, or pass --restart."
            )
        return saved
    if args.resume:
        raise UserError(f"--resume: no checkpoint in {out} to resume from")
    out.mkdir(parents=True, exist_ok=True)
    count = network_parameters(config)
    record = run_record(
        {"args": vars(args), "network": config.to_dict(),
         "parameters": {"P": count.total, "N": count.N, "k_e": count.k_e, "k_c": count.k_c,
                        "hidden": count.hidden, "readout": count.readout}},
        seed=args.seed, data=task.data.describe(),
    )  # fmt: skip
    write_json(out / "config.json", record)
    return None


def main(argv: list[str] | None = None) -> int:
    args = resolve(build_parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    out, device = Path(args.out), torch.device(args.device)
    task = TASK_CLASSES[args.task](args)
    config = network_config(args, task)
    saved = prepare_run(args, out, task, config)

    torch.manual_seed(args.seed)
    model = ELMNetwork(config).to(device)
    optimizer = make_optimizer(args, model)
    step, best = 0, Best()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, best = saved["step"], Best(**saved["best"])
        set_rng_state(saved["rng"])
        carried = saved["carried"]
        task.restore(None if carried is None else type(carried)(*(t.to(device) for t in carried)))
    metrics = Metrics(out / "metrics.csv", step if saved is not None else None)
    count = network_parameters(config)
    print(
        f"{args.task}: N={config.N} d_m={config.d_m} k_c={config.k_c} k_e={config.k_e} "
        f"P={count.total:,} on {device}; steps {step}→{args.steps}, out {out}"
    )

    def checkpoint(at_step):
        save_checkpoint(
            out / "checkpoint.pt", step=at_step, model=model.state_dict(),
            optimizer=optimizer.state_dict(), best=vars(best), rng=rng_state(),
            carried=task.carried(), args=comparable(args), config=config.to_dict(),
        )  # fmt: skip

    start, stop = time.perf_counter(), args.steps
    if args.stop_after is not None:
        stop = min(stop, step + args.stop_after)
    running, n_running, in_step = 0.0, 0, False
    bar = tqdm(total=args.steps, initial=step, disable=not args.progress, desc=args.task)
    try:
        while step < stop:
            # An interrupt inside a step would leave weights, carried state and step count
            # out of step with each other: then the last checkpoint is the one to keep.
            in_step = True
            model.train()
            lr = learning_rate(step, args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, out_ = task.batch_loss(model, step, device)
            total = loss + regularisation(out_, args.act_reg, args.mlp_reg)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            step += 1
            in_step = False
            running, n_running = running + loss.item(), n_running + 1
            bar.update()
            elapsed = round(time.perf_counter() - start, 3)
            if step % args.log_every == 0 or step == args.steps:
                bar.set_postfix(loss=f"{running / n_running:.4f}")
                metrics.write(step=step, split="train", loss=running / n_running, metric="",
                              value="", lr=lr, elapsed_s=elapsed)  # fmt: skip
                running, n_running = 0.0, 0
            if step % args.eval_every == 0 or step == args.steps:
                model.eval()
                result = task.evaluate(model, "valid", device)
                metrics.write(step=step, split="valid", loss=result["loss"], metric=task.metric,
                              value=result["value"], lr=lr, elapsed_s=elapsed)  # fmt: skip
                if best.improved_by(result["value"], task.higher_is_better):
                    best = Best(step, result["value"])
                    save_checkpoint(out / "best.pt", step=step, model=model.state_dict(),
                                    config=config.to_dict())  # fmt: skip
                bar.write(f"step {step}: valid {task.metric} {result['value']:.4f}")
                checkpoint(step)
    except KeyboardInterrupt:
        if not in_step:
            checkpoint(step)
        raise
    finally:
        bar.close()
    checkpoint(step)
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; run the same command to continue")
        return 0

    best_state = torch.load(out / "best.pt", map_location=device, weights_only=False)
    model.load_state_dict(best_state["model"])
    model.eval()
    result = task.evaluate(model, "test", device)
    report = {"metric": task.metric, "test": result["value"], "test_loss": result["loss"],
              "n": result["n"], "best_step": best.step, "valid": best.value,
              "parameters": count.total}  # fmt: skip
    write_json(out / "test.json", report)
    metrics.write(step=step, split="test", loss=result["loss"], metric=task.metric,
                  value=result["value"], lr="", elapsed_s="")  # fmt: skip
    print(
        f"test {task.metric} {result['value']:.4f} (best validation {best.value:.4f} at step "
        f"{best.step}); results in {out}"
    )
    return 0


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a run's metrics.csv, numbers parsed."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: _number(v) for k, v in row.items()})
    return rows


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


if __name__ == "__main__":
    run_cli(main)
