"""Train K ELM Networks as one batched model (`elmnet.packed`): sweep points on one device.

    python -m elmnet.train_packed --task shd --data FOLDER --steps 2000 \\
        --points "--seed 0 --N 24 --out runs/a" "--seed 1 --N 16 --k-c 90 --out runs/b"

Each point is an `elmnet.train` command line (the options before --points, then its
own); `train_packed([argv, …])` is the same from Python (`benchmarks.sweep --pack`).
Every point gets the run folder its solo run writes (run.json, metrics.csv, checkpoint.pt,
best.pt, result.json) with the same contents, up to float rounding and the elapsed_s
column: the loop is `elmnet.train`'s own pieces (`open_run`, `Run.begin_step` /
`objective` / `end_step`, `after_step`, `test`) with one forward and one backward pass
for all points in between.

Why the result is the solo run's: each point draws its batches from its own (seed, step)
through its own task adapter, its dropout masks from its own copy of the global
generators (`PackedNetworks.point_rng`, started as ``torch.manual_seed(seed)`` is in a
solo run and checkpointed in the solo format), keeps its own optimiser, schedule and
gradient clipping, and is validated, checkpointed and tested on its own model. The
packed forward pass is exact (block-diagonal bank; `elmnet.packed`), and the backward
pass of the summed losses gives each point its own gradient because the points share no
parameter.

What must agree: `elmnet.packed.SHARED` (d_m, d_mlp, d_tree, …), and every option
outside `MAY_DIFFER` (task, data, batch, steps, evaluation and logging steps, bin size,
BPTT length, device …), so that the K points step, log and validate together. Seeds, N,
k_c, ρ, dropout and the optimiser's settings may differ. `--neuron` is refused (train
those points solo).

Resume: a point already finished is skipped; the others resume from their checkpoints.
When these are at different steps (a kill between two points' checkpoint writes, or
points trained solo before), the ones behind first train solo up to the furthest
point's step (exactly their solo run), then the pack continues from there.
"""

import copy
import shlex
import sys
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.runs import RunFolder
from elmbridge.training import resolve_device, rng_state, set_rng_state
from elmnet import train as solo
from elmnet.packed import PackedNetworks, check_packable
from elmnet.tasks import task_module

__all__ = ["MAY_DIFFER", "main", "train_packed"]

# `elmnet.train` options that may differ between the points of a pack; every other
# option must agree. An option added to `elmnet.train` later must agree until it is
# listed here, which is the safe side.
MAY_DIFFER = frozenset({
    "out", "resume", "restart", "seed", "N", "budget", "d_m", "d_mlp", "k_c", "d_tree", "rho",
    "dropout_in", "dropout_rec", "optimizer", "lr", "min_lr", "warmup", "clip", "weight_decay",
    "label_smoothing", "act_reg", "mlp_reg", "test_curve",
})  # fmt: skip


def parse_points(argvs: Sequence[Sequence[str]]) -> list:
    """Each point's `elmnet.train` options, resolved and checked; one `UserError` for a
    pack that cannot train as one."""
    if not argvs:
        raise UserError("a pack needs at least one point")
    parser = solo.build_parser()
    points = [solo.resolve(parser.parse_args(list(argv))) for argv in argvs]
    first = vars(points[0])
    for args in points:
        if args.neuron is not None:
            raise UserError("packed training takes no --neuron; train such points solo")
        diff = [k for k, v in vars(args).items() if k not in MAY_DIFFER and v != first.get(k)]
        if diff:
            k = diff[0]
            raise UserError(
                f"the points of a pack must agree on --{k.replace('_', '-')}: {first.get(k)!r} "
                f"vs {getattr(args, k)!r} (they may differ in {', '.join(sorted(MAY_DIFFER))})"
            )
    outs = [str(RunFolder(a.out).path.resolve()) for a in points]
    if len(set(outs)) != len(outs):
        raise UserError("two points of the pack share a run folder (--out); give each its own")
    return points


def point_tasks(points: list) -> list:
    """One task adapter per point, all on one copy of the data.

    The options that build a task's data all lie outside `MAY_DIFFER`, so they agree; a
    shallow copy then shares the (read-only) data while each point keeps its own options
    and its own carried state.
    """
    shared = task_module(points[0].task).Task(points[0])
    tasks = []
    for args in points:
        task = copy.copy(shared)
        task.args = args
        task.restore(None)
        tasks.append(task)
    return tasks


def train_packed(argvs: Sequence[Sequence[str]]) -> list[dict | None]:
    """Train (or resume) the points of `argvs` as one model; each point's result.json
    content, or None for a point stopped early (--stop-after)."""
    points = parse_points(argvs)
    first = points[0]
    if first.threads:
        torch.set_num_threads(first.threads)
    device = resolve_device(first.device)
    folders = [RunFolder(a.out) for a in points]
    for folder in folders:
        folder.check_writable()
    results: list[dict | None] = [folder.result() for folder in folders]
    todo = [k for k, result in enumerate(results) if result is None]
    for k in set(range(len(points))) - set(todo):
        print(f"{folders[k].path}: finished before; skipped")
    if not todo:
        return results
    tasks = point_tasks([points[k] for k in todo])
    # Refused before any folder is written.
    check_packable([solo.network_config(points[k], t) for k, t in zip(todo, tasks, strict=True)])
    for k in todo:
        solo.check_run(points[k], folders[k])
    runs, logs, rngs = [], [], []
    try:
        for k, task in zip(todo, tasks, strict=True):
            run, log = solo.open_run(points[k], folders[k], task, device)
            # Run() seeded the global generators, or restore() set the checkpoint's:
            # either way they now hold this point's, as its solo run would.
            runs.append(run)
            logs.append(log)
            rngs.append(rng_state())
            c = run.config
            print(f"{first.task}: N={c.N} d_m={c.d_m} k_c={c.k_c} seed {points[k].seed} on "
                  f"{device}; steps {run.step}→{first.steps}, out {folders[k].path}")  # fmt: skip
        catch_up(runs, [folders[k] for k in todo], logs, rngs)
        packed = PackedNetworks([run.model for run in runs], [run.args.seed for run in runs])
        for i, state in enumerate(rngs):
            packed.set_rng_state(i, state)
        train_together(packed, runs, [folders[k] for k in todo], logs)
        for i, k in enumerate(todo):
            if runs[i].step < first.steps:
                print(f"{folders[k].path}: stopped at step {runs[i].step} of {first.steps}")
                continue
            results[k] = solo.test(runs[i], folders[k], logs[i])
            print(f"{folders[k].path}: test {tasks[i].metric} {results[k]['test']:.4f} (best "
                  f"validation {runs[i].best.value:.4f} at step {runs[i].best.step})")  # fmt: skip
    finally:
        for log in logs:
            log.close()
    return results


def catch_up(runs: list, folders: list[RunFolder], logs: list, rngs: list) -> None:
    """Points behind the furthest one train solo up to its step (their generators in
    `rngs` go in and come back out advanced)."""
    target = max(run.step for run in runs)
    for i, run in enumerate(runs):
        if run.step < target:
            print(f"{folders[i].path}: at step {run.step}; solo up to the pack's {target}")
            outside = rng_state()
            set_rng_state(rngs[i])
            try:
                solo.train(run, folders[i], logs[i], stop=target)
                rngs[i] = rng_state()
            finally:
                set_rng_state(outside)


def train_together(packed: PackedNetworks, runs: list, folders: list[RunFolder],
                   logs: list) -> None:  # fmt: skip
    """`elmnet.train.train` for K runs at one step: one forward and one backward pass,
    then each run's own optimiser step, rows, validation and checkpoint."""
    a = runs[0].args
    device = runs[0].device
    stop = solo.stop_step(a, runs[0].step)
    start, tallies, in_step = time.perf_counter(), [solo.Tally() for _ in runs], False
    bar = tqdm(total=a.steps, initial=runs[0].step, disable=not a.progress,
               desc=f"{a.task} ×{len(runs)}")  # fmt: skip

    def checkpoint_all():
        for i, run in enumerate(runs):
            with packed.point_rng(i):
                run.checkpoint(folders[i])

    try:
        while runs[0].step < stop:
            in_step = True
            lrs = [run.begin_step() for run in runs]
            batches = [run.task.batch(run.step, device) for run in runs]
            outs = packed.run([b[0] for b in batches], [b[1] for b in batches])
            losses, total = [], 0.0
            for run, out, (_, _, target) in zip(runs, outs, batches, strict=True):
                loss, objective = run.objective(out, target)
                losses.append(loss.item())
                total = total + objective
            total.backward()
            for run in runs:
                run.end_step()
            in_step = False
            bar.update()
            elapsed = time.perf_counter() - start
            for i, run in enumerate(runs):
                # Validation writes the checkpoint, whose RNG must be this point's.
                with packed.point_rng(i):
                    solo.after_step(run, folders[i], logs[i], tallies[i], losses[i], lrs[i],
                                    elapsed)  # fmt: skip
    except KeyboardInterrupt:
        if not in_step:
            checkpoint_all()
        raise
    finally:
        bar.close()
    checkpoint_all()


def main(argv: list[str] | None = None) -> int:
    """The command: common `elmnet.train` options, then --points and one quoted string of
    options per point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--points" not in argv or argv.index("--points") == len(argv) - 1:
        raise UserError(
            'usage: python -m elmnet.train_packed COMMON-OPTIONS --points "POINT-OPTIONS" …'
        )
    at = argv.index("--points")
    common, each = argv[:at], argv[at + 1 :]
    results = train_packed([[*common, *shlex.split(point)] for point in each])
    done = sum(r is not None for r in results)
    print(f"{done} of {len(results)} points finished")
    return 0


if __name__ == "__main__":
    run_cli(main)
