"""The ELM memory recurrence with a hand-written backward pass.

The recurrence is the only sequential part of the neuron. Left to autograd, every step
records a handful of graph nodes, and the backward pass is dominated by that bookkeeping
rather than by arithmetic. Here the forward runs without a graph and keeps what the
backward needs (pre-activations, tanh outputs, memories); the backward steps through
time with a few small matmuls per step and computes every weight gradient afterwards as
one batched matmul over all steps.

Notation per step t, with m_{−1} the initial memory and σ the MLP activation:
    a⁰_t = pre_t + m_{t−1} U          (U = (W_m diag κ_m)ᵀ, pre_t = W_b b_t + c)
    h^l_t = σ(a^l_t),   a^{l+1}_t = h^l_t V_l + c_l          (hidden layers)
    p_t = tanh(h^L_t W + c_W)         (W, c_W pre-scaled by 2/3)
    m_t = κ ⊙ m_{t−1} + g ⊙ p_t       (g includes the 1.7159 gain)
"""

import torch

from elmnet.ops import activation_derivative, make_activation


class _MemoryRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, activation, pre, memory, u, kappa, gain, w_out, b_out, *hidden):
        # hidden = (V_1, c_1, V_2, c_2, ...), weights already transposed.
        hidden_layers = list(zip(hidden[0::2], hidden[1::2], strict=True))
        sigma = make_activation(activation)
        batch, n_steps, _ = pre.shape
        n_layers = 1 + len(hidden_layers)
        # In inference nothing needs to be kept for a backward pass.
        keep = any(ctx.needs_input_grad)
        pre_acts = [pre.new_empty(batch, n_steps, pre.shape[-1]) for _ in range(n_layers)]
        proposals = pre.new_empty(batch, n_steps, memory.shape[-1])
        memories = pre.new_empty(batch, n_steps, memory.shape[-1])
        m = memory
        for t in range(n_steps):
            a = torch.addmm(pre[:, t], m, u)
            if keep:
                pre_acts[0][:, t] = a
            h = sigma(a)
            for layer, (v, c) in enumerate(hidden_layers, start=1):
                a = torch.addmm(c, h, v)
                if keep:
                    pre_acts[layer][:, t] = a
                h = sigma(a)
            p = torch.tanh(torch.addmm(b_out, h, w_out))
            if keep:
                proposals[:, t] = p
            m = torch.addcmul(kappa * m, gain, p)
            memories[:, t] = m
        ctx.activation = activation
        ctx.save_for_backward(
            memory, u, kappa, gain, w_out, memories, proposals, *pre_acts, *hidden
        )
        ctx.n_layers = n_layers
        return memories

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_memories):
        memory, u, kappa, gain, w_out, memories, proposals, *rest = ctx.saved_tensors
        pre_acts, hidden = rest[: ctx.n_layers], rest[ctx.n_layers :]
        hidden_w = list(hidden[0::2])
        act = ctx.activation
        batch, n_steps, _ = memories.shape

        # Everything that does not depend on the carried gradient, for all steps at once.
        dp_dz = gain * (1 - proposals.square())  # ∂m_t/∂z_t (through tanh and g)
        slopes = [activation_derivative(act, a) for a in pre_acts]
        w_out_T = w_out.t()
        hidden_w_T = [v.t() for v in hidden_w]
        u_T = u.t()

        grad_z = torch.empty_like(proposals)
        grad_a = [torch.empty_like(a) for a in pre_acts]
        grad_m_total = torch.empty_like(memories)
        carry = torch.zeros_like(memory)
        for t in range(n_steps - 1, -1, -1):
            g = grad_memories[:, t] + carry
            grad_m_total[:, t] = g
            dz = g * dp_dz[:, t]
            grad_z[:, t] = dz
            dh = dz @ w_out_T
            for layer in range(ctx.n_layers - 1, 0, -1):
                da = dh * slopes[layer][:, t]
                grad_a[layer][:, t] = da
                dh = da @ hidden_w_T[layer - 1]
            da = dh * slopes[0][:, t]
            grad_a[0][:, t] = da
            carry = torch.addmm(g * kappa, da, u_T)

        def flat(x):
            return x.reshape(batch * n_steps, -1)

        previous = torch.cat([memory.unsqueeze(1), memories[:, :-1]], dim=1)
        sigma = make_activation(act)
        outs = [sigma(a) for a in pre_acts]
        grad_u = flat(previous).t() @ flat(grad_a[0])
        grad_kappa = (grad_m_total * previous).sum((0, 1))
        grad_gain = (grad_m_total * proposals).sum((0, 1))
        grad_w_out = flat(outs[-1]).t() @ flat(grad_z)
        grad_b_out = grad_z.sum((0, 1))
        grad_hidden = []
        for layer in range(1, ctx.n_layers):
            grad_hidden += [
                flat(outs[layer - 1]).t() @ flat(grad_a[layer]),
                grad_a[layer].sum((0, 1)),
            ]
        return (None, grad_a[0], carry, grad_u, grad_kappa, grad_gain, grad_w_out, grad_b_out,
                *grad_hidden)  # fmt: skip


def memory_recurrence(
    activation: str,
    pre: torch.Tensor,
    memory: torch.Tensor,
    u: torch.Tensor,
    kappa: torch.Tensor,
    gain: torch.Tensor,
    w_out: torch.Tensor,
    b_out: torch.Tensor,
    hidden: list[tuple[torch.Tensor, torch.Tensor]] = (),
) -> torch.Tensor:
    """Run the memory recurrence over all steps; differentiable in every tensor argument.

    Args:
        activation: MLP activation name (relu, silu, relu2, identity).
        pre: (B, T, d_mlp) first-layer pre-activation from the branch input, with bias.
        memory: (B, d_m) memory before the first step.
        u: (d_m, d_mlp) memory-to-first-layer weight, decay already folded in.
        kappa: (d_m,) memory decay per step.
        gain: (d_m,) weight of the tanh proposal in the update.
        w_out: (d_mlp, d_m) last layer (transposed), b_out: (d_m,) its bias.
        hidden: further hidden layers as (weight transposed (d_mlp, d_mlp), bias).

    Returns:
        (B, T, d_m) the memory after every step.
    """
    tensors = [pre, memory, u, kappa, gain, w_out, b_out, *(x for layer in hidden for x in layer)]
    # Under mixed precision the recurrence still runs in float32: a memory that integrates
    # over hundreds of steps must not round at every step, and the matmuls are tiny.
    dtype = pre.dtype
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    with torch.autocast(device_type=pre.device.type, enabled=False):
        return _MemoryRecurrence.apply(activation, *(x.to(dtype) for x in tensors))
