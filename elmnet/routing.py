"""Synapse routing: which input channel each synapse slot of an ELM neuron reads.

A neuron has d_s = d_tree · d_brch synapse slots, grouped into d_tree branches of d_brch
slots. Routing gives each slot an input channel and a validity flag; invalid slots read
nothing (their weight is masked to zero).
"""

import math

import torch

from elmbridge.errors import UserError

ROUTINGS = ("neuronio", "random", "none")


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


def make_routing(
    routing: str, d_in: int, d_tree: int, d_brch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot index and validity for the named routing ('neuronio', 'random', 'none')."""
    if routing == "neuronio":
        return neuronio_routing(d_in, d_tree, d_brch)
    if routing == "random":
        return random_routing(d_in, d_tree, d_brch, seed)
    if routing == "none":
        return identity_routing(d_in, d_tree, d_brch)
    raise UserError(f"unknown routing {routing!r}; choose one of {ROUTINGS}")
