"""Point-neuron baselines fitted to the same input–output data as the ELM surrogates.

Two models, each driven by the cell's 1278 synapses through a few conductance groups
(`input_groups`: basal, apical trunk and obliques, tuft; × excitatory, inhibitory):

LIF (conductance-based leaky integrate-and-fire)::

    τ_m dv/dt = (E_L − v) + Σ_k g_k (E_k − v)
    dg_k/dt = −g_k / τ_k,   g_k += w_i at each spike of a synapse i of group k
    v ≥ V_T  →  spike, v ← V_reset

AdEx (adaptive exponential integrate-and-fire, Brette & Gerstner 2005)::

    τ_m dv/dt = (E_L − v) + Δ_T exp((v − V_T)/Δ_T) + Σ_k g_k (E_k − v) − w
    τ_w dw/dt = a (v − E_L) − w
    v ≥ V_peak (0 mV)  →  spike, v ← V_reset, w ← w + b

Conductances are in units of the leak conductance (g_k = 1 doubles the membrane's
conductance), so w_i and a are dimensionless; voltages are in mV, times in ms; E_exc =
0 mV, E_inh = −80 mV. Learned: every synaptic weight w_i, every group's τ_k, E_L, τ_m,
V_T, V_reset, the slope δ of the spike score and, for AdEx, Δ_T, a, b and τ_w.

Outputs follow the ELM surrogates (`elmnet.neuronio`): channel 0 is a spike score, the
graded (v_free − V_T)/δ of the highest membrane potential v_free each millisecond
reaches before any reset (for AdEx V_T is the exponential's threshold), and channel 1 the
scaled soma voltage. So `surrogate.fit --model lif|adex` trains them with the same loss
and `surrogate.evaluate` scores them with the same protocol. The PyTorch forward pass is
a differentiable twin of the Brian2 equations in `brian2_equations`: within each 1 ms
input bin it takes `substeps` steps, exact for the LIF (exponential Euler at constant
conductance) and forward Euler for AdEx.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from elmbridge.errors import UserError
from elmnet.neuronio import SOMA_OFFSET_MV, SOMA_SCALE

KINDS = ("lif", "adex")
E_EXC_MV, E_INH_MV = 0.0, -80.0
V_PEAK_MV = 0.0
# Apical synapses at least this far from the soma (path distance) count as tuft.
TUFT_FROM_UM = 600.0


def input_groups(kinds, trees=None, distances_um=None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Group index of each input and the groups' names.

    Groups: basal / apical (trunk and obliques, < `TUFT_FROM_UM`) / tuft, each for
    excitatory and inhibitory inputs; without segment trees, excitatory / inhibitory.
    """
    kinds = [str(k) for k in kinds]
    if trees is None:
        regions = ["all"] * len(kinds)
    else:
        regions = [
            "basal" if t == "basal" else ("tuft" if d >= TUFT_FROM_UM else "apical")
            for t, d in zip(trees, distances_um, strict=True)
        ]
    labels = [f"{r}-{k}" for r, k in zip(regions, kinds, strict=True)]
    names = tuple(dict.fromkeys(sorted(labels, key=lambda s: (s.endswith("inh"), s))))
    return tuple(names.index(label) for label in labels), names


@dataclass(frozen=True)
class PointNeuronConfig:
    """Configuration of a point-neuron baseline.

    Attributes:
        kind: "lif" or "adex".
        d_in: input channels (synapses).
        groups: the conductance group of each input.
        group_names: one name per group ("basal-exc", …; "-inh" groups are inhibitory).
        substeps: integration steps per 1 ms input bin.
        dt: the input bin, ms.
    """

    kind: str
    d_in: int
    groups: tuple[int, ...]
    group_names: tuple[str, ...]
    substeps: int = 4
    dt: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "group_names", tuple(self.group_names))
        if self.kind not in KINDS:
            raise UserError(f"unknown point neuron {self.kind!r}; choose one of {KINDS}")
        if len(self.groups) != self.d_in:
            raise UserError(f"{len(self.groups)} group labels for {self.d_in} inputs")
        if self.groups and not 0 <= min(self.groups) <= max(self.groups) < len(self.group_names):
            raise UserError("group labels must index group_names")
        if self.substeps < 1 or not self.dt > 0:
            raise UserError("substeps must be ≥ 1 and dt > 0")

    @property
    def routing(self) -> str:
        """Inputs are read as they are (no routing), like an ELM neuron without branches."""
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PointNeuronConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown point-neuron configuration fields {unknown}")
        return cls(**values)


def _log(value: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(value)))


class PointNeuron(nn.Module):
    """LIF or AdEx point neuron. `forward(x, state=None) -> (y, state)`, x (B, T, d_in).

    x holds signed spike counts (+1 excitatory, −1 inhibitory, as for the ELM
    surrogates); the sign only tells the kind, which the groups already know. y is
    (B, T, 2): the spike score (v_free − V_T)/δ and the scaled soma voltage.
    The state is (g (B, G), v (B,), w (B,)).
    """

    def __init__(self, config: PointNeuronConfig):
        super().__init__()
        self.config = c = config
        n_groups = len(c.group_names)
        inhibitory = torch.tensor([name.endswith("inh") for name in c.group_names])
        self.register_buffer("reversal", torch.where(inhibitory, E_INH_MV, E_EXC_MV).float())
        one_hot = torch.nn.functional.one_hot(torch.tensor(c.groups, dtype=torch.long), n_groups)
        self.register_buffer("membership", one_hot.float(), persistent=False)
        # A weight of 0.02 leak conductances per synapse: ≈1 mV EPSPs from rest.
        self.log_w = nn.Parameter(torch.full((c.d_in,), math.log(0.02)))
        self.log_tau_g = nn.Parameter(torch.where(inhibitory, math.log(8.0), math.log(5.0)))
        self.e_l = nn.Parameter(torch.tensor(-75.0))
        self.log_tau_m = _log(20.0)
        self.v_t = nn.Parameter(torch.tensor(-55.0))
        self.v_reset = nn.Parameter(torch.tensor(-65.0))
        self.log_delta = _log(1.0)  # mV per unit of spike score
        if c.kind == "adex":
            self.log_delta_t = _log(2.0)
            self.a = nn.Parameter(torch.tensor(0.05))
            self.b = nn.Parameter(torch.tensor(0.5))
            self.log_tau_w = _log(100.0)

    def parameters_mv_ms(self) -> dict[str, Any]:
        """The fitted parameters in their units (mV, ms, leak conductances)."""
        out = {
            "E_L_mV": float(self.e_l), "tau_m_ms": float(self.log_tau_m.exp()),
            "V_T_mV": float(self.v_t), "V_reset_mV": float(self.v_reset),
            "score_slope_mV": float(self.log_delta.exp()),
            "tau_groups_ms": dict(zip(self.config.group_names,
                                      self.log_tau_g.exp().tolist(), strict=True)),
            "w_mean_by_group": dict(zip(self.config.group_names, (
                (self.log_w.exp() @ self.membership) / self.membership.sum(0)).tolist(),
                strict=True)),
        }  # fmt: skip
        if self.config.kind == "adex":
            out.update(Delta_T_mV=float(self.log_delta_t.exp()), a=float(self.a),
                       b_mV=float(self.b), tau_w_ms=float(self.log_tau_w.exp()))  # fmt: skip
        return out

    def initial_state(self, batch: int, like: torch.Tensor):
        g = like.new_zeros(batch, len(self.config.group_names))
        v = self.e_l.detach().to(like.dtype).expand(batch).clone()
        return g, v, like.new_zeros(batch)

    def conductance_kicks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, G) Σ_{i in k} w_i · spikes_i per bin, for all bins at once."""
        return x.abs() @ (self.log_w.exp().unsqueeze(1) * self.membership).to(x.dtype)

    def forward(self, x: torch.Tensor, state=None):
        c = self.config
        if x.dim() != 3 or x.shape[-1] != c.d_in:
            raise UserError(
                f"point neuron expects input of shape (batch, time, {c.d_in}), got {tuple(x.shape)}"
            )
        batch, n_steps = x.shape[:2]
        g, v, w = self.initial_state(batch, x) if state is None else state
        kicks = self.conductance_kicks(x)
        h = c.dt / c.substeps
        decay = torch.exp(-h / self.log_tau_g.exp()).to(x.dtype)
        tau_m, e_l = self.log_tau_m.exp(), self.e_l
        scores, somas = [], []
        for t in range(n_steps):
            g = g + kicks[:, t]
            v_free = v.new_full((batch,), -math.inf)
            for _ in range(c.substeps):
                v, w, v_peak, _ = self._substep(g, v, w, h, tau_m, e_l)
                v_free = torch.maximum(v_free, v_peak)
                g = g * decay
            scores.append((v_free - self.v_t) / self.log_delta.exp())
            somas.append((v_free.clamp(max=V_PEAK_MV) - SOMA_OFFSET_MV) * SOMA_SCALE)
        y = torch.stack([torch.stack(scores, 1), torch.stack(somas, 1)], dim=-1)
        return y, (g, v, w)

    def _substep(self, g, v, w, h, tau_m, e_l):
        """One integration step of length h (ms). Returns v, w after it, the voltage
        reached before any reset, and whether the neuron fired."""
        g_total = g.sum(-1)
        if self.config.kind == "lif":
            # Exact for constant conductance: relax towards v_inf with τ_m / (1 + Σg).
            v_inf = (e_l + (g * self.reversal).sum(-1)) / (1 + g_total)
            v_next = v_inf + (v - v_inf) * torch.exp(-h * (1 + g_total) / tau_m)
            fired = v_next >= self.v_t
            return torch.where(fired, self.v_reset, v_next), w, v_next, fired
        delta_t = self.log_delta_t.exp()
        exponential = delta_t * torch.exp(((v - self.v_t) / delta_t).clamp(max=10.0))
        dv = ((e_l - v) + exponential + (g * (self.reversal - v.unsqueeze(-1))).sum(-1) - w) / tau_m
        v_next = (v + h * dv).clamp(max=V_PEAK_MV + 1.0)
        w_next = w + h * (self.a * (v - e_l) - w) / self.log_tau_w.exp()
        fired = v_next >= V_PEAK_MV
        v_out = torch.where(fired, self.v_reset, v_next)
        return v_out, torch.where(fired, w_next + self.b, w_next), v_next, fired


def brian2_equations(kind: str, n_groups: int) -> str:
    """The model's equations in Brian2's syntax (with units), one conductance per group."""
    if kind not in KINDS:
        raise UserError(f"unknown point neuron {kind!r}; choose one of {KINDS}")
    gs = [f"g_{k}" for k in range(n_groups)]
    synaptic = " + ".join(f"{g} * (E_{k} - v)" for k, g in enumerate(gs))
    lines = []
    if kind == "lif":
        lines.append(f"dv/dt = ((E_L - v) + {synaptic}) / tau_m : volt")
    else:
        lines.append(
            f"dv/dt = ((E_L - v) + Delta_T * exp((v - V_T) / Delta_T) + {synaptic} - w) / tau_m"
            " : volt"
        )
        lines.append("dw/dt = (a * (v - E_L) - w) / tau_w : volt")
    lines += [f"d{g}/dt = -{g} / tau_{k} : 1" for k, g in enumerate(gs)]
    return "\n".join(lines)


def brian2_namespace(model: PointNeuron) -> dict[str, Any]:
    """The fitted parameters as a Brian2 namespace (with units) for `brian2_equations`."""
    import brian2 as b2

    p = model.parameters_mv_ms()
    ns = {"E_L": p["E_L_mV"] * b2.mV, "tau_m": p["tau_m_ms"] * b2.ms, "V_T": p["V_T_mV"] * b2.mV,
          "V_reset": p["V_reset_mV"] * b2.mV}  # fmt: skip
    for k, tau in enumerate(p["tau_groups_ms"].values()):
        ns[f"tau_{k}"] = tau * b2.ms
        ns[f"E_{k}"] = float(model.reversal[k]) * b2.mV
    if model.config.kind == "adex":
        ns.update(Delta_T=p["Delta_T_mV"] * b2.mV, a=p["a"], b=p["b_mV"] * b2.mV,
                  tau_w=p["tau_w_ms"] * b2.ms, V_peak=V_PEAK_MV * b2.mV)  # fmt: skip
    return ns
