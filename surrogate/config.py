"""What a surrogate fit is: its configuration, the presets, and the options that set them.

Presets (`--preset`; every value can be overridden by its option):

=========  ===================  ======  ===========  ==========================
preset     default data         epochs  batches/ep.  meant for
=========  ===================  ======  ===========  ==========================
laptop     24 sims × 3 s        20      200          ≈27 min on 2 cores from nothing
long       64 sims × 6 s        30      500          hours on a CPU, minutes on a GPU
paper      1408 sims × 6 s      35      10000        the published protocol (GPU)
=========  ===================  ======  ===========  ==========================

All presets: batch 8, windows of 500 ms starting ≥ 500 ms into a simulation, 1/6 (laptop)
or 1/11 (long, paper: 9 : 1 : 1 as the published files) of the simulations for
validation. The test set of laptop and long is the cell's held-out test store
(`surrogate.stores.HELDOUT_TEST`: 12–24 simulations × 6 s from data seed 1000, at least
50 scored spike bins, made once in the cache); paper tests on as many simulations of its
own store as it validates on. laptop trains with lr 2e-3 and keeps the epoch of the best
validation AUC; long and paper with the published lr 5e-4 and soma RMSE. The evaluation
protocol's numbers (window, burn-in, skipped start, spike-count filter) are
`surrogate.evaluate.EvalProtocol`'s defaults.
"""

import argparse
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from elmbridge.errors import UserError
from elmnet.config import ELMConfig
from surrogate.data import StoreInfo, inspect_store
from surrogate.evaluate import EvalProtocol, add_protocol_options
from surrogate.morphology import morphology_branches
from surrogate.point_neurons import PointNeuronConfig, input_groups

_PROTOCOL = EvalProtocol()

# Upper bounds: beyond them a value is a typo that would die allocating memory (one
# simulation of 1278 inputs holds ≈1.3 MB per simulated second; a batch holds
# batch_size · window_ms · 1278 floats) or run for centuries.
LIMITS = {"duration_ms": 3_600_000, "n_sims": 10_000_000, "window_ms": 60_000,
          "batch_size": 65_536, "epochs": 1_000_000, "batches_per_epoch": 100_000_000}  # fmt: skip

MODELS = ("elm", "lif", "adex")
# "none" reads every input on a branch of its own: needs d_tree = inputs, d_brch = 1.
ROUTINGS = ("neuronio", "random", "morphology", "none")
# Validation metric → +1 if larger is better, −1 if smaller is better.
SELECT_BY = {"soma_RMSE": -1, "AUC": +1, "loss": -1, "combined": -1}
TEST_STORES = ("heldout", "split")
# Fields whose default changed: a run recorded before the change used the old value.
PREDATING = {"test_store": "split"}


def combined_score(auc: float, soma_rmse_mv: float) -> float:
    """The "combined" selection score: log(1 − AUC) + log(RMSE / 1 mV), lower is better.

    Both errors enter as logarithms, so the score is scale-free: halving the spike error
    (1 − AUC) is worth exactly as much as halving the soma RMSE, whatever their sizes.
    NaN when either is undefined. Each error is floored at 1e-9, so that a perfect score
    stays finite and comparable (the epoch tracker never prefers a non-finite value).
    """
    if not (math.isfinite(auc) and math.isfinite(soma_rmse_mv)):
        return math.nan
    return math.log(max(1.0 - auc, 1e-9)) + math.log(max(soma_rmse_mv, 1e-9))


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a fit's result (device and speed options excluded).

    Data: `data` is a store path, or None for the default store of `cell` with
    `n_sims` simulations of `duration_ms` made from `data_seed`.
    Model: `model` "elm", a Branch-ELM with `d_m` memory units, `d_tree` branches of
    `d_brch` synapses routed by `routing` (`ROUTINGS`; with "morphology" each branch is a
    dendritic subtree, `surrogate.morphology`, and d_brch is its largest input count), memory
    time constants log-spaced over [1 ms, `tau_max`] and trained when `learn_tau_m`;
    or a point-neuron baseline, "lif" or "adex"
    (`surrogate.point_neurons`; the ELM options then do not apply).
    Training: `epochs` × `batches_per_epoch` batches of `batch_size` windows of
    `window_ms`, starting at least `min_start_ms` into a simulation; Adam with `lr`,
    cosine-annealed to 0 over all batches. Evaluation: the protocol fields.
    `init`: start from the weights of a released model (name or folder), a fit's run
    folder or a model file, instead of a random initialisation.
    `first_sims`: with `data`, fit on the first N completed simulations of the store only
    (None: all), so that fits on growing amounts of data share one store.
    `test_data`: a store of the same cell and inputs whose every simulation is the test
    set; the simulations of `data` then all go to training and validation
    (`test_fraction` is not used), so that fits on different data share one test set.
    `test_store`: where the test set of a fit on a default store comes from when no
    `test_data` is given: "heldout", the cell's held-out test store in the cache
    (`surrogate.stores.HELDOUT_TEST`: simulations from a data seed of their own, at least
    50 scored spike bins), or "split", `test_fraction` of the training store's simulations
    (the published protocol's 9 : 1 : 1). A fit on a given `data` store uses the split.
    `input_dropout`: during training only, each input spike is deleted with this
    probability (synaptic release failure) and the survivors are scaled by 1/(1 − p), so
    the expected synaptic drive is the evaluation's.
    `patience`: stop when the selection metric has not improved for this many epochs
    (None: run every epoch); the cosine schedule still spans `epochs`.
    """

    cell: str = "L5PC"
    preset: str = "laptop"
    model: str = "elm"
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
    learn_tau_m: bool = False
    tau_max: float = 150.0
    dynamics: str = "v1"
    activation: str = "relu"
    # 4000 batches: ≈4 min of training on 2 cores (C++ recurrence loops).
    epochs: int = 20
    batches_per_epoch: int = 200
    batch_size: int = 8
    lr: float = 5e-4
    window_ms: int = _PROTOCOL.window_ms
    min_start_ms: int = 500
    burn_in_ms: int = _PROTOCOL.burn_in_ms
    skip_ms: int = _PROTOCOL.skip_ms
    min_spikes: int = _PROTOCOL.min_spikes
    max_spikes: int = _PROTOCOL.max_spikes
    select_by: str = "soma_RMSE"
    init: str | None = None
    seed: int = 0
    first_sims: int | None = None
    test_data: str | None = None
    test_store: str = "heldout"
    input_dropout: float = 0.0
    patience: int | None = None

    def __post_init__(self):
        # Every number is checked here, before data is made or a run folder written: a
        # refused fit leaves nothing behind, and a typo is never replaced by a default.
        for name in ("n_sims", "duration_ms", "epochs", "batches_per_epoch", "batch_size",
                     "d_m", "d_tree", "d_brch", "window_ms"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        for name in ("data_seed", "seed", "min_start_ms"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for name, limit in LIMITS.items():
            if getattr(self, name) > limit:
                raise UserError(
                    f"{name} {getattr(self, name)} is more than {limit:,}; is it a typo?"
                )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"the learning rate must be positive, got {self.lr}")
        # Validation may be empty (the latest epoch is then the best); the test may not.
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 < self.test_fraction < 1:
            raise UserError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not self.val_fraction + self.test_fraction < 1:
            raise UserError(
                f"val_fraction + test_fraction must leave simulations for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.routing not in ROUTINGS:
            raise UserError(f"routing must be one of {', '.join(ROUTINGS)}, got {self.routing!r}")
        if not (isinstance(self.tau_max, (int, float)) and 1.0 < self.tau_max < math.inf):
            raise UserError(f"tau_max is in ms and must exceed τ_min = 1 ms, got {self.tau_max!r}")
        if not isinstance(self.learn_tau_m, bool):
            raise UserError(f"learn_tau_m must be true or false, got {self.learn_tau_m!r}")
        if self.model not in MODELS:
            raise UserError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.init is not None and self.model != "elm":
            raise UserError("--init warm-starts ELM neurons only; leave it out for point neurons")
        for name in ("first_sims", "patience"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                # first_sims is what --n-sims sets with --data: name the option typed.
                label = "n_sims" if name == "first_sims" else name
                raise UserError(f"{label} must be a positive integer, got {value!r}")
        if self.first_sims is not None and self.data is None:
            raise UserError("first_sims picks simulations of a given store; pass --data with it")
        if not (isinstance(self.input_dropout, (int, float)) and 0 <= self.input_dropout < 1):
            raise UserError(f"input_dropout must be in [0, 1), got {self.input_dropout!r}")
        if self.test_store not in TEST_STORES:
            raise UserError(
                f"test_store must be one of {', '.join(TEST_STORES)}, got {self.test_store!r}"
            )
        if self.select_by not in SELECT_BY:
            raise UserError(f"select_by must be one of {sorted(SELECT_BY)}, got {self.select_by}")
        self.protocol()  # checks the protocol's numbers

    def protocol(self) -> EvalProtocol:
        return EvalProtocol(
            window_ms=self.window_ms,
            burn_in_ms=self.burn_in_ms,
            skip_ms=self.skip_ms,
            min_spikes=self.min_spikes,
            max_spikes=self.max_spikes,
        )

    def model_config(self, info: StoreInfo):
        """The configuration of the model this fit trains, for the store `info`."""
        if self.model == "elm":
            return self.elm_config(info.n_inputs, info)
        trees = info.input_tree or None
        groups, names = input_groups(info.input_kind, trees, info.input_distance_um or None)
        return PointNeuronConfig(self.model, info.n_inputs, groups, names)

    def model_label(self) -> str:
        return f"Branch-ELM d_m {self.d_m}" if self.model == "elm" else self.model.upper()

    def elm_config(self, n_inputs: int, info: StoreInfo | None = None) -> ELMConfig:
        """The ELM neuron this fit trains, for a store with `n_inputs` inputs.

        The morphology routing needs the store (`info`): its branches are the subtrees of
        the store's segment table, passed to `elmnet` as an explicit routing.
        """
        routing, d_brch, branches = self.routing, self.d_brch, None
        if routing == "morphology":
            if info is None:
                raise UserError("the morphology routing is built from a store; none was given")
            branches = morphology_branches(
                info.segments, info.input_kind, info.input_segment, self.d_tree
            )
            routing, d_brch = "explicit", max(len(b) for b in branches)
        return ELMConfig(
            d_in=n_inputs, d_out=2, d_m=self.d_m, d_tree=self.d_tree, d_brch=d_brch,
            routing=routing, branch_inputs=branches, dynamics=self.dynamics,
            activation=self.activation, routing_seed=self.seed, tau_max=self.tau_max,
            learn_tau_m=self.learn_tau_m,
        )  # fmt: skip


PRESETS: dict[str, dict[str, Any]] = {
    # lr 2e-3 with the epoch of the best validation AUC: on 48 s of training data it scored
    # held-out AUC 0.962 [0.941, 0.978] against 0.945 [0.919, 0.970] for the published lr
    # 5e-4 and selection by soma RMSE, at equal soma RMSE (docs/results/surrogate_recipe/).
    "laptop": dict(lr=2e-3, select_by="AUC"),
    "long": dict(
        n_sims=64, duration_ms=6000, epochs=30, batches_per_epoch=500,
        val_fraction=1 / 11, test_fraction=1 / 11,
    ),
    "paper": dict(
        n_sims=1408, duration_ms=6000, epochs=35, batches_per_epoch=10000,
        val_fraction=1 / 11, test_fraction=1 / 11, test_store="split",
    ),
}  # fmt: skip


def recorded_config(recorded: dict[str, Any]) -> dict[str, Any]:
    """A run record's configuration with the fields it predates at their defaults.

    Runs recorded before a field existed used its default (the old one where `PREDATING`
    names it), so resuming them compares equal.
    """
    defaults = {f.name: f.default for f in fields(FitConfig)} | PREDATING
    return {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}


def preset_config(preset: str = "laptop", **overrides: Any) -> FitConfig:
    """The configuration of a preset with some values replaced (None values are ignored)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FitConfig(**values)


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
    add("--model", choices=MODELS, help="elm (default), or a point-neuron baseline: lif, adex")
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
    add(
        "--n-sims",
        type=int,
        help="simulations of the generated default store; with --data: use only the store's "
        "first N simulations",
    )
    add(
        "--test-data",
        metavar="STORE",
        help="score the test on every simulation of this store (same cell and inputs); all "
        "simulations of the training store then go to training and validation",
    )
    add(
        "--test-store",
        choices=list(TEST_STORES),
        help="without --data/--test-data: heldout, the cell's held-out test store in the cache "
        "(≥ 50 scored spike bins; default of laptop and long), or split: --test-fraction of the "
        "training store (paper)",
    )
    add("--duration-ms", type=int, help="duration of each generated simulation, ms")
    add("--data-seed", type=int, help="base seed of the generated store")
    add("--epochs", type=int, help="training epochs (see below)")
    add("--batches-per-epoch", type=int, help="batches per epoch (see below)")
    add("--batch-size", type=int, help="windows per batch (default 8)")
    add(
        "--lr",
        type=float,
        help="Adam learning rate, cosine-annealed to 0 (default: laptop 2e-3, long and paper 5e-4)",
    )
    add("--d-tree", type=int, help="branches (default 45)")
    add("--d-brch", type=int, help="synapses per branch (default 100)")
    add(
        "--routing",
        choices=list(ROUTINGS),
        help="synapse routing (default neuronio); morphology: one branch per dendritic "
        "subtree (surrogate/morphology.py, --d-brch is then set by the largest subtree); "
        "none: no branches (needs --d-tree = inputs, --d-brch 1)",
    )
    add("--tau-max", type=float, help="largest memory time constant τ_max, ms (default 150)")
    add(
        "--learn-tau-m",
        action="store_const",
        const=True,
        help="train the memory time constants (kept within [1 ms, τ_max])",
    )
    add("--activation", choices=["relu", "silu"])
    add("--dynamics", choices=["v1", "v2"])
    add("--val-fraction", type=float, help="share of simulations for validation (see below)")
    add("--test-fraction", type=float, help="share of simulations for the test (see below)")
    add(
        "--select-by",
        choices=list(SELECT_BY),
        help="validation metric picking the best epoch (default: laptop AUC, the spike output "
        "being what short fits miss; long and paper soma_RMSE, as published); "
        "combined: the lowest log(1 − AUC) + log(RMSE / 1 mV)",
    )
    add(
        "--patience",
        type=int,
        metavar="E",
        help="stop when the selection metric has not improved for E epochs (default: off)",
    )
    add(
        "--input-dropout",
        type=float,
        metavar="P",
        help="training only: drop each input spike with probability P (release failure), "
        "scaling the rest by 1/(1 − P); default 0",
    )
    add("--seed", type=int, help="seed of initialisation, splits and windows (default 0)")
    add(
        "--init",
        help="warm start from a released model (e.g. num_memory_20), a run folder or a model "
        "file of the same architecture; never the default (for L5PC it copies the published fit)",
    )
    add("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    add("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    add("--workers", type=int, help="DataLoader workers (default 0 on CPU, 4 on CUDA)")
    add_protocol_options(parser, defaults=False)  # fmt: skip


OPTION_FIELDS = {f.name for f in fields(FitConfig)} - {"preset"}


def config_from_args(args: argparse.Namespace) -> FitConfig:
    """The fit configuration of parsed command-line options."""
    overrides = {k: v for k, v in vars(args).items() if k in OPTION_FIELDS}
    if overrides.get("test_data") is not None:
        overrides["test_data"] = str(Path(overrides["test_data"]).resolve())
    if overrides.get("data") is not None:
        # With a given store, --n-sims selects its first simulations (it makes none).
        overrides["first_sims"] = overrides.pop("n_sims", None)
        overrides["data"] = str(Path(overrides["data"]).resolve())
        if args.cell is None:
            info = inspect_store(overrides["data"])
            overrides["cell"] = info.cell or Path(overrides["data"]).stem
    return preset_config(args.preset, **overrides)
