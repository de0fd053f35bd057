"""The ELM Network (Spieler, Martius, Levina 2026; docs/elm-model.md §4).

Two layers of ELM neurons (v2 memory, docs/elm-model.md §1) and a linear layer:

- A recurrent hidden layer of N neurons. Neuron n has k_c = d_tree·d_brch synapse slots;
  each slot reads one source fixed at init, drawn with replacement: with probability ρ
  one of the N hidden outputs of the previous step, otherwise one of the d_in inputs of
  the current step. Branch input b = 10 Σ_branch (w_s ⊙ source), w_s signed,
  init U(−1, 1)/√d_brch; MLP [b ; κ_m ⊙ m] → d_mlp (ReLU²) → d_m; memory v2 with λ = 5;
  τ_m log-spaced over [τ_min, τ_max], fixed; r = w_y · m; high-pass
  r̄_t = κ_r r̄_{t−1} + (1 − κ_r) r_t; output o_t = ReLU(r_t − r̄_t + β).
- A readout layer: one small ELM neuron per class/token (d_m = 3, linear MLP), then
  Linear(n_out → n_out) with bias for the logits.

The knobs N, k_e (set by d_m, d_mlp, d_tree) and k_c (d_tree·d_brch) are independent:
`ELMNetworkConfig.for_task(...)` keeps a task's d_tree and sets d_brch from k_c, so k_e
does not move when k_c does, and `ELMNetwork.from_budget` picks
N = floor(P_hidden / (k_e + k_c)). `elmnet.params.network_parameters` gives (P, N, k_e, k_c).

Choices where the document is silent:

- Hidden neurons have no branch trace: §4 writes b = 10 Σ w_s x without one, and the
  memory (τ_m down to 0.1 steps for text) already integrates.
- Readout neurons are the hidden neurons' small siblings: the same synapse layout (k_c
  slots in d_tree branches, input scale 10, the same init) reading the hidden outputs of
  the *current* step, a linear MLP (one layer d_tree + d_m → d_m with bias), the same
  τ_m range and λ, r = w_y · m without bias, no high-pass and no ReLU (the linear logit
  layer follows). Their parameters do not depend on N, which is what the published
  sweeps imply (one hidden budget reproduces all their N; see `tests/test_elm_network`).
- Input dropout drops input channels (whole tokens for integer input); recurrent
  dropout drops hidden outputs where the recurrent synapses read them, with an
  independent mask per step; the readout sees undropped outputs.
- β starts at 0; MLP and w_y weights start like `nn.Linear` (U(±1/√fan_in)); the state,
  including the previous step's outputs, starts at zero.
- Integer input (B, T) means tokens: one-hot with value `token_scale` (3 for Enwik8).

Two options, off by default, let a hidden neuron be a fitted NeuronIO neuron
(`elmnet.transfer`): `dynamics="v1"` (the memory update of the released models) and
`tau_b`, a leaky trace on the feed-forward branch input (applied to the composed drive,
which is linear in it; its last value joins the state).

Performance design: everything linear in the inputs is computed for the whole sequence at
once: the input synapses and the branch half of the first MLP layer collapse into one
(d_in × N·d_mlp) matrix, applied as a single product (a row lookup for tokens; for spike
input, SHD's ≈2 % nonzero bins, a sum over the nonzeros only, `elmnet.ops.spike_matmul`,
exact, the dense GEMM when the input is denser). Only the
recurrent synapses (a fixed sparse gather from the previous step's outputs: a CSR matrix
of N·d_tree rows whose column indices are the gathered sources, never a dense N × N
matrix) and the nonlinear memory step run inside the time loop, in
`elmnet.recurrence.bank_recurrence` with its hand-written backward pass.
"""

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from elmbridge.errors import UserError
from elmnet import cpp_loop
from elmnet.config import ELMNetworkConfig
from elmnet.ops import (
    TANH_GAIN,
    TANH_SLOPE,
    decay,
    exp_trace,
    initial_theta_m,
    memory_update_coefficients,
    spike_matmul,
    theta_to_tau,
)
from elmnet.params import (
    NetworkParameterCount,
    network_parameters,
)
from elmnet.recurrence import (
    BankRecurrence,
    Feedback,
    SparsePattern,
    TokenRows,
    bank_recurrence,
    cpp_chosen,
)
from elmnet.recurrence import sparse_pattern as make_sparse_pattern


class ELMNetworkState(NamedTuple):
    """State carried between calls. Batch-first."""

    memory: torch.Tensor  # (B, N, d_m) hidden memories
    highpass: torch.Tensor  # (B, N) r̄ of the hidden outputs
    output: torch.Tensor  # (B, N) hidden outputs o of the last step
    readout_memory: torch.Tensor  # (B, n_out, readout_d_m)
    # (B, N, d_a) feed-forward branch trace, already through the first layer's branch
    # weights, when the hidden neurons have one (config.tau_b); (B, 0) otherwise; None
    # reads as zeros.
    trace: torch.Tensor | None = None

    def detach(self) -> "ELMNetworkState":
        """The same state cut from the autograd graph (truncated BPTT)."""
        return ELMNetworkState(*(None if x is None else x.detach() for x in self))


class NetworkOutput(NamedTuple):
    """Everything a forward pass computes that training may need."""

    logits: torch.Tensor  # (B, T, n_out)
    state: ELMNetworkState
    activity: torch.Tensor  # (T, N, B) hidden outputs o_t
    # 2/3 · the MLP outputs (as the recurrence computes them), per layer: dividing here
    # would be one more pass over (T, N, B, d_m), hundreds of MB for Enwik8
    scaled_mlp_out: tuple[torch.Tensor, ...]
    memory: torch.Tensor  # (T, N, B, d_m) hidden memories m_t

    @property
    def mlp_out(self) -> tuple[torch.Tensor, ...]:
        """MLP outputs (before the 2/3 and tanh), per layer: (T, N, B, d_m) each."""
        return tuple(z / TANH_SLOPE for z in self.scaled_mlp_out)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bound: float) -> nn.Parameter:
    values = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return nn.Parameter(values.to(torch.get_default_dtype()))


# Optimiser steps taken anywhere in this process, part of `ELMBank._derived`'s key: torch's
# fused Adam and AdamW steps change the weights in place without bumping their version
# counters (torch 2.13), and a kept matrix outlived such a step (stale evaluations).
_optimiser_steps = [0]


def _count_optimiser_step(optimizer, args, kwargs) -> None:
    _optimiser_steps[0] += 1


register_optimizer_step_post_hook(_count_optimiser_step)


class ELMBank(nn.Module):
    """N ELM neurons (v2, no branch trace) with their own weights, computed batched.

    Each neuron has k_c = d_tree·d_brch synapse slots reading `source`: an index into the
    concatenation [feed-forward input (d_src channels) ; this bank's previous outputs (N)].
    A recurrent bank (the hidden layer) has the high-pass ReLU output; otherwise the
    output r = w_y · m is linear.

    Parameters (per neuron n): w_s (N, k_c) signed synaptic weights; w_first
    (N, d_tree + d_m, d_a) and b_first (N, d_a), the first MLP layer as (fan_in, fan_out);
    with an MLP hidden layer (d_mlp given) w_last (N, d_mlp, d_m) and b_last (N, d_m); w_y
    (N, d_m); β (N,) when recurrent.
    """

    def __init__(
        self,
        n: int,
        d_src: int,
        *,
        d_m: int,
        d_mlp: int | None,
        d_tree: int,
        d_brch: int,
        rho: float,
        recurrent: bool,
        activation: str,
        tau_min: float,
        tau_max: float,
        tau_r: float,
        lam: float,
        dt: float,
        input_scale: float,
        generator: torch.Generator,
        dynamics: str = "v2",
    ):
        super().__init__()
        self.n, self.d_src, self.d_m, self.d_mlp = n, d_src, d_m, d_mlp
        self.d_tree, self.d_brch, self.recurrent = d_tree, d_brch, recurrent
        self.activation, self.tau_min, self.tau_max = activation, tau_min, tau_max
        self.tau_r, self.lam, self.dt, self.input_scale = tau_r, lam, dt, input_scale
        self.dynamics = dynamics
        k_c = d_tree * d_brch
        d_a = d_mlp or d_m  # width of the first layer

        # Connectivity: fixed at init, with replacement.
        from_recurrent = torch.rand((n, k_c), generator=generator) < (rho if recurrent else 0.0)
        ff_source = torch.randint(d_src, (n, k_c), generator=generator)
        rec_source = torch.randint(n, (n, k_c), generator=generator)
        source = torch.where(from_recurrent, d_src + rec_source, ff_source)
        self.register_buffer("source", source)

        self.w_s = _uniform(generator, (n, k_c), 1.0 / math.sqrt(d_brch))
        fan_in = d_tree + d_m
        self.w_first = _uniform(generator, (n, fan_in, d_a), 1.0 / math.sqrt(fan_in))
        self.b_first = _uniform(generator, (n, d_a), 1.0 / math.sqrt(fan_in))
        if d_mlp:
            self.w_last = _uniform(generator, (n, d_mlp, d_m), 1.0 / math.sqrt(d_mlp))
            self.b_last = _uniform(generator, (n, d_m), 1.0 / math.sqrt(d_mlp))
        self.w_y = _uniform(generator, (n, d_m), 1.0 / math.sqrt(d_m))
        if recurrent:
            self.beta = nn.Parameter(torch.zeros(n))
        self.register_buffer("theta_m", initial_theta_m(d_m, tau_min, tau_max))
        self._index_synapses(source)

    def _index_synapses(self, source: torch.Tensor) -> None:
        """Index buffers derived from `source`; rebuilt, not saved, so that a state dict
        with other connectivity loads consistently."""
        n, k_c = source.shape
        slot = torch.arange(n * k_c, device=source.device)
        neuron, branch = slot // k_c, (slot % k_c) // self.d_brch
        flat = source.flatten()
        ff = flat < self.d_src
        # Feed-forward slots, in the order of the entry (channel, neuron) of the composed
        # input matrix they add to (sorted, so that building the matrix writes it in
        # order: twice as fast for SHD-Adding), with the row (neuron, branch) of the first
        # layer's branch weights each scales.
        target = flat[ff] * n + neuron[ff]
        order = torch.argsort(target, stable=True)
        indices = {
            "ff_slot": slot[ff][order],
            "ff_row": (neuron * self.d_tree + branch)[ff][order],
            "ff_target": target[order],
            # The first slot of each input channel (its rows of the matrix), and the end.
            "ff_start": torch.searchsorted(
                target[order], torch.arange(self.d_src + 1, device=source.device) * n
            ),
            "rec_slot": slot[~ff],
        }
        pattern = make_sparse_pattern(
            (neuron * self.d_tree + branch)[~ff], flat[~ff] - self.d_src, n * self.d_tree, n
        )
        indices.update({f"rec_{name}": value for name, value in pattern._asdict().items()})
        for name, value in indices.items():
            self.register_buffer(name, value, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._index_synapses(self.source)

    @property
    def pattern(self) -> SparsePattern:
        return SparsePattern(*(getattr(self, f"rec_{f}") for f in SparsePattern._fields))

    @property
    def tau_m(self) -> torch.Tensor:
        """(d_m,) memory time constants, in steps of Δt's unit."""
        return theta_to_tau(self.theta_m, self.tau_min, self.tau_max)

    def _derived(self, name: str, compute, inputs: tuple | None = None):
        """compute() (a tensor, or tuple of them, derived from `inputs`: by default all of
        this bank's parameters and buffers), kept between calls until an input changes: an
        in-place change (an optimiser step, load_state_dict) bumps a tensor's version
        counter, a new tensor (`.to`) has another address. Where a parameter is an input,
        any optimiser step in the process also counts (`_optimiser_steps`): torch's fused
        Adam and AdamW steps bump no version counter (torch 2.13). While gradients are on
        and an input requires grad, computed every call: it is part of the graph. What
        inference mode computes is an inference tensor, which autograd may not save: the
        mode is part of the key."""
        if inputs is None:
            inputs = self._own_tensors()
        if self._in_graph(inputs):
            return compute()
        versions = ((t.data_ptr(), t._version, t.dtype, t.device) for t in inputs)
        steps = _optimiser_steps[0] if any(isinstance(t, nn.Parameter) for t in inputs) else 0
        key = (torch.is_inference_mode_enabled(), steps, *versions)
        cache = self.__dict__.setdefault("_derived_cache", {})
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, compute())
        return cache[name][1]

    def _own_tensors(self) -> tuple:
        return tuple(
            t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None
        )

    def _in_graph(self, inputs: tuple | None = None) -> bool:
        """Whether what derives from `inputs` (default: this bank's parameters and
        buffers) is part of autograd's graph in this call (`_derived` does not keep it)."""
        inputs = self._own_tensors() if inputs is None else inputs
        return torch.is_grad_enabled() and any(t.requires_grad for t in inputs)

    def feedforward_matrix(self) -> torch.Tensor:
        """(d_src, N·d_a): input channel → first-layer pre-activation of every neuron.

        Input synapses, their branch sums and the first layer's branch half are all
        linear, so they compose into one matrix: entry (i, n) is
        Σ_{slots k of n reading i} scale · w_k · W_first[n, branch(k)].
        Kept between calls while gradients are off (`_derived`).
        """
        return self._derived("feedforward_matrix", self._feedforward_matrix)

    def _feedforward_matrix(self) -> torch.Tensor:
        return self._scaled_matrix(1.0).view(self.d_src, -1)

    def _scaled_matrix(
        self, scale: float, bias: bool = False, channels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(d_src · N, d_a): scale · (composed input matrix), plus b_first on every
        neuron's rows if `bias` (a token table). The C++ pass folds both into the one
        build: scaling and adding to Enwik8's 24 MB table in ATen took two more passes each
        way, over a third of a training call's fixed work at batch 1. With `channels`
        (int64, distinct) only their rows: (len(channels) · N, d_a), channel u's at u · N."""
        n, d_a = self.n, self.w_first.shape[-1]
        if cpp_chosen(self.w_first) and self.w_s.dtype == self.w_first.dtype:
            indices = (self.ff_start, self.ff_slot, self.ff_row, self.ff_target)
            return cpp_loop.feedforward_matrix(
                self.w_s, self.w_first, indices, self.d_tree, self.input_scale * scale,
                self.b_first if bias else None, channels,
            )  # fmt: skip
        slot, row, target, n_rows = self.ff_slot, self.ff_row, self.ff_target, self.d_src * n
        if channels is not None:  # renumber the listed channels 0, 1, …; drop the rest
            local = torch.full((self.d_src,), -1, dtype=torch.int64, device=target.device)
            local[channels] = torch.arange(len(channels), device=target.device)
            channel = local[target // n]
            listed = channel >= 0
            slot, row, n_rows = slot[listed], row[listed], len(channels) * n
            target = channel[listed] * n + target[listed] % n
        weight = self.input_scale * self.w_s.flatten()[slot]
        w_branch = self.w_first[:, : self.d_tree].reshape(n * self.d_tree, d_a)
        rows = weight.unsqueeze(-1) * w_branch[row]
        matrix = rows.new_zeros(n_rows, d_a).index_add(0, target, rows)
        if scale != 1.0:
            matrix = scale * matrix
        if bias:
            matrix = (matrix.view(-1, n, d_a) + self.b_first).view(-1, d_a)
        return matrix

    def input_drive(
        self, x: torch.Tensor, token_scale: float = 1.0, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The feed-forward input through the synapses and the first layer's branch
        weights, for all steps at once: (T, B, N·d_a), no bias (for the time-major view
        of batch-first input, a view of a batch-first result). Float input that is
        mostly zeros (spike counts) goes through `elmnet.ops.spike_matmul`: exact, the
        dense product when more than `elmnet.ops.SPIKE_MAX_DENSITY` of it is nonzero.

        Args:
            x: (T, B, d_src) float input, or (T, B) integer tokens (one-hot of value
                `token_scale`).
            keep: (T, B, 1) dropout factor per token (integer input only), or None.
        """
        matrix = self.feedforward_matrix()
        if x.is_floating_point():
            # One product over all (step, sample) rows, in the order x's memory holds them:
            # the time-major view of batch-first input (the network's) is multiplied
            # batch-first and handed on as a view (`add_bias` reads it in place). Copying it
            # to time-major rows first was 5 % of an SHD-Adding training call. Spike input
            # (SHD: ≈2 % nonzero) sums only over its nonzeros; denser input takes the GEMM.
            matrix = matrix.to(x.dtype)
            if x.transpose(0, 1).is_contiguous() and not x.is_contiguous():
                return spike_matmul(x.transpose(0, 1), matrix).transpose(0, 1)
            rows = spike_matmul(x.reshape(-1, x.shape[-1]), matrix)
            return rows.view(x.shape[0], x.shape[1], matrix.shape[1])
        drive = F.embedding(x, matrix) * token_scale
        return drive if keep is None else drive * keep

    def _recurrent_values(self) -> torch.Tensor:
        """The recurrent synapses' weights (scale included) summed per entry of the
        sparse pattern (slots of one branch reading the same source share an entry)."""
        if cpp_chosen(self.w_s):
            return cpp_loop.recurrent_values(
                self.w_s, self.rec_slot, self.rec_slot_entry, self.rec_col.numel(),
                self.input_scale,
            )  # fmt: skip
        return self.w_s.new_zeros(self.rec_col.numel()).index_add(
            0, self.rec_slot_entry, self.input_scale * self.w_s.flatten()[self.rec_slot]
        )

    def token_pre(
        self,
        tokens: torch.Tensor,
        token_scale: float,
        keep: torch.Tensor | None = None,
        lazy: bool = False,
    ) -> "torch.Tensor | TokenRows":
        """`feedforward` for integer tokens: (T, N, B, d_a), bias included, as one row
        gather from the table token_scale · (composed input matrix) [+ bias] laid out
        (token, neuron) × d_a, written in the recurrence's layout. For Enwik8 at batch 64
        this is a third of the time of the lookup, scaling and transpose it replaces: pre
        is hundreds of MB there, and every pass over it costs. With `lazy` (and no
        dropout) the table and the tokens, `TokenRows`, which `bank_recurrence` gathers
        only where it must (the C++ loops read it in place in inference).

        Args:
            tokens: (T, B) integer tokens in [0, d_src).
            token_scale: the one-hot value.
            keep: (T, B, 1) dropout factor per token, or None.
            lazy: return `TokenRows` when keep is None.
        """
        n_steps, batch = tokens.shape
        n = self.n
        if keep is None and not self._in_graph():  # kept between calls: every token's rows
            rows_of = self._derived(
                f"token_table_{token_scale!r}", lambda: self._scaled_matrix(token_scale, True)
            )
            token_rows = TokenRows(rows_of, tokens)
            return token_rows if lazy else token_rows.rows(n)
        # Built anew each call (training; dropout): the rows of the tokens that occur only,
        # renumbered. At Enwik8's batch 1 and T 100 that is under half of the 24 MB table,
        # in the build, in its gradient and in the gradient's passes back to the weights.
        present = torch.zeros(self.d_src, dtype=torch.bool, device=tokens.device)
        present[tokens] = True
        channels = present.nonzero().squeeze(1)
        local = (torch.cumsum(present, 0) - 1)[tokens]
        token_rows = TokenRows(self._scaled_matrix(token_scale, keep is None, channels), local)
        if keep is None:  # every row gets the bias once: it can live in the table
            return token_rows if lazy else token_rows.rows(n)
        pre = token_rows.rows(n)
        # In place: index_select's backward needs neither its output nor the factors.
        pre.mul_(keep.view(n_steps, 1, batch, 1))
        return pre.add_(self.b_first.unsqueeze(1))

    def add_bias(self, drive: torch.Tensor) -> torch.Tensor:
        """(T, N, B, d_a) pre-activation from `input_drive`'s (T, B, N·d_a)."""
        n_steps, batch = drive.shape[:2]
        drive = drive.view(n_steps, batch, self.n, self.w_first.shape[-1])
        bias = self.b_first.to(drive.dtype)
        if cpp_chosen(drive):  # one C++ pass: ATen's permuted copy is several times slower
            return cpp_loop.bank_pre(drive, bias)
        return (drive.transpose(1, 2) + bias.unsqueeze(1)).contiguous()

    def feedforward(
        self, x: torch.Tensor, token_scale: float = 1.0, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """First-layer pre-activation from the feed-forward input, for all steps at once:
        (T, N, B, d_a), bias included (arguments as `input_drive`)."""
        return self.add_bias(self.input_drive(x, token_scale, keep))

    def run(
        self,
        pre: torch.Tensor,
        memory: torch.Tensor,
        highpass: torch.Tensor | None = None,
        output: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> BankRecurrence:
        """Step the bank through time from `feedforward`'s pre-activation.

        Args:
            pre: (T, N, B, d_a) pre-activation.
            memory: (N, B, d_m); highpass, output: (N, B) state before the first step
                (recurrent banks only).
            drop: (T, N, B) recurrent dropout factors, or None.
        """
        return bank_recurrence(**self.recurrence_inputs(pre, memory, highpass, output, drop))

    def recurrence_inputs(
        self,
        pre: torch.Tensor,
        memory: torch.Tensor,
        highpass: torch.Tensor | None = None,
        output: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of `bank_recurrence` for `run` (same arguments), with
        κ_m and the gain per neuron, (N, 1, d_m), so that banks can be concatenated
        along the neuron axis (`elmnet.packed`)."""
        kappa_m, gain, u, layers, values, w_branch = self._derived(
            "recurrence_weights", self._recurrence_weights
        )
        if not self.d_mlp:  # linear MLP: the first layer is the last, the 2/3 goes on it
            if isinstance(pre, TokenRows):
                pre = pre._replace(table=TANH_SLOPE * pre.table)
            else:
                pre = TANH_SLOPE * pre
        feedback = None
        if self.recurrent:
            feedback = Feedback(
                values=values,
                pattern=self.pattern,
                d_tree=self.d_tree,
                w_branch=w_branch,
                w_y=self.w_y,
                beta=self.beta,
                kappa_r=decay(self.tau_r, self.dt),
                drop=drop,
                highpass=highpass,
                output=output,
            )
        per_neuron = (self.n, 1, self.d_m)
        return dict(
            activation=self.activation, pre=pre, memory=memory, u=u,
            kappa=kappa_m.expand(per_neuron), gain=gain.expand(per_neuron), layers=layers,
            feedback=feedback,
        )  # fmt: skip

    def _recurrence_weights(self) -> tuple:
        """What `recurrence_inputs` derives from the weights alone: κ_m (d_m,), the gain
        (d_m,) with tanh's 1.7159 in it, U = W_first's memory half scaled by κ_m, the
        layers after the first with the 2/3 in them, and for a recurrent bank the
        recurrent synapse values and the first layer's branch half (contiguous: the C++
        loop reads it as is)."""
        kappa_m, gain = self._memory_coefficients()
        # Split, not sliced: the two slices' backward passes each zeroed a tensor of
        # W_first's size and added it to the other (about 2 ms of an Enwik8 training call).
        w_branch, w_memory = self.w_first.split([self.d_tree, self.d_m], 1)
        u = w_memory * kappa_m.unsqueeze(-1)
        if self.d_mlp:
            layers = [(TANH_SLOPE * self.w_last, TANH_SLOPE * self.b_last.unsqueeze(1))]
        else:
            u, layers = TANH_SLOPE * u, []
        values = None
        if self.recurrent:
            values, w_branch = self._recurrent_values(), w_branch.contiguous()
        return kappa_m, gain, u, layers, values, w_branch if self.recurrent else None

    def _memory_coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """κ_m (d_m,) and the gain (d_m,) with tanh's 1.7159 in it. They follow from the
        fixed time constants (the buffer θ_m) alone, so they are kept between calls with
        gradients on too (half a dozen ops a training step saves), until θ_m changes."""

        def compute():
            kappa_m, gain = memory_update_coefficients(self.tau_m, self.dt, self.lam, self.dynamics)
            return kappa_m, TANH_GAIN * gain

        return self._derived("memory_coefficients", compute, (self.theta_m,))


class ELMNetwork(nn.Module):
    """The ELM Network. `forward(x, state=None) -> (logits, state)`.

    x is (B, T, d_in) float input (SHD: spike counts per bin) or (B, T) integer tokens;
    logits are (B, T, n_out). Pass the returned state to continue the same sequences.
    """

    def __init__(self, config: ELMNetworkConfig):
        super().__init__()
        self.config = c = config
        generator = torch.Generator().manual_seed(c.seed)
        common = dict(
            d_tree=c.d_tree, d_brch=c.d_brch, tau_min=c.tau_min, tau_max=c.tau_max,
            tau_r=c.tau_r, lam=c.lam, dt=c.dt, input_scale=c.input_scale, generator=generator,
        )  # fmt: skip
        self.hidden = ELMBank(
            c.N, c.d_in, d_m=c.d_m, d_mlp=c.d_mlp, rho=c.rho, recurrent=True,
            activation=c.activation, dynamics=c.dynamics, **common,
        )  # fmt: skip
        self.readout = ELMBank(
            c.n_out, c.N, d_m=c.readout_d_m, d_mlp=None, rho=0.0, recurrent=False,
            activation="identity", **common,
        )  # fmt: skip
        bound = 1.0 / math.sqrt(c.n_out)
        self.logits = nn.Linear(c.n_out, c.n_out)
        with torch.no_grad():
            self.logits.weight.copy_(_uniform(generator, (c.n_out, c.n_out), bound))
            self.logits.bias.copy_(_uniform(generator, (c.n_out,), bound))

    @classmethod
    def from_budget(
        cls, budget: int, *, d_m: int, task: str, k_c: int | None = None, **overrides: Any
    ) -> "ELMNetwork":
        """A network of about `budget` parameters: N = floor(P_hidden / (k_e + k_c)).

        See `ELMNetworkConfig.from_budget`.
        """
        return cls(ELMNetworkConfig.from_budget(budget, d_m=d_m, task=task, k_c=k_c, **overrides))

    def parameter_count(self) -> NetworkParameterCount:
        """(P, N, k_e, k_c) of this network, from the closed form."""
        return network_parameters(self.config)

    def initial_state(self, batch: int, like: torch.Tensor) -> ELMNetworkState:
        """Zero state on `like`'s device, in the parameters' floating dtype."""
        c = self.config
        dtype = like.dtype if like.is_floating_point() else self.hidden.w_s.dtype
        zeros = self.hidden.w_s.new_zeros
        trace_shape = (batch, 0) if c.tau_b is None else (batch, c.N, c.d_mlp or c.d_m)
        return ELMNetworkState(
            zeros(batch, c.N, c.d_m, dtype=dtype, device=like.device),
            zeros(batch, c.N, dtype=dtype, device=like.device),
            zeros(batch, c.N, dtype=dtype, device=like.device),
            zeros(batch, c.n_out, c.readout_d_m, dtype=dtype, device=like.device),
            zeros(trace_shape, dtype=dtype, device=like.device),
        )

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config
        if x.is_floating_point():
            if x.dim() != 3 or x.shape[-1] != c.d_in:
                raise UserError(
                    f"ELM network expects float input of shape (batch, time, {c.d_in}) or "
                    f"integer tokens of shape (batch, time), got {tuple(x.shape)}"
                )
        elif x.dim() != 2:
            raise UserError(
                f"ELM network expects integer tokens of shape (batch, time), got {tuple(x.shape)}"
            )
        elif x.numel() and (x.min() < 0 or x.max() >= c.d_in):
            raise UserError(f"tokens must lie in [0, {c.d_in}), got [{x.min()}, {x.max()}]")

    def run(self, x: torch.Tensor, state: ELMNetworkState | None = None) -> NetworkOutput:
        """Forward pass returning logits, state and the hidden activity for regularisers."""
        hidden_inputs, state = self.hidden_inputs(x, state, lazy=True)
        hidden = self.hidden.run(**hidden_inputs)
        readout = self.readout.run(**self.readout_inputs(hidden.outputs, state))
        return self.finish(hidden, readout, state)

    def hidden_inputs(
        self, x: torch.Tensor, state: ELMNetworkState | None = None, lazy: bool = False
    ) -> tuple[dict[str, torch.Tensor | None], ELMNetworkState]:
        """The hidden bank's `run` arguments for input `x`, dropout drawn (the global
        RNG, in training), and the state (zeros when None). With `lazy`, token input
        without dropout comes as `TokenRows` (see `ELMBank.token_pre`)."""
        c = self.config
        self._check_input(x)
        batch, n_steps = x.shape[:2]
        if state is None:
            state = self.initial_state(batch, x)
        elif state.trace is None:  # a state made by hand, without the trace: zeros
            state = state._replace(trace=self.initial_state(batch, x).trace)
        time_major = x.transpose(0, 1)
        dropping = self.training and c.dropout_in > 0
        keep = None
        if x.is_floating_point():
            if dropping:
                time_major = F.dropout(time_major, c.dropout_in, True)
        elif dropping:
            keep = F.dropout(
                self.hidden.w_s.new_ones(n_steps, batch, 1, device=x.device), c.dropout_in
            )
        if c.tau_b is None and not x.is_floating_point():
            pre = self.hidden.token_pre(time_major, c.token_scale, keep, lazy)
        else:
            drive = self.hidden.input_drive(time_major, c.token_scale, keep)
            if c.tau_b is not None:
                # The trace is linear, so filtering the branch input and then applying the
                # first layer's branch weights equals filtering their product, which is
                # what `drive` already holds: one scan over (T, B, N·d_a).
                init = state.trace.flatten(1).to(drive.dtype)
                drive = exp_trace(drive.transpose(0, 1), decay(c.tau_b, c.dt), init)
                drive = drive.transpose(0, 1)
                if n_steps:  # the state handed on carries the trace after the last step
                    state = state._replace(trace=drive[-1].view(batch, c.N, -1))
            pre = self.hidden.add_bias(drive)
        drop = None
        if self.training and c.dropout_rec > 0:
            drop = F.dropout(x.new_ones(n_steps, c.N, batch, dtype=state.memory.dtype),
                             c.dropout_rec)  # fmt: skip
        # The recurrence wants neuron-major state, contiguous for the sparse products.
        inputs = dict(
            pre=pre,
            memory=state.memory.transpose(0, 1).contiguous(),
            highpass=state.highpass.t().contiguous(),
            output=state.output.t().contiguous(),
            drop=drop,
        )
        return inputs, state

    def readout_inputs(self, outputs: torch.Tensor, state: ELMNetworkState) -> dict:
        """The readout bank's `run` arguments from the hidden outputs (T, N, B)."""
        return dict(
            pre=self.readout.feedforward(outputs.transpose(1, 2)),
            memory=state.readout_memory.transpose(0, 1).contiguous(),
        )

    def finish(
        self, hidden: BankRecurrence, readout: BankRecurrence, state: ELMNetworkState
    ) -> NetworkOutput:
        """Logits and the new state from both banks' recurrences."""
        r = torch.einsum("tvbi,vi->btv", readout.memories, self.readout.w_y)
        logits = self.logits(r)
        if hidden.memories.shape[0] == 0:
            new_state = state
        else:
            new_state = ELMNetworkState(
                hidden.memories[-1].transpose(0, 1),
                hidden.highpass[-1].t(),
                hidden.outputs[-1].t(),
                readout.memories[-1].transpose(0, 1),
                state.trace,
            )
        return NetworkOutput(
            logits,
            new_state,
            hidden.outputs,
            (hidden.mlp_out, readout.mlp_out),
            hidden.memories,
        )

    def forward(
        self, x: torch.Tensor, state: ELMNetworkState | None = None
    ) -> tuple[torch.Tensor, ELMNetworkState]:
        """Run the network over a sequence.

        Args:
            x: (B, T, d_in) float input, or (B, T) integer tokens in [0, d_in).
            state: the state after a previous chunk of the same sequences, or None (zeros).

        Returns:
            logits (B, T, n_out) and the state after the last step.
        """
        out = self.run(x, state)
        return out.logits, out.state


def regularisation(out: NetworkOutput, activity: float = 0.0, mlp_output: float = 0.0):
    """activity · mean(o²) over hidden outputs + mlp_output · mean(z²) over every neuron's
    MLP output z (before tanh): the first keeps the hidden layer quiet, the second keeps
    the memory proposals out of tanh's flat tails. Returns a scalar tensor."""
    loss = out.logits.new_zeros(())
    if activity:
        loss = loss + activity * out.activity.square().mean()
    if mlp_output:
        total = sum(z.square().sum() for z in out.scaled_mlp_out) / TANH_SLOPE**2
        count = sum(z.numel() for z in out.scaled_mlp_out)
        loss = loss + mlp_output * total / max(count, 1)
    return loss
