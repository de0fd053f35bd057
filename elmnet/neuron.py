"""The Expressive Leaky Memory (ELM) neuron (Spieler et al., ICLR 2024).

Equations (docs/elm-model.md §1), with x̃ the routed input and Δt the step:

- synapse/branch trace, leaky with τ_s:  b_t = κ_s ⊙ b_{t−1} + Σ_branch (w_s ⊙ x̃_t),
  w_s = relu(θ_s). Version 1 keeps one trace per synapse and sums them per branch;
  with one τ_s for all synapses that sum obeys exactly the branch recursion above, so
  both versions share it (the float64 reference, `elmnet.reference`, runs the per-synapse form).
- memory proposal:  Δm_t = 1.7159 tanh(2/3 · MLP([b_t ; κ_m ⊙ m_{t−1}]))
- memory update:  v1  m_t = κ_m ⊙ m_{t−1} + λ (1 − κ_m) ⊙ Δm_t
                  v2  m_t = κ_m ⊙ m_{t−1} + (1 − κ_λ) ⊙ Δm_t,  κ_λ = exp(−Δt λ / τ_m)
- readout:  y_t = W_y m_t + b_y

Performance design: everything linear in the input (routing, synaptic weights, the
trace, the MLP's branch half of its first layer, the readout) is computed for the whole
sequence at once; only the nonlinear memory recurrence steps through time. On the CPU
the synapse product sums over the input's nonzeros only and the trace is one sequential
C++ pass (`elmnet.ops.spike_matmul`, `elmnet.ops.exp_trace`).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from elmbridge.errors import UserError
from elmnet.config import ELMConfig
from elmnet.ops import (
    TANH_GAIN,
    TANH_SLOPE,
    decay,
    exp_trace,
    initial_theta_m,
    make_activation,
    memory_update_coefficients,
    spike_matmul,
    theta_to_tau,
)
from elmnet.recurrence import memory_recurrence
from elmnet.routing import make_routing


class ELMState(NamedTuple):
    """Recurrent state carried between calls: the branch trace and the memory."""

    branch: torch.Tensor  # (B, d_tree)
    memory: torch.Tensor  # (B, d_m)


class ELMNeuron(nn.Module):
    """One ELM neuron. `forward(x, state=None) -> (y, state)` with x of shape (B, T, d_in).

    The output y has shape (B, T, d_out). For NeuronIO, y[..., 0] is the spike logit and
    y[..., 1] the scaled somatic voltage (see `surrogate`).
    """

    def __init__(self, config: ELMConfig):
        super().__init__()
        self.config = c = config
        index, valid = make_routing(
            c.routing, c.d_in, c.d_tree, c.d_brch, c.routing_seed, c.branch_inputs
        )
        self.register_buffer("syn_index", index)
        self.register_buffer("syn_valid", valid)
        # The branch each slot belongs to, for scattering weights into a synapse matrix.
        self.register_buffer(
            "syn_branch", torch.arange(c.d_tree).repeat_interleave(c.d_brch), persistent=False
        )
        self.theta_s = nn.Parameter(torch.full((c.n_synapses,), float(c.w_s_init)))
        theta_m = initial_theta_m(c.d_m, c.tau_min, c.tau_max)
        if c.learn_tau_m:
            self.theta_m = nn.Parameter(theta_m)
        else:
            self.register_buffer("theta_m", theta_m)
        layers: list[nn.Module] = [nn.Linear(c.d_tree + c.d_m, c.d_mlp)]
        for _ in range(c.n_mlp_layers - 1):
            layers += [make_activation(c.activation), nn.Linear(c.d_mlp, c.d_mlp)]
        layers += [make_activation(c.activation), nn.Linear(c.d_mlp, c.d_m)]
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(c.d_m, c.d_out)

    @property
    def w_s(self) -> torch.Tensor:
        """(d_s,) synaptic weights, zero on invalid slots."""
        return torch.relu(self.theta_s) * self.syn_valid

    @property
    def tau_m(self) -> torch.Tensor:
        """(d_m,) memory time constants, in units of Δt's unit."""
        return theta_to_tau(self.theta_m, self.config.tau_min, self.config.tau_max)

    def synapse_matrix(self) -> torch.Tensor:
        """(d_in, d_tree) weight from each input channel to each branch.

        Summing routed, weighted inputs per branch is a linear map; as a dense matrix it
        runs as one matmul over the whole sequence instead of a gather of d_s slots.
        """
        c = self.config
        flat = self.syn_index * c.d_tree + self.syn_branch
        w = self.w_s
        return w.new_zeros(c.d_in * c.d_tree).index_add(0, flat, w).view(c.d_in, c.d_tree)

    def branch_drive(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_tree) Σ_branch w_s ⊙ x̃_t for every step, computed at once.

        Spike input (NeuronIO: ≈1 % of the entries nonzero) takes the product over its
        nonzeros only (`elmnet.ops.spike_matmul`, exact; dense input the dense product).
        """
        if self.config.routing == "none":
            return x * self.w_s
        matrix = self.synapse_matrix()
        return spike_matmul(x, matrix.to(x.dtype) if x.is_floating_point() else matrix)

    def initial_state(self, batch: int, like: torch.Tensor) -> ELMState:
        """Zero state on `like`'s device and dtype."""
        c = self.config
        return ELMState(
            like.new_zeros(batch, c.d_tree),
            like.new_zeros(batch, c.d_m),
        )

    def memory_coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """κ_m and the gain on Δm of the memory update (v1: λ(1 − κ_m), v2: 1 − κ_λ)."""
        c = self.config
        return memory_update_coefficients(self.tau_m, c.dt, c.lam, c.dynamics)

    def memory_recurrence(self, branch: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Step the nonlinear memory through time.

        Args:
            branch: (B, T, d_tree) branch trace b_t.
            memory: (B, d_m) memory before the first step.

        Returns:
            (B, T, d_m) memory after every step.
        """
        c = self.config
        kappa_m, gain = self.memory_coefficients()
        linears = [layer for layer in self.mlp if isinstance(layer, nn.Linear)]
        first, hidden, last = linears[0], linears[1:-1], linears[-1]
        w_branch, w_memory = first.weight.split([c.d_tree, c.d_m], dim=1)
        # The branch half of the first layer is linear in b: do it for all steps at once.
        pre = F.linear(branch, w_branch, first.bias)
        # Fold per-step constants into weights once, to keep the time loop short:
        # (κ_m ⊙ m) Wᵀ = m (W diag κ_m)ᵀ, and the scaled tanh's two constants.
        return memory_recurrence(
            c.activation,
            pre,
            memory,
            u=(w_memory * kappa_m).t(),
            kappa=kappa_m,
            gain=TANH_GAIN * gain,
            w_out=(TANH_SLOPE * last.weight).t(),
            b_out=TANH_SLOPE * last.bias,
            hidden=[(layer.weight.t(), layer.bias) for layer in hidden],
        )

    def forward(
        self, x: torch.Tensor, state: ELMState | None = None
    ) -> tuple[torch.Tensor, ELMState]:
        """Run the neuron over a sequence.

        Args:
            x: (B, T, d_in) input; for NeuronIO +1 per excitatory and −1 per inhibitory
                spike in each Δt bin. Float, or int8/bool spike counts, computed in the
                parameters' dtype (on the CPU the spike product then reads 1 byte per
                entry instead of 4).
            state: state after a previous chunk of the same sequences, or None (zeros).

        Returns:
            y: (B, T, d_out) outputs; state: the state after the last step.
        """
        c = self.config
        if x.dim() != 3 or x.shape[-1] != c.d_in:
            raise UserError(
                f"ELM neuron expects input of shape (batch, time, {c.d_in}), got {tuple(x.shape)}"
            )
        like = x if x.is_floating_point() else self.theta_s
        if state is None:
            state = self.initial_state(x.shape[0], like)
        if x.shape[1] == 0:
            return like.new_zeros(x.shape[0], 0, c.d_out), state
        drive = self.branch_drive(x)
        branch = exp_trace(drive, decay(c.tau_s, c.dt), state.branch)
        memory = self.memory_recurrence(branch, state.memory)
        y = self.head(memory)
        return y, ELMState(branch[:, -1], memory[:, -1])
