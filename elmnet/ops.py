"""Numerical building blocks shared by the ELM neuron and the ELM Network.

Everything here is device- and dtype-agnostic: tensors created inside follow the inputs.
"""

import math

import torch
from torch import nn

from elmbridge.errors import UserError
from elmnet import cpp_loop

# LeCun's scaled tanh keeps unit-variance inputs at unit variance; the ELM memory
# proposal uses it (docs/elm-model.md §1).
TANH_GAIN = 1.7159
TANH_SLOPE = 2.0 / 3.0


def scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    """1.7159 · tanh(2/3 · x)."""
    return TANH_GAIN * torch.tanh(TANH_SLOPE * x)


class SquaredReLU(nn.Module):
    """relu(x)²."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


ACTIVATIONS = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "relu2": SquaredReLU,
    # A linear MLP: the ELM Network's small readout neurons use it.
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """The MLP activation module called `name` (relu, silu, relu2 or identity)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UserError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def activation_derivative(name: str, a: torch.Tensor) -> torch.Tensor:
    """dσ/da of the activation called `name`, elementwise at pre-activation `a`."""
    if name == "relu":
        return (a > 0).to(a.dtype)
    if name == "relu2":
        return 2 * torch.relu(a)
    if name == "silu":
        s = torch.sigmoid(a)
        return s * (1 + a * (1 - s))
    if name == "identity":
        return torch.ones_like(a)
    raise UserError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")


def log_spaced_taus(n: int, tau_min: float, tau_max: float) -> torch.Tensor:
    """`n` time constants log-spaced over [tau_min, tau_max] (float64, same unit as input).

    One constant is `tau_min`, matching the released models (d_m = 1 → τ = τ_min).
    """
    return torch.logspace(math.log10(tau_min), math.log10(tau_max), n, dtype=torch.float64)


def tau_to_theta(tau: torch.Tensor, tau_min: float, tau_max: float) -> torch.Tensor:
    """Inverse of `theta_to_tau`. τ at the interval ends maps to large finite logits."""
    frac = (tau - tau_min) / (tau_max - tau_min)
    # Keep the end points finite so that a learnable τ still has a gradient there.
    eps = 1e-8
    return torch.logit(frac.clamp(eps, 1 - eps))


def theta_to_tau(theta: torch.Tensor, tau_min: float, tau_max: float) -> torch.Tensor:
    """τ = τ_min + (τ_max − τ_min) · sigmoid(θ): keeps learnable τ inside its interval."""
    return tau_min + (tau_max - tau_min) * torch.sigmoid(theta)


def initial_theta_m(d_m: int, tau_min: float, tau_max: float) -> torch.Tensor:
    """(d_m,) logits θ_m of log-spaced memory time constants, in the default dtype.

    The one place both the neuron and the network's bank set up their memory:
    τ_m = `theta_to_tau(θ_m)` spans [tau_min, tau_max] log-evenly.
    """
    theta = tau_to_theta(log_spaced_taus(d_m, tau_min, tau_max), tau_min, tau_max)
    return theta.to(torch.get_default_dtype())


def decay(tau: torch.Tensor | float, dt: float) -> torch.Tensor | float:
    """Per-step decay factor κ = exp(−Δt/τ) of a leaky trace (Δt and τ in the same unit)."""
    if isinstance(tau, torch.Tensor):
        return torch.exp(-dt / tau)
    return math.exp(-dt / tau)


def memory_update_coefficients(
    tau_m: torch.Tensor, dt: float, lam: float, dynamics: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """κ_m and the gain on Δm of the ELM memory update m_t = κ_m ⊙ m_{t−1} + gain ⊙ Δm_t.

    v1: gain = λ (1 − κ_m); v2: gain = 1 − κ_λ, κ_λ = exp(−Δt λ / τ_m) (docs/elm-model.md §1).
    τ_m and Δt share one unit.
    """
    kappa_m = decay(tau_m, dt)
    if dynamics == "v1":
        return kappa_m, -lam * torch.expm1(-dt / tau_m)
    return kappa_m, -torch.expm1(-dt * lam / tau_m)


def exp_trace(
    u: torch.Tensor, kappa: torch.Tensor | float, init: torch.Tensor | None = None
) -> torch.Tensor:
    """Leaky trace b_t = κ ⊙ b_{t−1} + u_t over a whole sequence at once.

    On the CPU (float32/float64, recurrence backend "auto" or "cpp", see
    `elmnet.recurrence.use_backend`) it runs as one sequential C++ pass forward and one
    reverse-time pass backward (`elmnet.cpp_loop.trace`): O(B·T·C) memory traffic each
    way. Elsewhere (CUDA, backend "eager", no compiler) it is a log-depth parallel prefix
    scan (Hillis–Steele, `_scan_trace`). Both are differentiable in u, κ (when a tensor
    that requires grad; no caller in the toolkit learns κ today) and init.

    Args:
        u: (B, T, C) drive per step.
        kappa: (C,) or scalar decay per step, in [0, 1].
        init: (B, C) trace before the first step (b_{−1}); zeros when None.

    Returns:
        (B, T, C) the trace at every step.
    """
    kappa = torch.as_tensor(kappa, dtype=u.dtype, device=u.device)
    if kappa.dim() > 1 or (kappa.dim() == 1 and kappa.shape[0] not in (1, u.shape[-1])):
        raise UserError(f"κ must be a scalar or have {u.shape[-1]} channels, got {kappa.shape}")
    # Lazy: the backend choice lives in recurrence, which imports this module.
    from elmnet.recurrence import cpp_chosen

    if cpp_chosen(u):
        return cpp_loop.trace(u, kappa, init)
    return _scan_trace(u, kappa, init)


def _scan_trace(u: torch.Tensor, kappa: torch.Tensor, init: torch.Tensor | None) -> torch.Tensor:
    """`exp_trace` as a Hillis–Steele scan: after the pass with shift s every b_t holds the
    terms u_{t−j}, j < 2s, so ⌈log₂ T⌉ passes of elementwise work replace T sequential
    steps. Only non-negative powers of κ ≤ 1 appear, so the scan is as stable as the
    sequential loop."""
    n_steps = u.shape[1]
    b = u
    power = kappa
    shift = 1
    while shift < n_steps:
        b = torch.cat([b[:, :shift], b[:, shift:] + power * b[:, :-shift]], dim=1)
        power = power * power
        shift *= 2
    if init is not None:
        steps = torch.arange(1, n_steps + 1, dtype=u.dtype, device=u.device)
        decays = torch.pow(kappa.expand(u.shape[-1]).unsqueeze(0), steps.unsqueeze(1))
        b = b + decays.unsqueeze(0) * init.unsqueeze(1)
    return b


# Above this fraction of nonzero inputs `spike_matmul` takes the dense product. Measured
# on the NeuronIO synapse matrix (1278 × 45, float32, one thread of a shared 2-core Xeon,
# B·T = 4000 rows, random ±1 spikes): the C++ spike product's forward costs about one
# read of x plus 45 multiply-adds per nonzero and breaks even with the dense BLAS product
# near 4 % (forward + backward near 5–8 %: its ∂/∂m needs no second read of x).
# NeuronIO input: ≈1.1 % nonzero on average under the NMDA protocol, at most ≈2.8 %.
SPIKE_MAX_DENSITY = 0.04
# The density is first estimated from every SAMPLE_STRIDE-th row, so that dense input
# costs the dense product plus ~1/64 of a read; the C++ loop still stops at
# SPIKE_MAX_DENSITY of all entries whatever the estimate said.
SAMPLE_STRIDE = 64


def spike_matmul(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x @ m for spike-like x (mostly zeros), e.g. synaptic input (units: x's times m's).

    Exact either way: on the CPU under the recurrence backend "auto" or "cpp", when at most
    `SPIKE_MAX_DENSITY` of x's entries are nonzero, the product sums only over x's
    nonzeros in C++ (`elmnet.cpp_loop.spike_product`), forward and backward (∂/∂m sums
    xᵀ ∂L/∂y over the same nonzeros); otherwise it is the dense `x @ m`.

    Args:
        x: (..., n_in) input: m's dtype, or int8/bool spike counts (read as such by the
            C++ product, converted to m's dtype for the dense one).
        m: (n_in, n_out) float weights.

    Returns:
        (..., n_out) in m's dtype.
    """
    from elmnet.recurrence import cpp_chosen  # lazy: recurrence imports this module

    flat = x.reshape(-1, x.shape[-1])
    readable = x.dtype == m.dtype or x.dtype in cpp_loop.SPIKE_INT_DTYPES
    if flat.numel() == 0 or not readable or not cpp_chosen(m):
        return x.to(m.dtype) @ m
    sample = flat[::SAMPLE_STRIDE]
    if torch.count_nonzero(sample).item() > SPIKE_MAX_DENSITY * sample.numel():
        return x.to(m.dtype) @ m
    y = cpp_loop.spike_product(flat, m, SPIKE_MAX_DENSITY)
    return y.view(*x.shape[:-1], m.shape[-1])
