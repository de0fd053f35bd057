"""Parameter accounting: total count P, per-neuron complexity k_e and connectivity k_c.

k_c counts synaptic weights (one per synapse slot, docs/elm-model.md §4); k_e counts everything
else in the neuron: MLP, readout and, when learnable, the memory time constants. For the
ELM Network, P = N (k_e + k_c) + the readout layer, and a sweep at a fixed budget sets
N = floor((P − readout) / (k_e + k_c)).
"""

import itertools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParameterCount:
    """P = k_e + k_c for one neuron (or totals for a network)."""

    total: int
    k_e: int
    k_c: int


def mlp_parameters(d_in: int, d_hidden: int, d_out: int, n_hidden_layers: int) -> int:
    """Weights and biases of an MLP with `n_hidden_layers` hidden layers of `d_hidden`."""
    widths = [d_in] + [d_hidden] * n_hidden_layers + [d_out]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def neuron_parameters(config: Any) -> ParameterCount:
    """Closed-form parameter count of an `ELMNeuron` with this `ELMConfig`.

    (Any object with the `ELMConfig` fields will do: the formulas import no model.)

    P = d_s + (d_tree + d_m)·d_mlp + d_mlp + d_mlp·d_m + d_m + d_out·d_m + d_out
    (+ d_m when τ_m is learnable) for one hidden MLP layer.
    """
    c = config
    k_c = c.n_synapses
    k_e = mlp_parameters(c.d_tree + c.d_m, c.d_mlp, c.d_m, c.n_mlp_layers)
    k_e += c.d_out * c.d_m + c.d_out
    if c.learn_tau_m:
        k_e += c.d_m
    return ParameterCount(total=k_e + k_c, k_e=k_e, k_c=k_c)


def hidden_neuron_parameters(d_m: int, d_mlp: int, d_tree: int, d_brch: int) -> ParameterCount:
    """One hidden neuron of the ELM Network (docs/elm-model.md §4).

    k_e = d_mlp(d_tree + d_m + 1) + d_m(d_mlp + 1) + (d_m + 1): the MLP's two layers with
    biases, then the readout w_y (d_m, no bias) and the output offset β. k_c = d_tree·d_brch
    signed synaptic weights.
    """
    k_e = d_mlp * (d_tree + d_m + 1) + d_m * (d_mlp + 1) + (d_m + 1)
    k_c = d_tree * d_brch
    return ParameterCount(total=k_e + k_c, k_e=k_e, k_c=k_c)


def readout_neuron_parameters(d_m: int, d_tree: int, d_brch: int) -> ParameterCount:
    """One readout neuron of the ELM Network: a small ELM neuron with a linear MLP.

    A linear MLP is one layer (d_tree + d_m → d_m, with bias), so k_e = d_m(d_tree + d_m + 1)
    plus the readout w_y (d_m, no bias); it has as many synapses as a hidden neuron.
    """
    k_e = d_m * (d_tree + d_m + 1) + d_m
    k_c = d_tree * d_brch
    return ParameterCount(total=k_e + k_c, k_e=k_e, k_c=k_c)


@dataclass(frozen=True)
class NetworkParameterCount:
    """P of an ELM Network and its split: P = N (k_e + k_c) + readout."""

    total: int
    N: int
    k_e: int
    k_c: int
    hidden: int
    readout: int


def readout_layer_parameters(n_out: int, d_m: int, d_tree: int, d_brch: int) -> int:
    """The readout layer: n_out readout neurons, then Linear(n_out → n_out) with bias."""
    return n_out * readout_neuron_parameters(d_m, d_tree, d_brch).total + n_out * (n_out + 1)


def network_parameters(config: Any) -> NetworkParameterCount:
    """(P, N, k_e, k_c) of an ELM Network configuration, plus the hidden/readout split."""
    c = config
    neuron = hidden_neuron_parameters(c.d_m, c.d_mlp, c.d_tree, c.d_brch)
    readout = readout_layer_parameters(c.n_out, c.readout_d_m, c.d_tree, c.d_brch)
    hidden = c.N * neuron.total
    return NetworkParameterCount(
        total=hidden + readout, N=c.N, k_e=neuron.k_e, k_c=neuron.k_c, hidden=hidden,
        readout=readout,
    )  # fmt: skip


def neurons_for_budget(budget: int, k_e: int, k_c: int, readout: int) -> int:
    """N = floor(P_hidden / (k_e + k_c)) with P_hidden = budget − readout (docs/elm-model.md §4)."""
    return (int(budget) - readout) // (k_e + k_c)
