"""The C++ leaky trace and spike product (elmnet.cpp_loop.trace, .spike_product) against
float64 loops, the dense product and finite differences, and the neuron on them against
the eager (parallel scan, dense product) path.

Tolerances: float64 within 1e-12 (the sums differ from the loops only in order and fused
multiply-adds); float32 within 1e-5 relative and 1e-5 of the largest entry (a trace over
≤ 40 steps and a product over ≤ 40 nonzeros per row, each rounding once per term).
The extension is compiled once per session into the toolkit's cache (see
tests/test_recurrence_cpp.py); skipped only where no C++ compiler exists.
"""

import pytest
import torch

from elmnet import cpp_loop
from elmnet.config import ELMConfig
from elmnet.cpp_loop import _ptr, _typed
from elmnet.neuron import ELMNeuron
from elmnet.ops import SPIKE_MAX_DENSITY, exp_trace, spike_matmul
from elmnet.recurrence import use_backend
from tests.conftest import NO_COMPILER
from tests.test_elm_neuron import randomise

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread", "cpp_extension"),
    pytest.mark.skipif(NO_COMPILER, reason="no C++ compiler (c++ or g++) on PATH"),
]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def close(actual, expected):
    tol = TOL[actual.dtype]
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=tol, atol=tol * scale)


def loop_trace(u, kappa, init):
    """b_t = κ b_{t−1} + u_t step by step in float64."""
    u = u.double()
    b = torch.zeros_like(u[:, 0]) if init is None else init.double()
    out = []
    for t in range(u.shape[1]):
        b = kappa.double() * b + u[:, t]
        out.append(b)
    return torch.stack(out, 1)


def trace_inputs(batch, n_steps, channels, per_channel, with_init, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, n_steps, channels, generator=g, dtype=torch.float64)
    shape = (channels,) if per_channel else ()
    kappa = torch.rand(shape, generator=g, dtype=torch.float64)
    init = torch.randn(batch, channels, generator=g, dtype=torch.float64) if with_init else None
    cast = [None if t is None else t.to(dtype) for t in (u, kappa, init)]
    return cast


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch, n_steps", [(1, 1), (1, 37), (3, 2), (4, 40)])
@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per-channel"])
@pytest.mark.parametrize("with_init", [False, True], ids=["zeros", "init"])
def test_trace_matches_float64_loop(dtype, batch, n_steps, per_channel, with_init):
    u, kappa, init = trace_inputs(batch, n_steps, 5, per_channel, with_init, dtype)
    expected = loop_trace(u, kappa, init)
    close(cpp_loop.trace(u, kappa, init), expected)
    with use_backend("auto"):  # what the toolkit calls picks the C++ pass on the CPU
        close(exp_trace(u, kappa, init), expected)
    with use_backend("eager"):  # the parallel scan, still there for CUDA
        close(exp_trace(u, kappa, init), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per-channel"])
def test_trace_gradients_match_float64_loop(dtype, per_channel):
    """∂/∂u, ∂/∂κ and ∂/∂init of a random projection, against autograd through the loop."""
    inputs = trace_inputs(3, 23, 4, per_channel, True, dtype, seed=1)
    proj = torch.randn(3, 23, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    ref = [t.detach().double().requires_grad_() for t in inputs]
    (cpp_loop.trace(*leaves) * proj.to(dtype)).sum().backward()
    (loop_trace(*ref) * proj).sum().backward()
    for mine, theirs in zip(leaves, ref, strict=True):
        close(mine.grad, theirs.grad)


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per-channel"])
@pytest.mark.parametrize("with_init", [False, True], ids=["zeros", "init"])
def test_trace_gradcheck(per_channel, with_init):
    u, kappa, init = trace_inputs(2, 6, 3, per_channel, with_init, torch.float64, seed=3)
    args = [t.requires_grad_() for t in (u, kappa, init) if t is not None]

    def f(*a):
        return cpp_loop.trace(a[0], a[1], a[2] if with_init else None)

    assert torch.autograd.gradcheck(f, tuple(args))


def test_trace_without_kappa_gradient_keeps_no_trace_copy():
    """κ as a plain float (every caller today): u and init still get exact gradients."""
    u, _, init = trace_inputs(2, 9, 3, False, True, torch.float64, seed=4)
    u.requires_grad_(), init.requires_grad_()
    with use_backend("cpp"):
        b = exp_trace(u, 0.8, init)
    b.sum().backward()
    ur, ir = u.detach().clone().requires_grad_(), init.detach().clone().requires_grad_()
    loop_trace(ur, torch.tensor(0.8, dtype=torch.float64), ir).sum().backward()
    close(u.grad, ur.grad)
    close(init.grad, ir.grad)


def dense_product_case(x, n_out, seed):
    """A float64 weight m (n_in × n_out) and projection, and the dense product x @ m with
    ∂/∂m of (x @ m · proj).sum() in md.grad: the reference of the spike product."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(x.shape[1], n_out, generator=g, dtype=torch.float64)
    proj = torch.randn(x.shape[0], n_out, generator=g, dtype=torch.float64)
    md = m.clone().requires_grad_()
    expected = x.double() @ md
    (expected * proj).sum().backward()
    return m, proj, expected, md


def spikes(rows, n_in, density, dtype, seed=0, values="signs"):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, n_in, generator=g) < density
    if values == "signs":
        v = torch.where(torch.rand(rows, n_in, generator=g) < 0.5, -1.0, 1.0)
    else:
        v = torch.randn(rows, n_in, generator=g)
    return (mask * v).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "rows, n_in, n_out, density, values",
    [
        (50, 37, 5, 0.05, "signs"),  # n_in not a whole number of 64-byte blocks
        (200, 1278, 45, 0.01, "signs"),  # NeuronIO sizes
        (30, 64, 17, 0.2, "real"),  # any values, not only ±1
        (7, 16, 3, 0.0, "signs"),  # no spike at all
    ],
)
def test_spike_product_matches_dense(dtype, rows, n_in, n_out, density, values):
    """Output and ∂/∂x, ∂/∂m of a random projection against the dense product in float64."""
    x = spikes(rows, n_in, density, dtype, values=values)
    g = torch.Generator().manual_seed(1)
    m = torch.randn(n_in, n_out, generator=g, dtype=torch.float64)
    proj = torch.randn(rows, n_out, generator=g, dtype=torch.float64)
    xs, ms = x.clone().requires_grad_(), m.to(dtype).clone().requires_grad_()
    y = cpp_loop.spike_product(xs, ms, max_density=1.0)
    (y * proj.to(dtype)).sum().backward()
    xd, md = x.double().requires_grad_(), m.clone().requires_grad_()
    expected = xd @ md
    (expected * proj).sum().backward()
    close(y.detach(), expected.detach())
    close(ms.grad, md.grad)
    close(xs.grad, xd.grad)


def test_spike_product_too_dense_takes_the_dense_product():
    """Past `max_density` the C++ loop stops and the dense product runs: same result and
    ∂/∂m (only what is exact differs: nothing)."""
    x = spikes(40, 30, 0.5, torch.float64, values="real")
    m = torch.randn(30, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ms, md = m.clone().requires_grad_(), m.clone().requires_grad_()
    y = cpp_loop.spike_product(x, ms, max_density=0.1)
    y.square().sum().backward()
    expected = x @ md
    expected.square().sum().backward()
    close(y.detach(), expected.detach())
    close(ms.grad, md.grad)


def test_spike_matmul_picks_by_density(monkeypatch):
    """Sparse input goes through the C++ product, dense input and backend "eager" never."""
    calls = []
    real = cpp_loop.spike_product
    monkeypatch.setattr(cpp_loop, "spike_product", lambda *a: calls.append(1) or real(*a))
    m = torch.randn(100, 8, dtype=torch.float64)
    sparse = spikes(2 * 128, 100, SPIKE_MAX_DENSITY / 3, torch.float64).view(2, 128, 100)
    dense = spikes(2 * 128, 100, 0.5, torch.float64).view(2, 128, 100)
    with use_backend("auto"):
        close(spike_matmul(sparse, m), sparse @ m)
        assert calls == [1]
        close(spike_matmul(dense, m), dense @ m)
        assert calls == [1]
    with use_backend("eager"):
        close(spike_matmul(sparse, m), sparse @ m)
    assert calls == [1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_neuron_on_cpp_trace_and_spikes_matches_eager(dtype):
    """The NeuronIO-routed neuron on spike input: outputs, final state and the gradient of
    every parameter (θ_s included) agree between "auto" (C++ trace, spike product, C++
    recurrence) and "eager" (scan, dense product, eager recurrence)."""
    cfg = ELMConfig(d_in=40, d_m=4, d_tree=5, d_brch=8, routing="neuronio", activation="relu")
    model = randomise(ELMNeuron(cfg), seed=2).to(dtype)
    x = spikes(3 * 50, 40, 0.02, dtype, seed=3).view(3, 50, 40)
    init = model.initial_state(3, x)
    init = init._replace(branch=torch.rand(3, 5, generator=torch.Generator().manual_seed(4)))
    init = init._replace(branch=init.branch.to(dtype))
    results = {}
    for backend in ("eager", "auto"):
        model.zero_grad()
        with use_backend(backend):
            y, state = model(x, init)
        y.square().mean().backward()
        results[backend] = (y.detach(), state, {n: p.grad for n, p in model.named_parameters()})
    (y_e, s_e, g_e), (y_a, s_a, g_a) = results["eager"], results["auto"]
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    torch.testing.assert_close(y_a, y_e, rtol=tol, atol=tol)
    torch.testing.assert_close(s_a.branch, s_e.branch, rtol=tol, atol=tol)
    torch.testing.assert_close(s_a.memory, s_e.memory, rtol=tol, atol=tol)
    for name, grad in g_e.items():
        scale = max(grad.abs().max().item(), 1.0)
        torch.testing.assert_close(g_a[name], grad, rtol=tol, atol=tol * scale, msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("x_dtype", [torch.int8, torch.bool])
@pytest.mark.parametrize("n_in", [130, 1278])  # 64-byte blocks of int8 and a remainder
def test_spike_product_reads_int8_and_bool(dtype, x_dtype, n_in):
    """Integer spike input: the same product and ∂/∂m as the float64 dense product of its
    values, also when it is too dense and the dense product runs."""
    rows, n_out = 60, 9
    x = spikes(rows, n_in, 0.02, torch.float64, seed=6)
    if x_dtype == torch.bool:
        x = x.abs()
    m, proj, expected, md = dense_product_case(x, n_out, seed=7)
    for max_density in (1.0, 0.001):
        ms = m.to(dtype).clone().requires_grad_()
        y = cpp_loop.spike_product(x.to(x_dtype), ms, max_density)
        (y * proj.to(dtype)).sum().backward()
        assert y.dtype == dtype
        close(y.detach(), expected.detach())
        close(ms.grad, md.grad)


def test_neuron_takes_int8_spikes():
    """int8 and bool input give the float input's outputs and θ_s gradient."""
    cfg = ELMConfig(d_in=40, d_m=4, d_tree=5, d_brch=8, routing="neuronio")
    model = randomise(ELMNeuron(cfg), seed=8).double()
    x = spikes(2 * 30, 40, 0.02, torch.float64, seed=9).view(2, 30, 40)
    results = []
    for inputs in (x, x.to(torch.int8), x.abs().to(torch.bool), x.abs()):
        model.zero_grad()
        y, state = model(inputs)
        y.square().mean().backward()
        assert y.dtype == torch.float64 and state.memory.dtype == torch.float64
        results.append((y.detach(), model.theta_s.grad.clone()))
    for i, j in ((0, 1), (2, 3)):
        torch.testing.assert_close(results[i][0], results[j][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(results[i][1], results[j][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float64, torch.int8])
def test_spike_product_stops_past_exactly_its_capacity(x_dtype):
    """The C++ product records at most `capacity` nonzeros: exactly that many still take
    the sparse path (all recorded, in row order), one fewer returns −1 (dense fallback).
    n_in 200 leaves every row a partial last block."""
    g = torch.Generator().manual_seed(5)
    rows, n_in, n_out = 9, 200, 7
    x = torch.zeros(rows, n_in, dtype=torch.float64)
    flat = torch.randperm(rows * n_in, generator=g)[:150]
    x.view(-1)[flat] = torch.randint(1, 3, (150,), generator=g).double()
    x = x.to(x_dtype)
    m_dtype = torch.float64 if x_dtype == torch.float64 else torch.float32
    m = torch.randn(n_in, n_out, generator=g, dtype=torch.float64).to(m_dtype)
    function = _typed("elm_spike_product", m_dtype, x_dtype)
    for capacity, expected in ((150, 150), (149, -1), (400, 150)):
        y = torch.empty(rows, n_out, dtype=m_dtype)
        crow = torch.empty(rows + 1, dtype=torch.int64)
        col = torch.empty(capacity, dtype=torch.int32)
        nnz = function(rows, n_in, n_out, _ptr(x), _ptr(m), _ptr(y), _ptr(crow), _ptr(col),
                       capacity)  # fmt: skip
        assert nnz == expected
        if nnz > 0:
            rows_of, cols_of = torch.nonzero(x, as_tuple=True)
            assert torch.equal(col[:nnz].long(), cols_of)
            assert torch.equal(crow.diff(), torch.bincount(rows_of, minlength=rows))
            close(y, x.double() @ m.double())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("x_dtype", ["float", torch.int8], ids=["float", "int8"])
@pytest.mark.parametrize("n_out", [240, 960, 1000, 13, 16, 80])
def test_spike_product_wide_rows_match_dense(dtype, x_dtype, n_out):
    """Rows wider than one register chunk (4 vectors forward, 8 for ∂/∂m): the ELM Network's
    N · d_a (240, 960: whole vectors, M read in place), widths with a partial last float32
    vector (1000, 13: M padded, G's last vector read partly), and chunk boundaries (16
    floats: one float32 vector; 80: five, a chunk and one more; float64 has half the lanes).
    Output and ∂/∂m against the dense product in float64; float64 within 1e-10, float32
    within `TOL` (≤ 40 nonzeros per row and per column, one rounding per term)."""
    rows, n_in = 70, 300
    x = spikes(rows, n_in, 0.05, torch.float64, seed=10, values="signs")
    x[3] *= 2  # a spike count above one
    x[5] = 0  # a row without spikes: zeros out, nothing added to ∂/∂m
    m, proj, expected, md = dense_product_case(x, n_out, seed=11)
    ms = m.to(dtype).clone().requires_grad_()
    y = cpp_loop.spike_product(x.to(dtype if x_dtype == "float" else x_dtype), ms, 1.0)
    (y * proj.to(dtype)).sum().backward()
    assert y.dtype == dtype and ms.grad.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else TOL[dtype]
    for actual, wanted in ((y.detach(), expected.detach()), (ms.grad, md.grad)):
        scale = max(wanted.abs().max().item(), 1.0)
        torch.testing.assert_close(actual, wanted.to(dtype), rtol=tol, atol=tol * scale)
    assert torch.all(y[5] == 0)
