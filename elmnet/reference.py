"""A literal, slow, float64 restatement of the ELM neuron (docs/elm-model.md §1).

This module exists to be read and to check the fast implementation against. It walks
through time one step at a time and writes every equation of docs/elm-model.md §1 as it
stands there, with no folding of constants, no parallel scan and no hand-written
backward pass. `elmnet.neuron.ELMNeuron` computes the same function much faster
(routing and the branch trace over the whole sequence at once, the memory recurrence in
`elmnet.recurrence`); the tests compare the two in float64 to rounding error, and the
released models' own weights against this loop.

It deliberately shares no code with the module it checks: it takes plain tensors under
plain names, so that a bug in `elmnet.neuron` cannot hide in both. Use it for a handful
of short sequences; it is orders of magnitude slower than `ELMNeuron`.

Units: all times (τ_s, τ_m, Δt) share one unit, ms for NeuronIO; inputs are what the
neuron reads per step (NeuronIO: +1 per excitatory and −1 per inhibitory spike in a
1 ms bin); memories and outputs are dimensionless.
"""

import math

import torch

ACTIVATIONS = {
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
    "relu2": lambda z: torch.relu(z) ** 2,
    "identity": lambda z: z,
}


def reference_forward(params: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """Run one ELM neuron over `x` from a zero state, one step at a time, in float64.

    Version 1 keeps one leaky trace per synapse and sums the traces per branch; version 2
    keeps one leaky trace per branch (docs/elm-model.md §1, "Dynamics").

    Args:
        params: the neuron's tensors under names independent of any module:
            theta_s: (d_s,) synaptic weight logits; w_s = relu(theta_s).
            index: (d_s,) int, the input channel each synapse slot reads, branch-major
                (slot k·d_brch + j is synapse j of branch k).
            valid: (d_s,) bool, False for slots that read nothing.
            theta_m: (d_m,) memory time-constant logits;
                τ_m = τ_min + (τ_max − τ_min)·sigmoid(theta_m).
            mlp: list of (W (out, in), b (out,)) per linear layer, as in `nn.Linear`;
                the first takes d_tree + d_m inputs, the last gives d_m outputs, the
                activation sits between consecutive layers.
            head: (W_y (d_out, d_m), b_y (d_out,)), the linear readout.
        cfg: scalars: tau_min, tau_max (memory time-constant range), tau_s (synapse or
            branch trace time constant), dt (Δt, the step), lam (λ), d_tree (branches),
            activation ("relu", "silu", "relu2" or "identity"), dynamics ("v1" or "v2").
            Extra keys are ignored, so an `ELMConfig.to_dict()` works.
        x: (B, T, d_in) input per step.

    Returns:
        (B, T, d_out) float64 outputs y_t = W_y m_t + b_y.
    """
    x = x.double()
    batch, n_steps, _ = x.shape
    valid = params["valid"].double()
    w_s = torch.relu(params["theta_s"].double()) * valid  # invalid slots weigh nothing
    tau_m = cfg["tau_min"] + (cfg["tau_max"] - cfg["tau_min"]) * torch.sigmoid(
        params["theta_m"].double()
    )
    kappa_m = torch.exp(-cfg["dt"] / tau_m)  # (d_m,) memory decay per step
    kappa_s = math.exp(-cfg["dt"] / cfg["tau_s"])  # synapse (v1) / branch (v2) decay
    act = ACTIVATIONS[cfg["activation"]]
    d_tree = cfg["d_tree"]
    s = torch.zeros(batch, w_s.numel(), dtype=torch.float64)  # v1: (B, d_s) traces
    b = torch.zeros(batch, d_tree, dtype=torch.float64)  # v2: (B, d_tree) traces
    m = torch.zeros(batch, tau_m.numel(), dtype=torch.float64)  # (B, d_m) memory
    ys = []
    for t in range(n_steps):
        routed = x[:, t, params["index"]] * valid  # x̃_t: (B, d_s)
        if cfg["dynamics"] == "v1":
            s = kappa_s * s + w_s * routed
            branch = s.view(batch, d_tree, -1).sum(-1)  # b_t: (B, d_tree)
        else:
            b = kappa_s * b + (w_s * routed).view(batch, d_tree, -1).sum(-1)
            branch = b
        h = torch.cat([branch, kappa_m * m], dim=-1)  # MLP input [b_t ; κ_m ⊙ m_{t−1}]
        layers = params["mlp"]
        for i, (weight, bias) in enumerate(layers):
            h = h @ weight.double().T + bias.double()
            if i < len(layers) - 1:
                h = act(h)
        delta_m = 1.7159 * torch.tanh(2.0 / 3.0 * h)  # memory proposal Δm_t: (B, d_m)
        if cfg["dynamics"] == "v1":
            m = kappa_m * m + cfg["lam"] * (1 - kappa_m) * delta_m
        else:
            kappa_lam = torch.exp(-cfg["dt"] * cfg["lam"] / tau_m)
            m = kappa_m * m + (1 - kappa_lam) * delta_m
        w_y, b_y = params["head"]
        ys.append(m @ w_y.double().T + b_y.double())
    return torch.stack(ys, dim=1)
