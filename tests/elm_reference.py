"""An independent float64 reference of the ELM neuron, written from elm-model.md §1."""

import math

import torch


def reference_forward(params: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """Literal float64 loop over time from elm-model.md §1, one trace per synapse (v1).

    `params` uses plain names independent of the module: theta_s, index, valid,
    theta_m, mlp (list of (W, b)), head (W, b). `cfg` holds the scalars.
    """
    x = x.double()
    B, T, _ = x.shape
    w_s = torch.relu(params["theta_s"].double()) * params["valid"].double()
    tau_m = cfg["tau_min"] + (cfg["tau_max"] - cfg["tau_min"]) * torch.sigmoid(
        params["theta_m"].double()
    )
    k_m = torch.exp(-cfg["dt"] / tau_m)
    k_s = math.exp(-cfg["dt"] / cfg["tau_s"])
    act = {
        "relu": torch.relu,
        "silu": torch.nn.functional.silu,
        "relu2": lambda z: torch.relu(z) ** 2,
    }[cfg["activation"]]
    d_tree = cfg["d_tree"]
    s = torch.zeros(B, w_s.numel(), dtype=torch.float64)  # v1: per-synapse traces
    b = torch.zeros(B, d_tree, dtype=torch.float64)  # v2: per-branch trace
    m = torch.zeros(B, tau_m.numel(), dtype=torch.float64)
    ys = []
    for t in range(T):
        routed = x[:, t, params["index"]] * params["valid"].double()
        if cfg["dynamics"] == "v1":
            s = k_s * s + w_s * routed
            branch = s.view(B, d_tree, -1).sum(-1)
        else:
            b = k_s * b + (w_s * routed).view(B, d_tree, -1).sum(-1)
            branch = b
        h = torch.cat([branch, k_m * m], dim=-1)
        layers = params["mlp"]
        for i, (W, bias) in enumerate(layers):
            h = h @ W.double().T + bias.double()
            if i < len(layers) - 1:
                h = act(h)
        dm = 1.7159 * torch.tanh(2.0 / 3.0 * h)
        if cfg["dynamics"] == "v1":
            m = k_m * m + cfg["lam"] * (1 - k_m) * dm
        else:
            m = k_m * m + (1 - torch.exp(-cfg["dt"] * cfg["lam"] / tau_m)) * dm
        W, bias = params["head"]
        ys.append(m @ W.double().T + bias.double())
    return torch.stack(ys, dim=1)
