"""The ELM memory recurrence with a hand-written backward pass, for one neuron or a bank.

The recurrence is the only sequential part of an ELM neuron. Left to autograd, every step
records a handful of graph nodes, and the backward pass is dominated by that bookkeeping
rather than by arithmetic. Here the forward runs without a graph and keeps what the
backward needs (pre-activations, MLP outputs, memories); the backward steps through time
with a few small matmuls per step and computes every weight gradient afterwards as one
batched matmul over all steps.

One code path serves a single neuron (N = 1) and a bank of N neurons with their own
weights, the layers of the ELM Network: the per-neuron matmuls of a step run as one
batched matmul over the neuron axis. Tensors are time- and neuron-major, (T, N, B, ·), so
that one step's slice is contiguous. Per step t and neuron, with m_{−1} the initial memory
and σ the MLP activation:

    a⁰_t = pre_t + m_{t−1} U  [+ c_t W_b]   (U = (W_m diag κ_m)ᵀ; pre_t from the inputs)
    h⁰ = σ(a⁰_t),  a^l = h^{l−1} V_l + v_l,  h^l = σ(a^l)       (layers before the last)
    z_t = h^{L−1} W + w    (MLP output, pre-scaled by 2/3);  z_t = a⁰_t for a linear MLP
    m_t = κ ⊙ m_{t−1} + g ⊙ tanh(z_t)      (g includes the 1.7159 gain)

With feedback (the ELM Network's recurrent hidden layer) each neuron also reads the
previous step's outputs o of the bank through fixed sparse synapses, and has a scalar
high-pass-filtered ReLU output:

    q_t = D_t ⊙ o_{t−1}         (D: recurrent dropout mask, or 1)
    c_t = S q_t                 (S: sparse (N·d_tree × N), row n·d_tree + j = branch j of
                                 neuron n; its entries are the signed synaptic weights)
    r_t = m_t · w_y,  r̄_t = κ_r r̄_{t−1} + (1 − κ_r) r_t,  o_t = relu(r_t − r̄_t + β)

Three implementations of the time loops share everything else (the saved tensors and
the weight gradients after the loop), chosen per call (`use_backend`: "auto", "eager",
"triton", "cpp"): the eager loops here, on CUDA the fused Triton kernels of
`elmnet.fused`, and on the CPU the C++ loops of `elmnet.cpp_loop` (compiled on first use;
"auto" takes them up to batch 128, and falls back to eager with one warning when they
cannot be built). The eager loop's cost per step is mostly fixed (a
dozen small ops, each a few µs of dispatch and tiny-matrix overhead on CPU), which is why
both sequences and scratch buffers are preallocated and results are written in place, and
why the C++ loops, one call for all steps, are the CPU default up to those batches; beyond
them the eager loop's batched BLAS products may be faster per sample (unmeasured).
"""

import contextlib
import functools
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch

from elmbridge.errors import UserError
from elmnet import cpp_loop, fused
from elmnet.ops import activation_derivative, make_activation


class SparsePattern(NamedTuple):
    """Where the nonzeros of a sparse (n_rows × n_cols) matrix are, in CSR order.

    `slot_entry` maps each synapse slot to its matrix entry: slots that share a row and a
    column (a source drawn twice for one branch) share an entry, whose value is the sum
    of their weights. The transposed pattern serves the backward pass.
    """

    crow: torch.Tensor  # (n_rows + 1,)
    col: torch.Tensor  # (nnz,)
    crow_t: torch.Tensor  # (n_cols + 1,)
    col_t: torch.Tensor  # (nnz,)
    perm_t: torch.Tensor  # (nnz,) entry order of the transposed matrix
    slot_entry: torch.Tensor  # (n_slots,)


def sparse_pattern(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
    """The CSR pattern of a matrix with one entry per (rows[k], cols[k]) pair."""
    key = rows.long() * n_cols + cols.long()
    unique, slot_entry = torch.unique(key, sorted=True, return_inverse=True)
    entry_row, entry_col = unique // n_cols, unique % n_cols
    perm_t = torch.argsort(entry_col * n_rows + entry_row)

    # 32-bit indices where they fit: sparse BLAS wants them and would convert every call.
    index_dtype = torch.int32 if max(n_rows, n_cols, len(unique)) < 2**31 else torch.int64

    def crow(index, n):
        counts = torch.bincount(index, minlength=n)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(index_dtype)

    return SparsePattern(
        crow=crow(entry_row, n_rows),
        col=entry_col.to(index_dtype),
        crow_t=crow(entry_col, n_cols),
        col_t=entry_row[perm_t].to(index_dtype),
        perm_t=perm_t,
        slot_entry=slot_entry,
    )


def _csr(crow, col, values, shape):
    with warnings.catch_warnings():
        # PyTorch flags all sparse CSR use as beta; the products used here are stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


@dataclass(frozen=True)
class _Spec:
    activation: str
    n_layers: int  # MLP layers after the first (0: a linear MLP, no activation)
    feedback: bool = False
    kappa_r: float = 0.0  # high-pass decay per step
    d_tree: int = 0
    fused: bool = False  # run the time loops on the Triton kernels (elmnet.fused)
    cpp: bool = False  # run the time loops in C++ (elmnet.cpp_loop)


def _forward(spec: _Spec, keep: bool, pre, memory, u, kappa, gain, *rest, tokens=None):
    """The forward time loops on the backend `spec` names: (memories, mlp_out, outputs,
    highpasses, acts, lane_weights), the feedback pair None without feedback, acts (the
    pre-activations the backward pass reads) only when `keep`, lane_weights None or (C++,
    `keep`) the weights as the C++ lanes loops lay them out (`cpp_loop.forward_loop`).
    tokens: a `TokenRows` whose table the C++ loops read in place (then `pre` is its
    placeholder), or None."""
    flat_layers = rest[: 2 * spec.n_layers]
    layers = list(zip(flat_layers[0::2], flat_layers[1::2], strict=True))
    n_steps, n, batch, _ = pre.shape
    new = functools.partial(cpp_loop.empty, pre)
    outputs = highpasses = lane_weights = None
    if not spec.fused:
        acts = [new(n_steps, n, batch, w.shape[1]) for w, _ in layers] if keep else []
        memories = new(n_steps, n, batch, memory.shape[-1])
        mlp_out = new(n_steps, n, batch, memory.shape[-1])
    if spec.feedback:
        (values, crow, col, crow_t, col_t, perm_t, w_branch, w_y, beta, drop, highpass, out) = rest[
            2 * spec.n_layers :
        ]
        if not spec.fused:
            outputs, highpasses = new(n_steps, n, batch), new(n_steps, n, batch)
    if spec.fused:
        fb = None
        if spec.feedback:
            fb = (values, crow, col, w_branch, w_y, beta, drop, highpass, out)
        memories, mlp_out, acts, outputs, highpasses = fused.forward_loop(
            spec, pre, memory, u, kappa, gain, layers, fb
        )
        if not keep:
            acts = []
    elif spec.cpp:
        fb = None
        if spec.feedback:
            fb = (values, crow, col, crow_t, col_t, perm_t, w_branch, w_y, beta, drop,
                  highpass, out, outputs, highpasses)  # fmt: skip
        lane_weights = cpp_loop.forward_loop(
            spec, pre, memory, u, kappa, gain, layers, acts, memories, mlp_out, fb, tokens,
            keep_weights=keep,
        )  # fmt: skip
    elif spec.feedback:
        synapses = _csr(crow, col, values, (n * spec.d_tree, n))
        _eager_forward(
            spec, pre, memory, u, kappa, gain, layers, acts, memories, mlp_out,
            (synapses, w_branch, w_y, beta, drop, highpass, out, outputs, highpasses),
        )  # fmt: skip
    else:
        _eager_forward(spec, pre, memory, u, kappa, gain, layers, acts, memories, mlp_out)
    return memories, mlp_out, outputs, highpasses, acts, lane_weights


class _Recurrence(torch.autograd.Function):
    """The recurrence as one autograd node. tokens: None, or the (T, B) token ids of a
    `TokenRows` whose table (rows · N, d_a) comes as `pre` (the C++ bank loops read it in
    place, and `cpp_loop.backward` sums its gradient)."""

    @staticmethod
    def forward(ctx, spec: _Spec, tokens, pre, memory, u, kappa, gain, *rest):
        flat_layers = rest[: 2 * spec.n_layers]
        layers = list(zip(flat_layers[0::2], flat_layers[1::2], strict=True))
        # In inference nothing needs to be kept for a backward pass.
        keep = any(ctx.needs_input_grad)
        token_rows = None
        # Only the table's row count and the tokens are needed backward, not its values.
        ctx.tokens, ctx.table_rows = tokens, pre.shape[0]
        if tokens is not None:
            token_rows = TokenRows(pre, tokens)
            pre = token_rows.placeholder(memory.shape[0])
        memories, mlp_out, outputs, highpasses, acts, ctx.lane_weights = _forward(
            spec, keep, pre, memory, u, kappa, gain, *rest, tokens=token_rows
        )
        if spec.feedback:
            (values, crow, col, _, _, _, w_branch, w_y, beta, drop, _, output0) = rest[
                2 * spec.n_layers :
            ]
        ctx.spec, ctx.device_type = spec, memory.device.type
        # Outputs nobody used get None, not zeros, in the backward pass.
        ctx.set_materialize_grads(False)
        weights = [w for w, _ in layers]
        saved = [memory, u, kappa, gain, memories, mlp_out, *acts, *weights]
        if spec.feedback:
            saved += [values, crow, col, *rest[2 * spec.n_layers + 3 : 2 * spec.n_layers + 6]]
            saved += [w_branch, w_y, drop, outputs, output0]
        ctx.save_for_backward(*saved)
        ctx.shapes = [x.shape for x in (kappa, gain, *(b for _, b in layers))]
        if spec.feedback:
            ctx.shapes.append(beta.shape)
            return memories, mlp_out, outputs, highpasses
        return memories, mlp_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        # The forward ran with autocast off (`bank_recurrence`); a backward called inside
        # an autocast region (against torch's advice, but common) must too: its sparse
        # product has no bfloat16 kernel, and the loop must not round at every step.
        if torch.is_autocast_enabled(ctx.device_type):
            with torch.autocast(ctx.device_type, enabled=False):
                return _Recurrence._backward(ctx, *grads)
        return _Recurrence._backward(ctx, *grads)

    @staticmethod
    def _backward(ctx, grad_memories, grad_mlp_out, *grad_feedback):
        spec = ctx.spec
        n_layers = spec.n_layers
        memory, u, kappa, gain, memories, mlp_out, *rest = ctx.saved_tensors
        acts, weights = rest[:n_layers], rest[n_layers : 2 * n_layers]
        if spec.cpp:  # the C++ loops recompute tanh z_t where they need it
            grads = cpp_loop.backward(
                spec, ctx.saved_tensors, ctx.shapes, grad_memories, grad_mlp_out, grad_feedback,
                ctx.tokens, ctx.table_rows, want_pre=ctx.needs_input_grad[2],
                lane_weights=ctx.lane_weights,
            )  # fmt: skip
            return None, None, *grads
        proposals = torch.tanh(mlp_out)
        if spec.fused:
            fb = None
            if spec.feedback:
                # (values, crow_t, col_t, perm_t, w_branch, w_y, drop, outputs, output0)
                fb = rest[2 * n_layers :][0:1] + rest[2 * n_layers :][3:]
            saved = (memory, u, kappa, gain, memories, mlp_out, acts, weights)
            grads = (grad_memories, grad_mlp_out, *(grad_feedback or (None, None)))
            result = fused.backward_loop(spec, saved, grads, fb)
            grad_z, grad_acts, grad_m_total, carry = result[:4]
            if spec.feedback:
                grad_y, grad_r, grad_branches, carry_out, carry_highpass = result[4:]
        else:
            grad_z, grad_acts, grad_m_total, carry, *fb_grads = _eager_backward(
                spec, ctx.saved_tensors, grad_memories, grad_mlp_out, grad_feedback, proposals
            )
            if spec.feedback:
                grad_y, grad_r, grad_branches, carry_out, carry_highpass = fb_grads
        fb_grads = (
            (grad_y, grad_r, grad_branches, carry_out, carry_highpass) if spec.feedback else ()
        )
        return None, *_weight_grads(
            ctx, spec, ctx.saved_tensors, proposals, grad_z, grad_acts, grad_m_total, carry,
            *fb_grads,
        )  # fmt: skip


def _activation(name: str):
    """σ as a function returning a new tensor (never writing into its argument)."""
    functions = {
        "relu": torch.relu,
        "relu2": lambda a: torch.relu(a).square_(),
        "silu": torch.nn.functional.silu,
        "identity": lambda a: a,
    }
    return functions.get(name) or make_activation(name).forward


def _eager_forward(
    spec, pre, memory, u, kappa, gain, layers, acts, memories, mlp_out, feedback=None
):  # fmt: skip
    """The forward time loop, step by step: a few small batched matmuls per step, results
    written straight into the stored sequences (out=), scratch buffers allocated once.

    feedback: (S as CSR, w_branch, w_y, beta, drop, r̄ before the first step, o before
    the first step, outputs, highpasses) or None. Returns (outputs, highpasses) or None.
    """
    sigma = _activation(spec.activation)
    n_steps, n, batch, _ = pre.shape
    keep = bool(acts)
    m = memory
    proposal = memory.new_empty(memory.shape)
    if feedback is not None:
        synapses, w_branch, w_y, beta, drop, highpass, out, outputs, highpasses = feedback
        # Branch sums enter the first layer as (N, d_a, d_tree) @ (N, d_tree, B): the CSR
        # product's (N·d_tree, B) output is already that right operand, no transpose.
        w_branch_t = w_branch.transpose(1, 2).contiguous()
        branch_in = pre.new_empty(n, w_branch.shape[-1], batch)
        w_y_col, beta_col = w_y.unsqueeze(-1), beta.unsqueeze(-1)
        read = pre.new_empty(n, batch)
        r_col = pre.new_empty(n, batch, 1)
    for t in range(n_steps):
        first_out = (acts[0][t] if keep else None) if layers else mlp_out[t]
        a = torch.baddbmm(pre[t], m, u, out=first_out)
        if feedback is not None:
            q = out if drop is None else torch.mul(out, drop[t], out=read)
            c = synapses @ q
            torch.bmm(w_branch_t, c.view(n, spec.d_tree, batch), out=branch_in)
            a.add_(branch_in.transpose(1, 2))
        if layers:
            h = sigma(a)
            for layer, (w, b) in enumerate(layers[:-1], start=1):
                a = torch.baddbmm(b, h, w, out=acts[layer][t] if keep else None)
                h = sigma(a)
            z = torch.baddbmm(layers[-1][1], h, layers[-1][0], out=mlp_out[t])
        else:
            z = a
        m = torch.mul(m, kappa, out=memories[t]).addcmul_(gain, torch.tanh(z, out=proposal))
        if feedback is not None:
            r = torch.bmm(m, w_y_col, out=r_col).squeeze(-1)
            highpass = torch.lerp(highpass, r, 1.0 - spec.kappa_r, out=highpasses[t])
            out = torch.sub(r, highpass, out=outputs[t]).add_(beta_col).clamp_min_(0.0)
    if feedback is not None:
        return outputs, highpasses
    return None


def _eager_backward(spec, saved_tensors, grad_memories, grad_mlp_out, grad_feedback, proposals):
    """The reverse-time loop, step by step with small batched matmuls."""
    n_layers = spec.n_layers
    memory, u, kappa, gain, memories, mlp_out, *rest = saved_tensors
    acts, weights = rest[:n_layers], rest[n_layers : 2 * n_layers]
    n_steps, n, batch, _ = memories.shape
    dp_dz = gain * (1 - proposals.square())  # ∂m_t/∂z_t, for all steps at once
    slopes = [activation_derivative(spec.activation, a) for a in acts]
    weights_t = [w.transpose(1, 2) for w in weights]
    u_t = u.transpose(1, 2)

    grad_z = torch.empty_like(mlp_out)
    grad_acts = [torch.empty_like(a) for a in acts]
    grad_m_total = torch.empty_like(memories)
    carry = torch.zeros_like(memory)
    if spec.feedback:
        values, _, _, crow_t, col_t, perm_t, w_branch, w_y, drop, outputs = rest[2 * n_layers : -1]
        grad_outputs, grad_highpasses = grad_feedback
        synapses_t = _csr(crow_t, col_t, values[perm_t], (n, n * spec.d_tree))
        grad_y = torch.empty_like(outputs)
        grad_r = torch.empty_like(outputs)
        grad_branches = outputs.new_empty(n_steps, n, spec.d_tree, batch)
        carry_out = outputs.new_zeros(n, batch)
        carry_highpass = outputs.new_zeros(n, batch)
        w_y_row = w_y.unsqueeze(1)
        active = outputs > 0
    for t in range(n_steps - 1, -1, -1):
        g = grad_m_total[t]
        if grad_memories is None:
            g.copy_(carry)
        else:
            torch.add(grad_memories[t], carry, out=g)
        if spec.feedback:
            go = carry_out if grad_outputs is None else grad_outputs[t] + carry_out
            dy = torch.mul(go, active[t], out=grad_y[t])
            gh = carry_highpass - dy
            if grad_highpasses is not None:
                gh += grad_highpasses[t]
            dr = torch.add(dy, gh, alpha=1.0 - spec.kappa_r, out=grad_r[t])
            carry_highpass = gh.mul_(spec.kappa_r)
            g.addcmul_(dr.unsqueeze(-1), w_y_row)
        dz = torch.mul(g, dp_dz[t], out=grad_z[t])
        if grad_mlp_out is not None:
            dz += grad_mlp_out[t]
        da = dz
        if n_layers:
            dh = torch.bmm(dz, weights_t[-1])
            for layer in range(n_layers - 1, 0, -1):
                da = torch.mul(dh, slopes[layer][t], out=grad_acts[layer][t])
                dh = torch.bmm(da, weights_t[layer - 1])
            da = torch.mul(dh, slopes[0][t], out=grad_acts[0][t])
        carry = torch.baddbmm(g * kappa, da, u_t)
        if spec.feedback:
            dc = torch.bmm(w_branch, da.transpose(1, 2), out=grad_branches[t])
            carry_out = synapses_t @ dc.view(n * spec.d_tree, batch)
            if drop is not None:
                carry_out *= drop[t]
    if spec.feedback:
        return (grad_z, grad_acts, grad_m_total, carry, grad_y, grad_r, grad_branches,
                carry_out, carry_highpass)  # fmt: skip
    return grad_z, grad_acts, grad_m_total, carry


def _weight_grads(ctx, spec, saved_tensors, proposals, grad_z, grad_acts, grad_m_total, carry,
                  grad_y=None, grad_r=None, grad_branches=None, carry_out=None,
                  carry_highpass=None):  # fmt: skip
    """Every gradient the backward returns, from the loop's per-step gradients: the
    weight gradients as one batched product over all steps."""
    n_layers = spec.n_layers
    memory, _, _, _, memories, _, *rest = saved_tensors
    acts = rest[:n_layers]
    n_steps, n, batch, _ = memories.shape
    if spec.feedback:
        values, crow, col, *_, drop, outputs, output0 = rest[2 * n_layers :]

    def batched_outer(x, y):
        """Σ over steps and batch of xᵀ y per neuron: (N, x width, y width)."""
        return torch.einsum("tnbi,tnbj->nij", x, y)

    kappa_shape, gain_shape, *bias_shapes = ctx.shapes
    grad_pre = grad_acts[0] if n_layers else grad_z
    previous = torch.cat([memory.unsqueeze(0), memories[:-1]])
    grads = [
        grad_pre,
        carry,
        batched_outer(previous, grad_pre),
        (grad_m_total * previous).sum_to_size(kappa_shape),
        (grad_m_total * proposals).sum_to_size(gain_shape),
    ]
    sigma = make_activation(spec.activation)
    for layer in range(n_layers):
        grad_out = grad_acts[layer + 1] if layer + 1 < n_layers else grad_z
        grads += [
            batched_outer(sigma(acts[layer]), grad_out),
            grad_out.sum_to_size(bias_shapes[layer]),
        ]
    if spec.feedback:
        # What the recurrent synapses read (q_t) and their branch sums (c_t = S q_t),
        # rebuilt for all steps at once rather than stored step by step.
        reads = torch.cat([output0.unsqueeze(0), outputs[:-1]])
        if drop is not None:
            reads = reads * drop
        synapses = _csr(crow, col, values, (n * spec.d_tree, n))
        q_flat = reads.permute(0, 2, 1).reshape(-1, n)  # (T·B, N)
        branches = (synapses @ q_flat.t()).view(n, spec.d_tree, n_steps, batch)
        grad_values = None
        if ctx.needs_input_grad[7 + 2 * n_layers]:  # (spec, tokens, pre, …, gain, layers)
            # ∂L/∂S_ij = Σ_t,b dc_t[i, b] q_t[j, b], needed only at S's nonzeros: a
            # sampled matmul keeps this O(nnz · T · B) with no dense N·d_tree × N matrix.
            dc_flat = grad_branches.permute(1, 2, 0, 3).reshape(n * spec.d_tree, -1)
            grad_values = torch.sparse.sampled_addmm(synapses, dc_flat, q_flat, beta=0.0).values()
        grads += [
            grad_values,
            None,
            None,
            None,
            None,
            None,
            torch.einsum("njtb,tnbk->njk", branches, grad_pre),
            torch.einsum("tnb,tnbi->ni", grad_r, memories),
            grad_y.sum((0, 2)).sum_to_size(bias_shapes[-1]),
            None,
            carry_highpass,
            carry_out,
        ]
    return (None, *grads)


class Feedback(NamedTuple):
    """The recurrent part of a bank (see the module docstring), per call.

    values: (nnz,) entries of S in `pattern`'s order; pattern: its `SparsePattern`;
    d_tree: branches per neuron; w_branch: (N, d_tree, d_a) first-layer branch weights;
    w_y: (N, d_m) readout; beta: (N,) output offset; kappa_r: high-pass decay per step;
    drop: (T, N, B) recurrent dropout mask or None; highpass, output: (N, B) r̄ and o
    before the first step.
    """

    values: torch.Tensor
    pattern: SparsePattern
    d_tree: int
    w_branch: torch.Tensor
    w_y: torch.Tensor
    beta: torch.Tensor
    kappa_r: float
    drop: torch.Tensor | None
    highpass: torch.Tensor
    output: torch.Tensor


class TokenRows(NamedTuple):
    """A bank's pre-activation for token input, as `bank_recurrence`'s `pre`: row
    token · N + k of `table` (tokens · N, d_a) is neuron k's pre-activation for that token
    (bias included), and step t of sample b reads token `tokens[t, b]` ((T, B) int64).
    The C++ loops with feedback read the table in place, in training too, and sum its
    gradient (for Enwik8 at batch 64 the (T, N, B, d_a) copy is hundreds of MB); everything
    else takes `rows`."""

    table: torch.Tensor
    tokens: torch.Tensor

    def rows(self, n: int) -> torch.Tensor:
        """The (T, N, B, d_a) pre-activation: one row gather from the table."""
        n_steps, batch = self.tokens.shape
        neuron = torch.arange(n, device=self.tokens.device).view(1, n, 1)
        index = (self.tokens.unsqueeze(1) * n + neuron).flatten()
        return self.table.index_select(0, index).view(n_steps, n, batch, -1)

    def placeholder(self, n: int) -> torch.Tensor:
        """A (T, N, B, d_a) view of the table with the shape, dtype and device of `rows`
        (step and sample strides 0; its values are not the rows'): what the code around
        the loops reads of `pre`."""
        n_steps, batch = self.tokens.shape
        d_a = self.table.shape[-1]
        return self.table.as_strided((n_steps, n, batch, d_a), (0, d_a, 0, 1))


class BankRecurrence(NamedTuple):
    """What `bank_recurrence` returns, all (T, N, B, ·)."""

    memories: torch.Tensor  # (T, N, B, d_m) memory after every step
    mlp_out: torch.Tensor  # (T, N, B, d_m) MLP output z (scaled by 2/3), before tanh
    outputs: torch.Tensor | None  # (T, N, B) o_t, with feedback only
    highpass: torch.Tensor | None  # (T, N, B) r̄_t, with feedback only


BACKENDS = ("auto", "eager", "triton", "cpp")
_backend = {"name": "auto"}
_warned: set[str] = set()


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, run every recurrence on `name`'s time loop: "auto" (the Triton
    kernels for CUDA tensors when triton imports, the C++ loops for CPU tensors up to
    batch `CPP_AUTO_MAX_BATCH` when they build, else eager), "eager", "triton" (the
    kernels or a `UserError` saying why not; on CPU only under TRITON_INTERPRET=1) or
    "cpp" (the C++ loops or a `UserError`)."""
    if name not in BACKENDS:
        raise UserError(f"unknown recurrence backend {name!r}; choose one of {list(BACKENDS)}")
    old, _backend["name"] = _backend["name"], name
    try:
        yield
    finally:
        _backend["name"] = old


def _use_fused(spec: _Spec, pre, kappa, gain, layers) -> bool:
    name = _backend["name"]
    if name in ("eager", "cpp") or (name == "auto" and pre.device.type != "cuda"):
        return False
    reason = fused.why_not(spec, pre, kappa, gain, layers)
    if reason is None:
        return True
    if name == "triton":
        raise UserError(f"recurrence backend 'triton' cannot run here: {reason}")
    if reason not in _warned:  # a CUDA run on the slow path should say so, once
        _warned.add(reason)
        warnings.warn(f"elmnet: the recurrence runs eagerly on CUDA: {reason}", stacklevel=3)
    return False


# "auto" takes the C++ loops up to this batch, with and without feedback. Measured per
# CPU-second, 1 thread, shared machine: without feedback (a neuron; the network's
# readout) faster than eager at batch 8, 32 and 128 on the NeuronIO neuron (forward 14×,
# 4.9×, 1.9×; fwd+bwd 6.3×, 2.5×, 1.07×); with feedback (the network) at batch 64 and
# 128 on SHD-Adding (forward 1.69×, 1.42×; training 1.30×, 1.20×), on the small sweep
# config (1.71×, 1.51×; 1.73×, 1.44×) and at 64 on Enwik8 (1.19×, 1.18×). Larger
# batches are unmeasured and stay with the eager loop's batched BLAS products.
CPP_AUTO_MAX_BATCH = 128


def cpp_chosen(x: torch.Tensor, activation: str = "identity") -> bool:
    """Whether the current backend (`use_backend`) runs work on `x` in the C++ loops:
    under "auto" and "cpp" when x is a float32/float64 CPU tensor and the extension builds
    ("auto" otherwise stays eager, with one warning when the build failed; "cpp" raises
    a `UserError` saying why). The one place for this choice: the recurrence, the leaky
    trace (`elmnet.ops.exp_trace`) and the spike product (`elmnet.ops.spike_matmul`)."""
    name = _backend["name"]
    if name not in ("auto", "cpp"):
        return False
    reason = cpp_loop.why_not(x, activation)
    if reason is None and cpp_loop.extension() is None:
        reason = cpp_loop.build_error()
        if name == "auto" and reason not in _warned:  # once per process, never a traceback
            _warned.add(reason)
            warnings.warn(f"elmnet: the C++ loops cannot run, running eagerly: {reason}",
                          stacklevel=3)  # fmt: skip
    if reason is not None and name == "cpp":
        raise UserError(f"recurrence backend 'cpp' cannot run here: {reason}")
    return reason is None


def _use_cpp(spec: _Spec, pre) -> bool:
    if _backend["name"] == "auto" and pre.shape[2] > CPP_AUTO_MAX_BATCH:
        return False
    return cpp_chosen(pre, spec.activation)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Under mixed precision the recurrence still runs in float32: a memory that integrates
    # over hundreds of steps must not round at every step, and the matmuls are tiny.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def bank_recurrence(
    activation: str,
    pre: torch.Tensor,
    memory: torch.Tensor,
    u: torch.Tensor,
    kappa: torch.Tensor,
    gain: torch.Tensor,
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    feedback: Feedback | None = None,
) -> BankRecurrence:
    """Run the memory recurrence of N neurons over all steps; differentiable in every
    floating-point tensor argument.

    Args:
        activation: MLP activation name (relu, silu, relu2, identity).
        pre: (T, N, B, d_a) first-layer pre-activation from the feed-forward input, bias
            included; or, for token input, its `TokenRows`.
        memory: (N, B, d_m) memory before the first step.
        u: (N, d_m, d_a) memory-to-first-layer weight, decay already folded in.
        kappa: memory decay per step, broadcastable to (N, B, d_m).
        gain: weight of the tanh proposal in the update, broadcastable to (N, B, d_m).
        layers: the MLP's later layers as (weight (N, in, out), bias broadcastable to
            (N, B, out)); the last one maps to d_m and is pre-scaled by 2/3. Empty for a
            linear MLP (then `pre` and `u` carry the 2/3).
        feedback: the recurrent synapses and output of a network layer, or None.
    """
    token_rows = pre if isinstance(pre, TokenRows) else None
    if token_rows is not None:
        pre = token_rows.placeholder(memory.shape[0])
    dtype = _compute_dtype(pre.dtype)
    tensors = [pre, memory, u, kappa, gain, *(x for layer in layers for x in layer)]
    fb_spec = ()
    if feedback is not None:
        fb, p = feedback, feedback.pattern
        fb_spec = (True, float(fb.kappa_r), fb.d_tree)
        tensors += [fb.values, p.crow, p.col, p.crow_t, p.col_t, p.perm_t, fb.w_branch]
        tensors += [fb.w_y, fb.beta, fb.drop, fb.highpass, fb.output]
    spec = _Spec(activation, len(layers), *fb_spec)
    if _use_fused(spec, tensors[0], tensors[3], tensors[4], layers):
        spec = _Spec(activation, len(layers), *fb_spec, fused=True)
    elif _use_cpp(spec, tensors[0]):
        spec = _Spec(activation, len(layers), *fb_spec, cpp=True)
    if token_rows is not None and not (spec.cpp and spec.feedback):
        tensors[0], token_rows = token_rows.rows(memory.shape[0]), None
    if any(x is not None and x.is_floating_point() and x.dtype != dtype for x in tensors):
        if token_rows is not None:  # the table read in place must be in the loops' dtype
            token_rows = token_rows._replace(table=token_rows.table.to(dtype))
            tensors[0] = token_rows.placeholder(memory.shape[0])
        tensors = [x.to(dtype) if x is not None and x.is_floating_point() else x for x in tensors]
    # Under autocast the recurrence's own ops (the eager loop) must not downcast.
    autocast = torch.is_autocast_enabled(pre.device.type)
    with torch.autocast(pre.device.type, enabled=False) if autocast else contextlib.nullcontext():
        if torch.is_grad_enabled():
            if token_rows is None:
                result = _Recurrence.apply(spec, None, *tensors)
            else:  # the table is what gets the gradient
                result = _Recurrence.apply(spec, token_rows.tokens, token_rows.table, *tensors[1:])
        else:
            # Without grad mode (inference, no_grad) nothing is kept for a backward pass:
            # the loops run directly, without the autograd function (whose bookkeeping
            # over a score of arguments is a good part of a small network's call; it would
            # also report parameters as needing grad, and keep activations for them).
            *result, _, _ = _forward(spec, False, *tensors, tokens=token_rows)
    if feedback is None:
        return BankRecurrence(*result[:2], None, None)
    return BankRecurrence(*result)


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
    """Run one neuron's memory recurrence over all steps; differentiable in every tensor.

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
    layers = [(w.unsqueeze(0), b) for w, b in [*hidden, (w_out, b_out)]]
    result = bank_recurrence(
        activation,
        pre.transpose(0, 1).unsqueeze(1).contiguous(),
        memory.unsqueeze(0),
        u.unsqueeze(0),
        kappa,
        gain,
        layers,
    )
    return result.memories.squeeze(1).transpose(0, 1)
