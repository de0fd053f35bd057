"""The sizes of the network sweeps (`benchmarks.tradeoff`, `.axes`, `.scaling`), as data.

`PRESETS[name][task]` is one `SweepPreset`; a preset's first task is its default. Every
option of the commands overrides the preset's value.

- **cpu** (the default): finishes within 2 hours on 2 cores, synthetic data included.
  Plain SHD (20 words) on a synthetic SHD made on this machine (`biophys.shd_synth`,
  8 voices × 2 repetitions × 20 words = 320 clips, cached and reused), 20 ms bins
  (T = 50 steps), k_c 60 (30 branches × 2), budgets 15,300 and 153,000 parameters (a
  decade apart), d_m ∈ {2, 3, 5, 9, 15}, 3 seeds, 2000 steps of batch 8 per point. Every
  point of the grid lands within 1 % of its budget. `--task shd-adding` uses the same
  data and grid (budgets 15,125 and 152,950) with 1500 steps per point, since a pair is
  twice as long (T = 100). The arithmetic behind these sizes is in the README section
  "Scaling and trade-off sweeps".
- **paper**: the published protocol (docs/shared published-sweeps): SHD-Adding at 2 ms
  bins, 70 epochs × 2000 batches, P ≈ 77K, k_c 300 and the published d_m grid; Enwik8 at
  P ≈ 3.5M, k_c 750, 300k steps (`--data enwik8.zip` required). One point is a GPU-day;
  run it on a cluster (docs/cluster.md). The published points spread up to 4.2 % below
  their budget, so this preset admits 5 %.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SweepPreset:
    """What the sweep commands run by default for one task.

    Attributes:
        budgets: parameter budgets P of `scaling` (parameters); `budgets[0]` is the one
            budget of `tradeoff` and the reference of `axes`.
        k_c: synapses per neuron of the trade-off sweeps (a multiple of d_tree).
        d_m: the d_m grid of the trade-off sweeps.
        axes: the single-axis grids of `axes`: "N", "d_m", "k_c"; the other two axes sit
            at `base` meanwhile.
        base: {"N", "d_m", "k_c"} of `axes`.
        seeds: seeds per point (0, 1, …).
        train: options of `elmnet.train` for every point (steps, bin size, evaluation).
        synth: when set, the data are a synthetic SHD made by `biophys.shd_synth` with
            these options (cached); None: the task's own data (`--data` or the cache).
        data_required: the task has no default data; `--data` must be given.
        tolerance: largest relative distance of a point's exact P from its budget.
    """

    budgets: tuple[int, ...]
    k_c: int
    d_m: tuple[int, ...]
    axes: dict[str, tuple[int, ...]]
    base: dict[str, int]
    seeds: int
    train: dict[str, Any]
    synth: dict[str, Any] | None = None
    data_required: bool = False
    tolerance: float = 0.01


# The synthetic SHD of the cpu preset: 320 clips at ≈6 CPU-s each (measured) ≈ 16 min on
# 2 cores, made once and reused by every sweep that asks for the same options.
CPU_SYNTH = {"n_speakers": 8, "repeats": 2, "seed": 0}
# Training of one cpu point: 2000 steps, validation every 250 steps on all validation
# samples, the test on the whole synthetic test file. Dropout as in the task setup.
CPU_TRAIN = {"bin_ms": 20.0, "steps": 2000, "eval_every": 250, "log_every": 50,
             "eval_batch": 64}  # fmt: skip

PRESETS: dict[str, dict[str, SweepPreset]] = {
    "cpu": {
        "shd": SweepPreset(
            budgets=(15_300, 153_000), k_c=60, d_m=(2, 3, 5, 9, 15),
            axes={"N": (8, 16, 32, 64), "d_m": (2, 3, 5, 9, 15), "k_c": (30, 60, 120, 240)},
            base={"N": 24, "d_m": 5, "k_c": 60}, seeds=3, train=CPU_TRAIN, synth=CPU_SYNTH,
        ),
        "shd-adding": SweepPreset(
            budgets=(15_125, 152_950), k_c=60, d_m=(2, 3, 5, 9, 15),
            axes={"N": (8, 16, 32, 64), "d_m": (2, 3, 5, 9, 15), "k_c": (30, 60, 120, 240)},
            base={"N": 24, "d_m": 5, "k_c": 60}, seeds=3,
            # T = 100 steps per pair: ≈1.5× plain SHD's cost per step, so 1500 steps.
            train={**CPU_TRAIN, "steps": 1500}, synth=CPU_SYNTH,
        ),
    },
    "paper": {
        "shd-adding": SweepPreset(
            # 77,300 reproduces every published N (tests/test_elm_network.py); budgets of
            # `scaling` span three decades around it.
            budgets=(77_300, 24_000, 240_000, 770_000, 2_400_000, 7_700_000, 24_000_000),
            k_c=300, d_m=(2, 3, 4, 5, 7, 9, 11, 15, 20, 25),
            axes={"N": (24, 48, 96, 192, 384), "d_m": (2, 3, 5, 9, 15, 25),
                  "k_c": (60, 150, 300, 600, 1200)},
            base={"N": 96, "d_m": 5, "k_c": 300}, seeds=1,
            train={"bin_ms": 2.0, "epochs": 70, "steps_per_epoch": 2000, "warmup": 400,
                   "label_smoothing": 0.01, "mlp_reg": 0.002, "act_reg": 0.2},
            tolerance=0.05,
        ),
        "enwik8": SweepPreset(
            budgets=(3_516_900, 351_690, 1_111_000, 11_110_000, 35_169_000, 111_100_000,
                     351_690_000),
            k_c=750, d_m=(5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 85, 100),
            axes={"N": (185, 371, 742, 1484, 2968), "d_m": (5, 10, 20, 30, 50, 100),
                  "k_c": (150, 300, 750, 1500, 3000)},
            base={"N": 742, "d_m": 20, "k_c": 750}, seeds=1,
            train={"steps": 300_000, "label_smoothing": 1e-4, "mlp_reg": 0.01,
                   "act_reg": 1.0, "eval_every": 400},
            data_required=True, tolerance=0.05,
        ),
    },
}  # fmt: skip


def preset_for(name: str, task: str | None) -> tuple[str, SweepPreset]:
    """(task, preset) for `--preset name [--task task]`; a `UserError` names the choices."""
    from elmbridge.errors import UserError

    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    tasks = PRESETS[name]
    if task is None:
        task = next(iter(tasks))
    if task not in tasks:
        from elmnet.tasks import task_module

        task_module(task)  # an unknown task gets the registry's message
        raise UserError(
            f"the {name} preset has no setup for the task {task!r}; it covers "
            f"{', '.join(tasks)}; choose one, or another --preset"
        )
    return task, tasks[task]
