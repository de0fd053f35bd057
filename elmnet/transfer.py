"""Fitted ELM neurons as the hidden neurons of an ELM Network.

A fitted neuron (a NeuronIO surrogate: a released model, or a fit of `surrogate.fit`,
docs/elm-model.md §1–2) and a hidden neuron of the ELM Network (§4) share their core:
the MLP [b_t ; κ_m ⊙ m_{t−1}] → d_mlp → d_m, the scaled tanh and the leaky memory with
time constants τ_m. Around that core they differ, and this module maps one onto the
other. Every hidden neuron of the network gets the same fitted neuron.

**Architecture** (`neuron_network_fields`): d_m, d_mlp, the MLP activation, the memory
update (v1 for every released model), τ_min, τ_max, λ and Δt are the fitted neuron's,
and its synapse trace τ_s becomes the network's feed-forward branch trace `tau_b`. One
network step stands for one Δt of the fitted neuron (1 ms for NeuronIO): time
constants transfer in steps, so with 20 ms SHD bins the transferred memory spans
20–3000 ms of the recording instead of the 1–150 ms it spans in the cell. The random
initialisation it is compared against uses this same architecture.

**Branches.** The network neuron has d_tree branches, at most the fitted neuron's D.
Network branch j is fitted branch `branch_map(D, d_tree)[j] = ⌊j·D/d_tree⌋`, evenly
spaced over the fitted neuron's branch order (for NeuronIO routing: basal first, along
the cell's input order, to the apical tuft). The first MLP layer keeps the columns of
those d_tree branches and of the memory; the columns of the other D − d_tree branches
are dropped, so the network neuron computes what the fitted neuron computes when those
branches receive nothing.

**Synapses.** The fitted neuron's D·d_brch slots and their weights belong to the cell's
1278 inputs (±1 spikes), which another task does not have: they are dropped. The network
neuron keeps its own k_c = d_tree·d_brch' slots, routing and initial weights (each slot
reads, with probability ρ, a hidden output of the previous step, otherwise one of the
d_in inputs of the current step, drawn at initialisation; weights signed, U(±1/√d_brch'),
times the input scale 10); they stay trainable even when the neuron is frozen. The
"routed input" of fitted branch branch_map[j] is thus the network's branch sum
10·Σ_{slots of j} w_s ⊙ source: its feed-forward part passes the τ_s trace as the
fitted neuron's synapses do, its recurrent part (none when ρ = 0) enters untraced, one
step late, as in every network neuron.

**Weights copied** (`transfer_neuron`): the first layer (branch columns as above,
memory columns, bias), the second layer, τ_m, and w_y = the row `output` of the fitted
readout (0: the spike logit for NeuronIO), so that a hidden neuron's r_t = w_y·m_t is
the fitted neuron's spike logit less its bias; the bias b_y and the other readout rows
(the soma voltage) are dropped, since r has no bias and its high-pass removes a constant
anyway. β starts at 0. Frozen: the MLP weights and biases and w_y take no gradient (τ_m
is fixed in the network anyway); synapses, β, the readout layer and the logits train.
"""

from typing import Any

import torch

from elmbridge.errors import UserError
from elmnet.config import ELMConfig
from elmnet.network import ELMNetwork
from elmnet.neuron import ELMNeuron

MODES = ("frozen", "init", "random")


def _check_neuron(neuron: ELMNeuron) -> ELMConfig:
    if not isinstance(neuron, ELMNeuron):
        raise UserError(
            f"only an ELM neuron can become a network's hidden neuron, got {type(neuron).__name__}"
        )
    c = neuron.config
    if c.n_mlp_layers != 1:
        raise UserError(
            f"the network's hidden neurons have one MLP hidden layer; this fitted neuron has "
            f"{c.n_mlp_layers}"
        )
    return c


def neuron_network_fields(neuron: ELMNeuron) -> dict[str, Any]:
    """The `ELMNetworkConfig` fields a network needs to host `neuron` as its hidden neuron
    (d_m, d_mlp, activation, dynamics, tau_min, tau_max, lam, dt, tau_b = the neuron's
    τ_s; times in the neuron's unit, one network step per Δt)."""
    c = _check_neuron(neuron)
    return {
        "d_m": c.d_m, "d_mlp": c.d_mlp, "activation": c.activation, "dynamics": c.dynamics,
        "tau_min": c.tau_min, "tau_max": c.tau_max, "lam": c.lam, "dt": c.dt, "tau_b": c.tau_s,
    }  # fmt: skip


def branch_map(d_tree_fitted: int, d_tree: int) -> torch.Tensor:
    """(d_tree,) int64: the fitted branch ⌊j·D/d_tree⌋ that network branch j stands for."""
    if not 1 <= d_tree <= d_tree_fitted:
        raise UserError(
            f"a network neuron of {d_tree} branches cannot take a fitted neuron of "
            f"{d_tree_fitted}: use --d-tree between 1 and {d_tree_fitted}"
        )
    return torch.arange(d_tree) * d_tree_fitted // d_tree


def transfer_neuron(
    network: ELMNetwork, neuron: ELMNeuron, *, freeze: bool, output: int = 0
) -> torch.Tensor:
    """Give every hidden neuron of `network` the fitted `neuron`'s MLP, τ_m and readout
    row `output` (see the module docstring for what is kept, dropped and re-drawn).

    Args:
        network: an ELM Network whose configuration has the fields of
            `neuron_network_fields(neuron)` and d_tree ≤ the neuron's.
        neuron: the fitted ELM neuron (unchanged).
        freeze: stop the gradient of the copied MLP weights and w_y.
        output: the fitted readout row that becomes w_y (0: the NeuronIO spike logit).

    Returns:
        (d_tree,) the fitted branch of each network branch.
    """
    fields = neuron_network_fields(neuron)
    c = network.config
    for name, value in fields.items():
        if getattr(c, name) != value:
            raise UserError(
                f"the network's {name}={getattr(c, name)!r} differs from the fitted neuron's "
                f"{value!r}; build the network with `neuron_network_fields(neuron)`"
            )
    if not 0 <= output < neuron.config.d_out:
        raise UserError(f"output {output} is not one of the neuron's {neuron.config.d_out}")
    mapping = branch_map(neuron.config.d_tree, c.d_tree)
    first, last = neuron.mlp[0], neuron.mlp[-1]
    w_first = first.weight.detach().t()  # (D + d_m, d_mlp), as the bank stores it
    rows = torch.cat([mapping, neuron.config.d_tree + torch.arange(c.d_m)])
    bank = network.hidden
    copies = {
        "w_first": w_first[rows],
        "b_first": first.bias.detach(),
        "w_last": last.weight.detach().t(),
        "b_last": last.bias.detach(),
        "w_y": neuron.head.weight.detach()[output],
    }
    with torch.no_grad():
        for name, value in copies.items():
            target = getattr(bank, name)
            target.copy_(value.to(target.dtype).expand_as(target))
            target.requires_grad_(not freeze)
        bank.theta_m.copy_(neuron.theta_m.detach().to(bank.theta_m.dtype))
    return mapping
