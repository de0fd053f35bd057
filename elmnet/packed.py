"""K independent ELM Networks run as one batched model: sweep points packed on a device.

A sweep of small networks leaves a large GPU idle: each point's time loop is a chain of
tiny kernels. `PackedNetworks` runs K networks (K sweep points: other seeds, other N,
k_c or ρ) through one hidden-layer recurrence and one readout recurrence, so a step of
the time loop costs what one point's step costs, and the fused kernels (`elmnet.fused`)
see K·N neurons at once.

Packing is exact, not an approximation: the K hidden banks become one bank of ΣN_k
neurons whose recurrent synapse matrix is block diagonal (point k's neurons read only
point k's outputs), every neuron keeps its own weights, and each point's input, dropout
and state stay its own. Each point's outputs and gradients are therefore those of its
solo run (`tests/test_packed.py` checks outputs, gradients and parameters after several
optimiser steps). What must be shared is what the recurrence treats as one tensor
shape or one scalar: d_m, d_mlp, d_tree, the activation, the readout's d_m, τ_r and Δt,
and the batch and sequence length of a call. N, k_c, ρ, τ_m's range, λ and the seed
may differ.

The parameters stay in the K `ELMNetwork` modules (``packed.networks[k]``), so a point's
state dict, checkpoint and evaluation are exactly a solo network's. An optimiser over
`packed.parameters()` equals K per-point optimisers for element-wise rules (Adam,
Adamax, AdamW, SGD) with the same learning rate; gradient clipping must be per point
(`clip_grad_norm_per_point`).

Dropout: with `rng_seeds` each point draws its dropout masks from its own copy of the
global generators (CPU and CUDA), seeded like a solo run that calls
``torch.manual_seed(seed)`` and kept in the solo checkpoint's format (`point_rng`,
`rng_state`), so a point may move between packed and solo runs; without it the K points
draw from the global generator in turn. `elmnet.train_packed` trains with it.
"""

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from elmbridge.errors import UserError
from elmbridge.training import clip_gradients, rng_state, set_rng_state
from elmnet.network import ELMNetwork, ELMNetworkState, NetworkOutput
from elmnet.recurrence import BankRecurrence, Feedback, SparsePattern, bank_recurrence

# What the packed recurrence treats as one tensor shape or one scalar.
SHARED = ("d_m", "d_mlp", "d_tree", "activation", "readout_d_m", "tau_r", "dt")


def check_packable(configs: Sequence) -> None:
    """A `UserError` unless the network configurations agree on `SHARED`."""
    first = configs[0]
    for config in configs[1:]:
        for name in SHARED:
            if getattr(config, name) != getattr(first, name):
                raise UserError(
                    f"packed networks must share {name}: {getattr(first, name)} vs "
                    f"{getattr(config, name)} (they may differ in N, k_c, ρ, seed)"
                )


def merge_patterns(patterns: Sequence[SparsePattern], shapes: Sequence[tuple[int, int]]):
    """The CSR pattern of the block-diagonal matrix with blocks `patterns` (each of
    shape (rows, cols) in `shapes`); entries keep their order, block after block."""
    crow, col, crow_t, col_t, perm_t, slots = [], [], [], [], [], []
    rows = cols = nnz = 0
    for p, (n_rows, n_cols) in zip(patterns, shapes, strict=True):
        first = not crow
        crow.append(p.crow.long()[0 if first else 1 :] + nnz)
        crow_t.append(p.crow_t.long()[0 if first else 1 :] + nnz)
        col.append(p.col.long() + cols)
        col_t.append(p.col_t.long() + rows)
        perm_t.append(p.perm_t + nnz)
        slots.append(p.slot_entry + nnz)
        rows, cols, nnz = rows + n_rows, cols + n_cols, nnz + p.col.numel()
    index_dtype = torch.int32 if max(rows, cols, nnz) < 2**31 else torch.int64
    return SparsePattern(
        crow=torch.cat(crow).to(index_dtype),
        col=torch.cat(col).to(index_dtype),
        crow_t=torch.cat(crow_t).to(index_dtype),
        col_t=torch.cat(col_t).to(index_dtype),
        perm_t=torch.cat(perm_t),
        slot_entry=torch.cat(slots),
    )


def merge_bank_inputs(inputs: Sequence[dict]) -> dict:
    """One set of `bank_recurrence` arguments for the concatenation of the banks whose
    arguments (`ELMBank.recurrence_inputs`) are `inputs`, along the neuron axis."""
    first = inputs[0]

    def cat(key, dim=0):
        return torch.cat([x[key] for x in inputs], dim)

    merged = dict(
        activation=first["activation"],
        pre=cat("pre", 1),
        memory=cat("memory"),
        u=cat("u"),
        kappa=cat("kappa"),
        gain=cat("gain"),
        layers=[
            (
                torch.cat([x["layers"][i][0] for x in inputs]),
                torch.cat([x["layers"][i][1] for x in inputs]),
            )
            for i in range(len(first["layers"]))
        ],
        feedback=None,
    )
    if first["feedback"] is None:
        return merged
    fbs = [x["feedback"] for x in inputs]
    drops = None
    if any(fb.drop is not None for fb in fbs):
        drops = torch.cat(
            [
                fb.drop if fb.drop is not None else x["pre"].new_ones(x["pre"].shape[:3])
                for fb, x in zip(fbs, inputs, strict=True)
            ],
            1,
        )
    sizes = [x["pre"].shape[1] for x in inputs]
    d_tree = fbs[0].d_tree
    merged["feedback"] = Feedback(
        values=torch.cat([fb.values for fb in fbs]),
        pattern=merge_patterns([fb.pattern for fb in fbs], [(n * d_tree, n) for n in sizes]),
        d_tree=d_tree,
        w_branch=torch.cat([fb.w_branch for fb in fbs]),
        w_y=torch.cat([fb.w_y for fb in fbs]),
        beta=torch.cat([fb.beta for fb in fbs]),
        kappa_r=fbs[0].kappa_r,
        drop=drops,
        highpass=torch.cat([fb.highpass for fb in fbs]),
        output=torch.cat([fb.output for fb in fbs]),
    )
    return merged


def split_recurrence(result: BankRecurrence, sizes: Sequence[int]) -> list[BankRecurrence]:
    """The per-bank parts of a packed recurrence's result (neuron axis 1)."""
    parts = [x.split(list(sizes), 1) if x is not None else [None] * len(sizes) for x in result]
    return [BankRecurrence(*fields) for fields in zip(*parts, strict=True)]


class PackedNetworks(nn.Module):
    """K ELM Networks, one batched model. `forward(xs, states=None) -> (logits, states)`
    with lists of K inputs (B, T, d_in) or (B, T) and K states; see the module docstring.

    Args:
        networks: the K networks; their parameters are used, not copied.
        rng_seeds: a dropout seed per point (see the module docstring), or None.
    """

    def __init__(self, networks: Sequence[ELMNetwork], rng_seeds: Sequence[int] | None = None):
        super().__init__()
        if not networks:
            raise UserError("packing needs at least one network")
        check_packable([net.config for net in networks])
        if rng_seeds is not None and len(rng_seeds) != len(networks):
            raise UserError(f"{len(rng_seeds)} dropout seeds for {len(networks)} networks")
        self.networks = nn.ModuleList(networks)
        self.rng_seeds = None if rng_seeds is None else list(rng_seeds)
        self._rng_states: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.networks)

    @contextlib.contextmanager
    def point_rng(self, k: int):
        """The global generators (CPU and every CUDA device) replaced by point k's while
        in the block: what is drawn or set inside is point k's, as in its solo run.

        Point k's generators start as ``torch.manual_seed(rng_seeds[k])`` leaves them;
        `rng_state(k)` / `set_rng_state(k, …)` read and write them in the format of
        `elmbridge.training.rng_state` (a solo run's checkpoint). Without `rng_seeds` the
        block changes nothing.
        """
        if self.rng_seeds is None:
            yield
            return
        outside = rng_state()
        try:
            if k in self._rng_states:
                set_rng_state(self._rng_states[k])
            else:
                torch.manual_seed(self.rng_seeds[k])
            yield
            self._rng_states[k] = rng_state()
        finally:
            set_rng_state(outside)

    def rng_state(self, k: int) -> dict[str, torch.Tensor]:
        """Point k's generator states (`elmbridge.training.rng_state` format)."""
        with self.point_rng(k):
            return rng_state()

    def set_rng_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Continue point k's draws from `state` (e.g. its solo checkpoint's)."""
        with self.point_rng(k):
            set_rng_state(state)

    def run(
        self, xs: Sequence[torch.Tensor], states: Sequence[ELMNetworkState | None] | None = None
    ) -> list[NetworkOutput]:
        """Every point's `ELMNetwork.run`, computed as one model."""
        if len(xs) != len(self):
            raise UserError(f"{len(xs)} inputs for {len(self)} packed networks")
        if len({tuple(x.shape[:2]) for x in xs}) > 1:
            raise UserError(
                "packed networks need inputs of one batch size and length, got "
                f"{sorted({tuple(x.shape[:2]) for x in xs})}"
            )
        states = list(states) if states is not None else [None] * len(self)
        hidden_inputs = []
        for k, (net, x) in enumerate(zip(self.networks, xs, strict=True)):
            with self.point_rng(k):
                inputs, states[k] = net.hidden_inputs(x, states[k])
            hidden_inputs.append(net.hidden.recurrence_inputs(**inputs))
        sizes = [net.config.N for net in self.networks]
        hidden = split_recurrence(bank_recurrence(**merge_bank_inputs(hidden_inputs)), sizes)
        readout_inputs = [
            net.readout.recurrence_inputs(**net.readout_inputs(h.outputs, state))
            for net, h, state in zip(self.networks, hidden, states, strict=True)
        ]
        readout = split_recurrence(
            bank_recurrence(**merge_bank_inputs(readout_inputs)),
            [net.config.n_out for net in self.networks],
        )
        return [
            net.finish(h, r, state)
            for net, h, r, state in zip(self.networks, hidden, readout, states, strict=True)
        ]

    def forward(
        self, xs: Sequence[torch.Tensor], states: Sequence[ELMNetworkState | None] | None = None
    ) -> tuple[list[torch.Tensor], list[ELMNetworkState]]:
        """Every point's logits (B, T, n_out) and state after the last step."""
        outs = self.run(xs, states)
        return [o.logits for o in outs], [o.state for o in outs]

    def clip_grad_norm_per_point(self, max_norm: float) -> list[torch.Tensor]:
        """`elmbridge.training.clip_gradients` on each point's parameters alone, as its
        solo run does; returns the K total norms before clipping."""
        return [clip_gradients(net.parameters(), max_norm) for net in self.networks]
