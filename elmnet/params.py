"""Parameter accounting: total count P, per-neuron complexity k_e and connectivity k_c.

k_c counts synaptic weights (one per synapse slot, elm-model.md §4); k_e counts everything
else in the neuron: MLP, readout and, when learnable, the memory time constants.
"""

import itertools
from dataclasses import dataclass

from elmnet.neuron import ELMConfig


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


def neuron_parameters(config: ELMConfig) -> ParameterCount:
    """Closed-form parameter count of an `ELMNeuron` with this configuration.

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
