"""The configurations of the ELM neuron and the ELM Network, in one place.

Both are frozen dataclasses that check their values on creation (a `UserError` names
the bad field) and round-trip through plain dicts (`to_dict` / `from_dict`), which is
how run folders and model files store them. The task presets they start from live with
their tasks (`elmnet.tasks`); the parameter formulas in `elmnet.params`.
Times (τ, Δt) are in steps of the input's time unit: ms for NeuronIO, bins for SHD,
characters for Enwik8.
"""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from elmbridge.errors import UserError, check_config
from elmnet.ops import make_activation
from elmnet.params import hidden_neuron_parameters, neurons_for_budget, readout_layer_parameters
from elmnet.routing import ROUTINGS, make_routing, normalize_branch_inputs


class _DictConfig:
    """`to_dict` / `from_dict` for a configuration dataclass; unknown fields are refused."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        if not isinstance(values, dict):
            raise UserError(f"a {cls.__name__} is a mapping of fields, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as err:  # a required field is missing
            raise UserError(f"invalid {cls.__name__}: {err}") from err


DYNAMICS = ("v1", "v2")


@dataclass(frozen=True)
class ELMConfig(_DictConfig):
    """Configuration of one ELM neuron. Times (τ, Δt) share one unit: ms for NeuronIO.

    Attributes:
        d_in: input channels.
        d_out: outputs of the linear readout (2 for NeuronIO: spike logit, soma).
        d_m: memory units.
        d_mlp: MLP hidden width (default 2 · d_m).
        n_mlp_layers: hidden layers of the MLP.
        d_tree: branches (default d_in, with routing "none").
        d_brch: synapses per branch.
        routing: "neuronio", "random", "none" (identity, no branches) or "explicit".
        routing_seed: seed of the random routing.
        branch_inputs: the "explicit" routing's assignment: for each of the d_tree
            branches the input channels it reads (d_brch ≥ the longest list; shorter
            branches get invalid slots). None for the other routings.
        dynamics: "v1" or "v2".
        activation: MLP activation: "relu", "silu", "relu2" (or "identity").
        tau_min, tau_max: range of the log-spaced memory time constants.
        learn_tau_m: train the memory time constants.
        tau_s: synapse (v1) / branch (v2) trace time constant.
        lam: λ, the memory update scale.
        w_s_init: initial synaptic weight (before the relu).
        dt: Δt, the time step.
    """

    d_in: int
    d_out: int = 2
    d_m: int = 20
    d_mlp: int | None = None
    n_mlp_layers: int = 1
    d_tree: int | None = None
    d_brch: int = 1
    routing: str = "none"
    routing_seed: int = 0
    branch_inputs: tuple[tuple[int, ...], ...] | None = None
    dynamics: str = "v1"
    activation: str = "relu"
    tau_min: float = 1.0
    tau_max: float = 150.0
    learn_tau_m: bool = False
    tau_s: float = 5.0
    lam: float = 5.0
    w_s_init: float = 0.5
    dt: float = 1.0

    def __post_init__(self):
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 2 * self.d_m)
        if self.branch_inputs is not None:
            # JSON gives lists; tuples keep the frozen config hashable and comparable.
            object.__setattr__(self, "branch_inputs", normalize_branch_inputs(self.branch_inputs))
        if self.d_tree is None:
            n_branches = len(self.branch_inputs) if self.branch_inputs is not None else None
            object.__setattr__(self, "d_tree", n_branches or self.d_in)
        check_config(
            self,
            positive_ints=("d_in", "d_out", "d_m", "d_mlp", "n_mlp_layers", "d_tree", "d_brch"),
            positive=("tau_min", "tau_s", "lam", "dt"),
            increasing=(("tau_min", "tau_max"),),
        )
        if self.routing not in ROUTINGS:
            raise UserError(f"unknown routing {self.routing!r}; choose one of {ROUTINGS}")
        if self.dynamics not in DYNAMICS:
            raise UserError(f"unknown dynamics {self.dynamics!r}; choose one of {DYNAMICS}")
        make_activation(self.activation)
        # Raises a clear error when d_in does not fit the routing.
        make_routing(
            self.routing, self.d_in, self.d_tree, self.d_brch, self.routing_seed,
            self.branch_inputs,
        )  # fmt: skip

    @property
    def n_synapses(self) -> int:
        """d_s = d_tree · d_brch synapse slots."""
        return self.d_tree * self.d_brch

    @classmethod
    def branch_elm_neuronio(cls, d_m: int = 20, **overrides: Any) -> "ELMConfig":
        """The Branch-ELM of the NeuronIO experiments: 1278 inputs, 45 branches of 100."""
        base = dict(d_in=1278, d_out=2, d_m=d_m, d_tree=45, d_brch=100, routing="neuronio")
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class ELMNetworkConfig(_DictConfig):
    """Configuration of an ELM Network. Times (τ, Δt) are in steps of the input
    (2 ms bins for SHD-Adding at the default binning, characters for Enwik8).

    Attributes:
        d_in: input channels (700 for SHD; the vocabulary size V for text).
        n_out: classes or tokens: readout neurons and logits.
        N: hidden neurons.
        d_m: memory units per hidden neuron.
        d_mlp: MLP width of a hidden neuron (default 2·d_m).
        d_tree, d_brch: branches per neuron and synapses per branch; k_c = d_tree·d_brch.
        rho: probability that a synapse reads the previous step's hidden outputs.
        input_scale: factor on every branch input (10).
        tau_min, tau_max: range of the log-spaced memory time constants.
        tau_r: time constant of the output high-pass filter.
        lam: λ of the memory update.
        dynamics: the hidden neurons' memory update, "v2" (the network's) or "v1" (that
            of the released NeuronIO neurons; docs/elm-model.md §1). Readout neurons
            always use v2.
        tau_b: time constant of a leaky trace on the hidden neurons' feed-forward branch
            input (None: no trace, the network's form). A fitted NeuronIO neuron brings
            its synapse trace (τ_s = 5) along; recurrent synapses stay untraced.
        activation: hidden MLP activation ("relu2" = ReLU²).
        readout_d_m: memory units of a readout neuron.
        dropout_in, dropout_rec: input and recurrent dropout probabilities.
        token_scale: one-hot value of integer (token) inputs.
        seed: seed of the connectivity and the initial weights.
        dt: Δt, the time step.
    """

    d_in: int
    n_out: int
    N: int
    d_m: int
    d_mlp: int | None = None
    d_tree: int = 30
    d_brch: int = 10
    rho: float = 0.25
    input_scale: float = 10.0
    tau_min: float = 1.0
    tau_max: float = 500.0
    tau_r: float = 5.0
    lam: float = 5.0
    dynamics: str = "v2"
    tau_b: float | None = None
    activation: str = "relu2"
    readout_d_m: int = 3
    dropout_in: float = 0.0
    dropout_rec: float = 0.0
    token_scale: float = 1.0
    seed: int = 0
    dt: float = 1.0

    def __post_init__(self):
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 2 * self.d_m)
        check_config(
            self,
            positive_ints=("d_in", "n_out", "N", "d_m", "d_mlp", "d_tree", "d_brch", "readout_d_m"),
            positive=("input_scale", "tau_min", "tau_r", "lam", "token_scale", "dt"),
            increasing=(("tau_min", "tau_max"),),
        )
        if not 0.0 <= self.rho <= 1.0:
            raise UserError(f"rho is a probability, got {self.rho!r}")
        if self.dynamics not in DYNAMICS:
            raise UserError(f"unknown dynamics {self.dynamics!r}; choose one of {DYNAMICS}")
        if self.tau_b is not None and not self.tau_b > 0:
            raise UserError(f"tau_b must be positive (or None: no trace), got {self.tau_b!r}")
        for name in ("dropout_in", "dropout_rec"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        make_activation(self.activation)

    @property
    def k_c(self) -> int:
        """Synapses per neuron."""
        return self.d_tree * self.d_brch

    @property
    def k_e(self) -> int:
        """Parameters per hidden neuron besides its synapses."""
        return hidden_neuron_parameters(self.d_m, self.d_mlp, self.d_tree, self.d_brch).k_e

    @classmethod
    def for_task(cls, task: str, **overrides: Any) -> "ELMNetworkConfig":
        """The document's setup for `task` ("shd-adding" or "enwik8") with overrides.

        `k_c=` is accepted in place of d_brch: the task's d_tree is kept (so that k_e does
        not change with k_c) and d_brch = k_c / d_tree.
        """
        from elmnet.tasks import task_module  # the tasks hold the presets; they need no model

        preset = task_module(task).NETWORK
        values = {**preset, **{k: v for k, v in overrides.items() if k != "k_c"}}
        k_c = overrides.get("k_c")
        if k_c is not None:
            d_tree = values["d_tree"]
            if not isinstance(k_c, int) or k_c <= 0 or k_c % d_tree:
                raise UserError(
                    f"k_c={k_c!r} must be a positive multiple of the {d_tree} branches per "
                    f"neuron (d_tree), so that every branch has the same number of synapses; "
                    f"e.g. {d_tree * max(1, round((k_c or 0) / d_tree))}, or set d_tree too."
                )
            values["d_brch"] = k_c // d_tree
        return cls.from_dict(values)

    @classmethod
    def from_budget(
        cls, budget: int, *, d_m: int, task: str, k_c: int | None = None, **overrides: Any
    ) -> "ELMNetworkConfig":
        """The configuration with N = floor((budget − readout) / (k_e + k_c)).

        (docs/elm-model.md §4.)

        The readout layer's parameters do not depend on N, so the budget left for the
        hidden layer is the same for every d_m and k_c of a sweep.
        """
        probe = cls.for_task(task, **{**overrides, "d_m": d_m, "k_c": k_c, "N": 1})
        readout = readout_layer_parameters(
            probe.n_out, probe.readout_d_m, probe.d_tree, probe.d_brch
        )
        n = neurons_for_budget(budget, probe.k_e, probe.k_c, readout)
        if n < 1:
            raise UserError(
                f"a budget of {budget} parameters leaves {budget - readout} for the hidden "
                f"layer after the readout ({readout}), less than one neuron "
                f"(k_e + k_c = {probe.k_e + probe.k_c}); raise the budget or lower d_m / k_c."
            )
        return replace(probe, N=n)
