"""The fused GPU path of the ELM memory recurrence: persistent Triton kernels.

`elmnet.recurrence` runs the time loop either eagerly (a few small batched matmuls per
step, launched from Python) or, for CUDA tensors when triton is importable, through the
kernels of `elmnet._triton_kernels`; this module decides which (`why_not`) and launches
them (`forward_loop`, `backward_loop`). Both paths produce the same intermediate
sequences, so the weight gradients after the loop are computed by one shared code path.

Design. On a GPU the eager loop costs several kernel launches per step (≈ 5–10 µs each)
for matmuls of a few thousand FLOPs: the launch latency, not the arithmetic, sets the
pace. The kernels move the time loop onto the device:

- Neurons without feedback (the single ELM neuron, the network's readout bank): one
  program per (block of neurons, batch tile) loads its neurons' weights once, keeps the
  memory in registers and runs all T steps; the reverse-time kernel mirrors it.
- A recurrent bank (the hidden layer) reads all of the previous step's outputs at every
  step, so one program per batch tile holds every neuron: per step it forms the branch
  sums of the sparse recurrent synapses from padded CSR rows, then steps the cells block
  by block. Batch tiles are independent, so the grid is the batch. The backward kernel
  sends ∂L/∂c_t back through the transposed rows (a gather, no atomics).

The alternative the issue names, capturing the eager step loop in a CUDA graph, removes
the CPU launch cost but keeps one device kernel per operation per step (≈ 2–4 µs of
launch and tail each, and every intermediate through global memory), and a graph has to
be captured per (T, B) shape and per set of optional inputs. The persistent kernel keeps
the state in registers and the weights in cache across steps, which is why it is the
design here. Which one is faster at which N and B can only be measured on a GPU: the speed
benchmarks time both (the graph row: `benchmarks/cuda_graph.py`; one command for the
table: `python -m benchmarks.gpu_table`), and no GPU has run them yet (issue 18, goal 4).

Numerics: float32 throughout, matmuls in IEEE float32 (no TF32), tanh through the
sigmoid (absolute error ≈ 1e-7). Under autocast the recurrence runs in float32 anyway
(`elmnet.recurrence._compute_dtype`). The tests run the kernels in triton's interpreter
on CPU (``TRITON_INTERPRET=1``) against the eager path.
"""

import importlib
import os

import torch

# Activation codes shared with the kernels.
_ACT = {"identity": 0, "relu": 1, "relu2": 2, "silu": 3}


def _kernels():
    return importlib.import_module("elmnet._triton_kernels")


def triton_missing() -> str | None:
    """Why triton cannot run here, or None when it can."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return "triton is not installed (pip install 'elmbridge[gpu]')"
    return None


def interpreting() -> bool:
    """True when triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def per_neuron(x: torch.Tensor, n: int, width: int) -> torch.Tensor | None:
    """`x` broadcast to (N, width) when it is broadcastable to (N, 1, width), else None
    (a per-batch coefficient, which the kernels do not take)."""
    try:
        return torch.broadcast_to(x, (n, 1, width)).reshape(n, width)
    except RuntimeError:
        return None


def unavailable(
    device: torch.device, dtype: torch.dtype, activation: str, n_layers: int
) -> str | None:
    """Why the fused kernels cannot run a recurrence of this kind here, or None.

    n_layers: MLP layers after the first (1: one hidden layer, 0: a linear MLP).
    """
    if device.type != "cuda" and not interpreting():
        return f"tensors on {device.type}: the fused kernels need CUDA"
    missing = triton_missing()
    if missing:
        return missing
    if dtype != torch.float32:
        return f"the fused kernels compute in float32, not {dtype}"
    if n_layers > 1:
        return "the fused kernels take at most one hidden MLP layer"
    if activation not in _ACT:
        return f"activation {activation!r} has no fused kernel"
    return None


def why_not(spec, pre: torch.Tensor, kappa, gain, layers) -> str | None:
    """Why the fused kernels cannot run this recurrence, or None when they can."""
    reason = unavailable(pre.device, pre.dtype, spec.activation, spec.n_layers)
    if reason:
        return reason
    n_steps, n, batch, d_a = pre.shape
    d_m = kappa.shape[-1] if kappa.dim() else 1
    if (n_steps + 1) * n * batch * max(d_a, d_m, spec.d_tree) >= 2**31:
        return "a sequence of 2³¹ or more elements (the kernels' offsets are 32-bit)"
    for x in (kappa, gain, *(b for _, b in layers)):
        if per_neuron(x, n, x.shape[-1] if x.dim() else 1) is None:
            return "a per-batch decay, gain or bias (the fused kernels take per-neuron ones)"
    return None


def _block(n: int, least: int = 16) -> int:
    return max(least, triton_next_power_of_2(n))


def triton_next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _padded_rows(crow: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(n_rows, L) entry positions of each CSR row, −1 past the row's end; L ≥ 1."""
    crow = crow.long()
    lengths = crow[1:] - crow[:-1]
    width = max(1, int(lengths.max())) if lengths.numel() else 1
    k = torch.arange(width, device=crow.device)
    entries = torch.where(k < lengths.unsqueeze(1), crow[:-1].unsqueeze(1) + k, -1)
    return entries.to(torch.int32).contiguous(), width


def _tiles(batch: int) -> int:
    return 16 if batch <= 16 else 32


def forward_loop(spec, pre, memory, u, kappa, gain, layers, feedback=None):
    """The forward time loop on the kernels.

    Args as `elmnet.recurrence._Recurrence.forward` (float32, (T, N, B, ·)); `feedback`
    is None or (values, crow, col, w_branch, w_y, beta, drop, highpass, output).

    Returns:
        memories, mlp_out (T, N, B, d_m); acts, a list with the first layer's
        pre-activation (T, N, B, d_a) when the MLP has a hidden layer; outputs and
        highpasses (T, N, B) with feedback, else None.
    """
    k = _kernels()
    n_steps, n, batch, d_a = pre.shape
    d_m = memory.shape[-1]
    hidden = spec.n_layers == 1
    pre = pre.contiguous()
    mem = pre.new_empty(n_steps + 1, n, batch, d_m)
    mem[0] = memory
    z = pre.new_empty(n_steps, n, batch, d_m)
    acts = pre.new_empty(n_steps, n, batch, d_a) if hidden else z
    w = layers[0][0].contiguous() if hidden else u
    bias = per_neuron(layers[0][1], n, d_m).contiguous() if hidden else kappa.new_zeros(n, d_m)
    kappa_n, gain_n = per_neuron(kappa, n, d_m).contiguous(), per_neuron(gain, n, d_m).contiguous()
    u = u.contiguous()
    bb, bdm, bda = _tiles(batch), _block(d_m), _block(d_a)
    act = _ACT[spec.activation]
    if feedback is None:
        bn = min(4, triton_next_power_of_2(n))
        grid = (triton_cdiv(n, bn), triton_cdiv(batch, bb))
        k.forward_kernel[grid](
            pre, mem, z, acts, u, w, bias, kappa_n, gain_n, n_steps, n, batch, d_m, d_a,
            HIDDEN=hidden, ACT=act, BN=bn, BB=bb, BDM=bdm, BDA=bda,
        )  # fmt: skip
        return mem[1:], z, [acts] if hidden else [], None, None
    values, crow, col, w_branch, w_y, beta, drop, highpass, output = feedback
    d_tree = spec.d_tree
    entries, width = _padded_rows(crow)
    out = pre.new_empty(n_steps + 1, n, batch)
    hp = pre.new_empty(n_steps + 1, n, batch)
    out[0], hp[0] = output, highpass
    cbuf = pre.new_empty(n * d_tree, batch)
    k.feedback_forward_kernel[(triton_cdiv(batch, bb),)](
        pre, mem, z, acts, out, hp, u, w, bias, kappa_n, gain_n, w_branch.contiguous(),
        w_y.contiguous(), beta.contiguous(), entries, values.contiguous(), col,
        pre if drop is None else drop.contiguous(), cbuf, float(spec.kappa_r), n_steps, n,
        batch, d_m, d_a, d_tree, width, HIDDEN=hidden, ACT=act, HAS_DROP=drop is not None,
        BN=4, BB=bb, BDM=bdm, BDA=bda, BDT=_block(d_tree), BL=triton_next_power_of_2(width),
        BR=32,
    )  # fmt: skip
    return mem[1:], z, [acts] if hidden else [], out[1:], hp[1:]


def backward_loop(spec, saved, grads, feedback=None):
    """The reverse-time loop on the kernels.

    Args:
        saved: (memory, u, kappa, gain, memories, mlp_out, acts, layers' weights) as the
            forward saved them.
        grads: (grad_memories, grad_mlp_out, grad_outputs, grad_highpasses), each None
            when unused.
        feedback: None or (values, crow_t, col_t, perm_t, w_branch, w_y, drop, outputs,
            output0).

    Returns:
        grad_z, grad_acts (list), grad_m_total, carry (∂L/∂m_{−1}); with feedback also
        grad_y, grad_r, grad_branches (T, N, d_tree, B), carry_out, carry_highpass.
    """
    k = _kernels()
    memory, u, kappa, gain, memories, mlp_out, acts, weights = saved
    grad_memories, grad_mlp_out, grad_outputs, grad_highpasses = grads
    n_steps, n, batch, d_m = memories.shape
    d_a = u.shape[-1]
    hidden = spec.n_layers == 1
    z = mlp_out.contiguous()
    a = acts[0].contiguous() if hidden else z
    w = weights[0].contiguous() if hidden else u.contiguous()
    kappa_n, gain_n = per_neuron(kappa, n, d_m).contiguous(), per_neuron(gain, n, d_m).contiguous()
    gz = torch.empty_like(z)
    gpre = z.new_empty(n_steps, n, batch, d_a) if hidden else gz
    gmt = torch.empty_like(z)
    carry = memory.new_zeros(n, batch, d_m)
    bb, bdm, bda = _tiles(batch), _block(d_m), _block(d_a)
    act = _ACT[spec.activation]
    dummy = z
    gmem = dummy if grad_memories is None else grad_memories.contiguous()
    gzext = dummy if grad_mlp_out is None else grad_mlp_out.contiguous()
    if feedback is None:
        bn = min(4, triton_next_power_of_2(n))
        grid = (triton_cdiv(n, bn), triton_cdiv(batch, bb))
        k.backward_kernel[grid](
            dummy, z, a, u.contiguous(), w, kappa_n, gain_n, gmem, gzext, gz, gpre, gmt,
            carry, n_steps, n, batch, d_m, d_a, HIDDEN=hidden, ACT=act,
            HAS_GMEM=grad_memories is not None, HAS_GZ=grad_mlp_out is not None, BN=bn,
            BB=bb, BDM=bdm, BDA=bda,
        )  # fmt: skip
        return gz, [gpre] if hidden else [], gmt, carry
    values, crow_t, col_t, perm_t, w_branch, w_y, drop, outputs, output0 = feedback
    d_tree = spec.d_tree
    entries_t, width_t = _padded_rows(crow_t)
    out = torch.cat([output0.unsqueeze(0), outputs]).contiguous()
    go = out.new_zeros(n_steps + 1, n, batch)
    chp = out.new_zeros(n, batch)
    gy, gr = out.new_empty(n_steps, n, batch), out.new_empty(n_steps, n, batch)
    gbr = out.new_empty(n_steps, n, d_tree, batch)
    k.feedback_backward_kernel[(triton_cdiv(batch, bb),)](
        dummy, z, a, out, u.contiguous(), w, kappa_n, gain_n, w_branch.contiguous(),
        w_y.contiguous(), entries_t, values[perm_t].contiguous(), col_t,
        dummy if drop is None else drop.contiguous(), gmem, gzext,
        dummy if grad_outputs is None else grad_outputs.contiguous(),
        dummy if grad_highpasses is None else grad_highpasses.contiguous(),
        gz, gpre, gmt, gy, gr, gbr, go, carry, chp, float(spec.kappa_r), n_steps, n, batch,
        d_m, d_a, d_tree, width_t, HIDDEN=hidden, ACT=act, HAS_DROP=drop is not None,
        HAS_GMEM=grad_memories is not None, HAS_GZ=grad_mlp_out is not None,
        HAS_GOUT=grad_outputs is not None, HAS_GHP=grad_highpasses is not None, BN=4,
        BB=bb, BDM=bdm, BDA=bda, BDT=_block(d_tree), BLT=triton_next_power_of_2(width_t),
        BJ=16,
    )  # fmt: skip
    return gz, [gpre] if hidden else [], gmt, carry, gy, gr, gbr, go[0], chp


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
