"""Synapse routing: which input channel each synapse slot of an ELM neuron reads.

A neuron has d_s = d_tree · d_brch synapse slots, grouped into d_tree branches of d_brch
slots. Routing gives each slot an input channel and a validity flag; invalid slots read
nothing (their weight is masked to zero).

"explicit" routing takes the assignment from the caller: for each branch the list of
input channels it reads. It is how a model built from outside knowledge (the morphology
routing of `surrogate.morphology`) reaches `elmnet` without `elmnet` knowing that source.
"""

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch

from elmbridge.errors import UserError

ROUTINGS = ("neuronio", "random", "none", "explicit")


def neuronio_routing(d_in: int, d_tree: int, d_brch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NeuronIO routing (docs/elm-model.md §1).

    Inputs are ordered [excitatory (d_in/2), inhibitory (d_in/2)] and first interleaved
    (exc0, inh0, exc1, inh1, …), so that the two synapses of one dendritic segment are
    neighbours. Branch k reads the d_brch consecutive interleaved channels starting at
    k · stride, stride = ⌈d_in / d_tree⌉; windows overlap when d_brch > stride. Slots past
    the last channel are invalid and point at the last channel, as in the released models.

    Returns:
        index (d_s,) int64 and valid (d_s,) bool, slots in branch-major order.
    """
    if d_in % 2:
        raise UserError(
            f"neuronio routing pairs excitatory and inhibitory inputs, so d_in must be even; "
            f"got d_in={d_in}"
        )
    stride = math.ceil(d_in / d_tree)
    if stride > d_brch:
        raise UserError(
            f"neuronio routing with d_in={d_in} and d_tree={d_tree} has stride {stride}, "
            f"larger than d_brch={d_brch}: channels between branch windows would be "
            f"unread. Use d_brch >= {stride} or more branches."
        )
    half = d_in // 2
    interleaved = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    position = torch.arange(d_tree).unsqueeze(1) * stride + torch.arange(d_brch).unsqueeze(0)
    valid = position < d_in
    index = interleaved[position.clamp(max=d_in - 1)]
    return index.flatten(), valid.flatten()


def random_routing(
    d_in: int, d_tree: int, d_brch: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each slot reads a channel drawn uniformly with replacement, fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(d_in, (d_tree * d_brch,), generator=generator)
    return index, torch.ones_like(index, dtype=torch.bool)


def identity_routing(d_in: int, d_tree: int, d_brch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """No branches: slot i reads channel i (needs d_tree = d_in and d_brch = 1)."""
    if d_tree * d_brch != d_in or d_brch != 1:
        raise UserError(
            f"routing 'none' connects channel i to branch i, so it needs d_tree = d_in and "
            f"d_brch = 1; got d_in={d_in}, d_tree={d_tree}, d_brch={d_brch}. Use routing "
            f"'neuronio' or 'random' for branched neurons."
        )
    index = torch.arange(d_in)
    return index, torch.ones_like(index, dtype=torch.bool)


def normalize_branch_inputs(branch_inputs: Any) -> tuple[tuple[int, ...], ...]:
    """`branch_inputs` as a tuple of tuples of int (lists from JSON are accepted).

    Only the form is checked here; ranges against d_in in `explicit_routing`.
    """
    if isinstance(branch_inputs, (str, bytes)) or not isinstance(branch_inputs, Sequence):
        raise UserError(
            f"branch_inputs is a list of branches, each a list of input channels; got "
            f"{type(branch_inputs).__name__}"
        )
    out = []
    for k, branch in enumerate(branch_inputs):
        if isinstance(branch, (str, bytes)) or not isinstance(branch, Sequence):
            raise UserError(f"branch_inputs[{k}] must be a list of input channels, got {branch!r}")
        for channel in branch:
            if not isinstance(channel, Integral) or isinstance(channel, bool):
                raise UserError(f"branch_inputs[{k}] holds {channel!r}, not an input channel index")
        out.append(tuple(int(c) for c in branch))
    return tuple(out)


def explicit_routing(
    d_in: int, d_tree: int, d_brch: int, branch_inputs: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch k reads the channels `branch_inputs[k]`, in that order, then invalid slots.

    Branches shorter than d_brch are padded with invalid slots (pointing at the branch's
    first channel, weight masked to zero), so the largest branch sets the smallest d_brch.

    Returns:
        index (d_s,) int64 and valid (d_s,) bool, slots in branch-major order.
    """
    branches = normalize_branch_inputs(branch_inputs)
    if len(branches) != d_tree:
        raise UserError(
            f"explicit routing lists {len(branches)} branches but d_tree={d_tree}; they must agree"
        )
    index = torch.zeros(d_tree, d_brch, dtype=torch.int64)
    valid = torch.zeros(d_tree, d_brch, dtype=torch.bool)
    for k, branch in enumerate(branches):
        if not branch:
            raise UserError(f"explicit routing: branch {k} reads no input channel")
        if len(branch) > d_brch:
            raise UserError(
                f"explicit routing: branch {k} reads {len(branch)} channels, more than "
                f"d_brch={d_brch}; use d_brch >= {max(len(b) for b in branches)}"
            )
        bad = [c for c in branch if not 0 <= c < d_in]
        if bad:
            raise UserError(
                f"explicit routing: branch {k} reads channel {bad[0]}, outside 0..{d_in - 1}"
            )
        index[k, : len(branch)] = torch.tensor(branch)
        index[k, len(branch) :] = branch[0]
        valid[k, : len(branch)] = True
    return index.flatten(), valid.flatten()


def make_routing(
    routing: str,
    d_in: int,
    d_tree: int,
    d_brch: int,
    seed: int = 0,
    branch_inputs: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot index and validity for the named routing (one of `ROUTINGS`).

    `branch_inputs` is the assignment of the "explicit" routing and must be None otherwise.
    """
    if (routing == "explicit") != (branch_inputs is not None):
        raise UserError(
            "branch_inputs (the list of input channels of each branch) goes with routing "
            f"'explicit' and only with it; got routing {routing!r}"
            + (" without branch_inputs" if routing == "explicit" else " with branch_inputs")
        )
    if routing == "explicit":
        return explicit_routing(d_in, d_tree, d_brch, branch_inputs)
    if routing == "neuronio":
        return neuronio_routing(d_in, d_tree, d_brch)
    if routing == "random":
        return random_routing(d_in, d_tree, d_brch, seed)
    if routing == "none":
        return identity_routing(d_in, d_tree, d_brch)
    raise UserError(f"unknown routing {routing!r}; choose one of {ROUTINGS}")
