"""The C++ time loops of the memory recurrence (elmnet.cpp_loop) against the eager loops,
the float64 reference neuron and finite differences.

Tolerances: float64 outputs and every gradient within 1e-10 relative (and 1e-10 of the
largest entry of the same tensor, absolute); float32 within 1e-4 relative and 1e-4 of the
largest entry absolute. The two paths sum the small matrix products in different orders
(and the C++ loops fuse multiply-adds); nothing else differs. In float32 a weight
gradient sums B·T products through a recurrence that amplifies rounding, so two correct
orders differ by ~1e-5 of the largest entry at the NeuronIO sizes (d_a 40, d_m 20).

The extension is compiled once per test session (module fixture; about 5 s of CPU, 1–1.5
min of wall clock on a 2-core machine busy with other work) into the toolkit's cache; a
later session loads it without compiling. Skipped only where no C++ compiler exists.
"""

import warnings
from pathlib import Path

import pytest
import torch

from elmbridge.errors import UserError
from elmnet import cpp_loop
from elmnet.config import ELMConfig
from elmnet.network import ELMNetwork, ELMNetworkConfig, ELMNetworkState
from elmnet.neuron import ELMNeuron
from elmnet.recurrence import (
    CPP_AUTO_MAX_BATCH,
    Feedback,
    bank_recurrence,
    memory_recurrence,
    sparse_pattern,
    use_backend,
)
from elmnet.reference import reference_forward
from tests.conftest import NO_COMPILER
from tests.test_elm_neuron import CONFIGS, module_params, randomise

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread", "cpp_extension"),
    pytest.mark.skipif(NO_COMPILER, reason="no C++ compiler (c++ or g++) on PATH"),
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def assert_close(actual, expected, dtype):
    tol = TOL[dtype]
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def run_both(fn, inputs, seed=1):
    """fn(**inputs) on the eager and the C++ loops: (outputs, gradients of a random
    projection of all outputs) for each."""
    results = {}
    for backend in ("eager", "cpp"):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        with use_backend(backend):
            outputs = fn(**leaves)
        g = torch.Generator().manual_seed(seed)
        proj = [torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype) for y in outputs]
        sum((y * p).sum() for y, p in zip(outputs, proj, strict=True)).backward()
        results[backend] = ([y.detach() for y in outputs], {k: v.grad for k, v in leaves.items()})
    return results["eager"], results["cpp"]


def check_both(fn, inputs, dtype):
    (y_e, g_e), (y_c, g_c) = run_both(fn, inputs)
    for a, b in zip(y_c, y_e, strict=True):
        assert_close(a, b, dtype)
    for name in g_e:
        assert g_c[name] is not None, name
        assert_close(g_c[name], g_e[name], dtype)


def neuron_inputs(batch, n_steps, d_a, d_m, n_hidden, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    inputs = dict(
        pre=randn(batch, n_steps, d_a),
        memory=randn(batch, d_m),
        u=randn(d_m, d_a, scale=0.5),
        kappa=torch.rand(d_m, generator=g, dtype=torch.float64).to(dtype),
        gain=torch.rand(d_m, generator=g, dtype=torch.float64).to(dtype),
        w_out=randn(d_a, d_m, scale=0.5),
        b_out=randn(d_m),
    )
    for i in range(n_hidden):
        inputs[f"v{i}"] = randn(d_a, d_a, scale=0.4)
        inputs[f"b{i}"] = randn(d_a)
    return inputs


def neuron_fn(activation, n_hidden):
    def fn(**kw):
        hidden = [(kw.pop(f"v{i}"), kw.pop(f"b{i}")) for i in range(n_hidden)]
        return (memory_recurrence(activation, **kw, hidden=hidden),)

    return fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "activation, n_hidden, batch, n_steps, d_a, d_m",
    [
        ("relu", 0, 1, 30, 6, 3),
        ("relu", 0, 8, 24, 40, 20),
        ("silu", 1, 3, 20, 7, 4),
        ("relu2", 2, 2, 16, 5, 2),
        ("identity", 1, 5, 12, 4, 1),
    ],
)
def test_neuron_matches_eager(dtype, activation, n_hidden, batch, n_steps, d_a, d_m):
    """One neuron: outputs and the gradients of every input and weight."""
    inputs = neuron_inputs(batch, n_steps, d_a, d_m, n_hidden, dtype)
    check_both(neuron_fn(activation, n_hidden), inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_wide_neuron_matches_eager(dtype):
    """Widths over 4 vectors (the tiles' column blocks, a padded remainder) and a batch
    of 13 (tiles of 8, 4 and 1 rows). Weights scaled by 1/4 so that the gain
    through a layer stays near 1: at the default scales (gain ≈ 4 at width 70) the
    recurrence amplifies float32 rounding past 1e-4 on either path."""
    inputs = neuron_inputs(13, 10, 70, 37, 1, dtype)
    for name in ("u", "w_out", "v0"):
        inputs[name] = inputs[name] / 4
    check_both(neuron_fn("relu", 1), inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "n, batch, hidden", [(4, 3, 0), (19, 3, 0), (19, 9, 0), (21, 2, 6)]
)  # fmt: skip
def test_bank_without_feedback_matches_eager(dtype, n, batch, hidden):
    """N neurons with a linear MLP (the network's readout) or one hidden layer, a
    per-batch decay and both outputs (memories and MLP outputs) feeding the loss. From
    half a vector of neurons (8 float32, 4 float64) at up to half a vector of samples the
    C++ side takes the loop with neurons across the lanes (N 19 and 21; also N 4 in
    float64), else the register-tiled one (N 4 in float32, batch 9)."""
    g = torch.Generator().manual_seed(3)
    n_steps, d_m = 9, 3
    d_a = hidden or d_m

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    inputs = dict(
        pre=rand(n_steps, n, batch, d_a),
        memory=rand(n, batch, d_m),
        u=0.5 * rand(n, d_m, d_a),
        kappa=torch.rand(n, batch, d_m, generator=g, dtype=torch.float64).to(dtype),
        gain=torch.rand(d_m, generator=g, dtype=torch.float64).to(dtype),
    )
    if hidden:
        inputs.update(w=0.5 * rand(n, hidden, d_m), b=0.3 * rand(n, 1, d_m))

    def fn(w=None, b=None, **kw):
        layers = [] if w is None else [(w, b)]
        result = bank_recurrence("relu" if hidden else "identity", layers=layers, **kw)
        return result.memories, result.mlp_out

    check_both(fn, inputs, dtype)


def tiny_network(dtype, **overrides) -> ELMNetwork:
    base = dict(d_in=5, n_out=3, N=6, d_m=2, d_tree=3, d_brch=2, rho=0.5, tau_min=1.0,
                tau_max=20.0, tau_r=3.0, seed=1, dropout_in=0.0, dropout_rec=0.0)  # fmt: skip
    net = ELMNetwork(ELMNetworkConfig(**{**base, **overrides})).to(dtype)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # nonzero β and larger weights, so ReLUs switch and tanh bends
        net.hidden.beta.copy_(torch.rand(net.config.N, generator=g) - 0.3)
        for p in net.parameters():
            p.mul_(1.0 + torch.rand(p.shape, generator=g, dtype=torch.float64).to(dtype))
    return net


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "overrides",
    [
        dict(dropout_rec=0.3),
        dict(rho=1.0, d_mlp=3, N=4),
        dict(rho=0.0, activation="silu"),
        dict(dynamics="v1", activation="relu", dropout_rec=0.5),
    ],
    ids=["dropout", "all-recurrent", "no-recurrent-synapse", "v1-relu"],
)
def test_network_matches_eager(dtype, overrides):
    """The recurrent bank (sparse gather, dropout mask, high-pass ReLU output) and the
    readout bank: outputs and every gradient (parameters, input, all carried state)."""
    net = tiny_network(dtype, **overrides).train()
    c = net.config
    g = torch.Generator().manual_seed(4)
    batch = 3

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)

    inputs = dict(
        x=rand(batch, 7, c.d_in) * 0.4,
        memory=rand(batch, c.N, c.d_m) * 2 - 1,
        highpass=rand(batch, c.N) - 0.5,
        output=rand(batch, c.N),
        readout=rand(batch, c.n_out, c.readout_d_m) * 2 - 1,
    )

    results = {}
    for backend in ("eager", "cpp"):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks on both paths
        with use_backend(backend):
            out = net.run(leaves["x"], ELMNetworkState(*(leaves[k] for k in list(inputs)[1:])))
        outputs = (out.logits, out.activity, *out.mlp_out, *out.state)
        gen = torch.Generator().manual_seed(5)
        loss = sum((y * torch.randn(y.shape, generator=gen).to(dtype)).sum() for y in outputs)
        loss.backward()
        grads = {k: v.grad for k, v in leaves.items()}
        grads.update({n: p.grad.clone() for n, p in net.named_parameters()})
        results[backend] = [y.detach() for y in outputs], grads
    (y_e, g_e), (y_c, g_c) = results["eager"], results["cpp"]
    for a, b in zip(y_c, y_e, strict=True):
        assert_close(a, b, dtype)
    assert (y_e[1] > 0).any() and (y_e[1] == 0).any()  # ReLUs on and off
    for name in g_e:
        assert g_c[name] is not None, name
        assert_close(g_c[name], g_e[name], dtype)


@pytest.mark.parametrize("dynamics", ["v1", "v2"])
@pytest.mark.parametrize("cfg", CONFIGS[:4])
def test_neuron_matches_float64_reference(cfg, dynamics):
    """The ELM neuron on the C++ loops against the literal float64 step loop."""
    model = randomise(ELMNeuron(ELMConfig(dynamics=dynamics, **cfg)).double(), seed=1)
    x = torch.randn(3, 40, cfg["d_in"], generator=torch.Generator().manual_seed(2)).double()
    with use_backend("cpp"):
        y, _ = model(x)
    torch.testing.assert_close(y, reference_forward(*module_params(model), x), rtol=1e-10,
                               atol=1e-10)  # fmt: skip


def test_network_matches_float64_reference():
    from tests.test_elm_network import reference_forward as network_reference

    net = tiny_network(torch.float64).eval()
    x = torch.rand(2, 12, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with use_backend("cpp"):
        logits, _ = net(x * 0.4)
    torch.testing.assert_close(logits, network_reference(net, x * 0.4), rtol=1e-10, atol=1e-10)


def test_gradcheck_neuron():
    inputs = neuron_inputs(2, 5, 3, 2, 1, torch.float64, seed=7)
    names = list(inputs)
    fn = neuron_fn("silu", 1)

    def f(*args):
        return fn(**dict(zip(names, args, strict=True)))[0]

    args = tuple(v.requires_grad_() for v in inputs.values())
    with use_backend("cpp"):
        assert torch.autograd.gradcheck(f, args)


def test_gradcheck_network():
    """Finite differences through the feedback bank: every parameter and state input."""
    net = tiny_network(torch.float64, N=3, d_brch=2, rho=0.7).eval()
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 4, 5, generator=g, dtype=torch.float64) * 0.4

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    state = [rand(2, 3, 2) - 0.5, rand(2, 3) - 0.5, rand(2, 3) + 0.1,
             rand(2, 3, net.config.readout_d_m)]  # fmt: skip
    params = dict(net.named_parameters())

    def f(*args):
        tensors = dict(zip(params, args[: len(params)], strict=True))
        out = torch.func.functional_call(
            net, tensors, (args[len(params)], ELMNetworkState(*args[len(params) + 1 :]))
        )
        return out[0]

    args = tuple(p.detach().clone().requires_grad_() for p in params.values())
    args += tuple(t.requires_grad_() for t in [x, *state])
    with use_backend("cpp"):  # fast mode: random directions, not one input at a time
        assert torch.autograd.gradcheck(f, args, fast_mode=True)


def test_auto_falls_back_with_one_warning(monkeypatch):
    """A failed build: "auto" warns once and runs eagerly, "cpp" says why, "eager" never
    touches the C++ loops."""
    inputs = neuron_inputs(2, 4, 3, 2, 0, torch.float64)
    fn = neuron_fn("relu", 0)
    with use_backend("eager"):
        expected = fn(**inputs)[0]
    monkeypatch.setitem(cpp_loop._state, "module", None)
    monkeypatch.setitem(cpp_loop._state, "error", "building recurrence.cpp failed: broken")
    monkeypatch.setattr("elmnet.recurrence._warned", set())
    with warnings.catch_warnings(record=True) as caught, use_backend("auto"):
        warnings.simplefilter("always")
        first, second = fn(**inputs)[0], fn(**inputs)[0]
    messages = [str(w.message) for w in caught]
    assert messages == [
        "elmnet: the C++ loops cannot run, running eagerly: building recurrence.cpp failed: broken"
    ]
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
    with use_backend("cpp"), pytest.raises(UserError, match="'cpp' cannot run here: building"):
        fn(**inputs)


def test_eager_is_forced_and_auto_picks_cpp(monkeypatch):
    inputs = neuron_inputs(2, 4, 3, 2, 0, torch.float64)
    fn = neuron_fn("relu", 0)
    with use_backend("cpp"):
        expected = fn(**inputs)[0]
    with use_backend("auto"):
        torch.testing.assert_close(fn(**inputs)[0], expected, rtol=0, atol=0)

    def refuse(*args, **kwargs):
        raise AssertionError("the C++ loop ran under use_backend('eager')")

    monkeypatch.setattr(cpp_loop, "forward_loop", refuse)
    with use_backend("eager"):
        fn(**inputs)
    # Above CPP_AUTO_MAX_BATCH "auto" stays on the eager loop's batched products.
    big = neuron_inputs(CPP_AUTO_MAX_BATCH + 1, 3, 3, 2, 0, torch.float64)
    with use_backend("auto"):
        fn(**big)


def test_float32_tanh_accuracy():
    """The vectorised float32 tanh of the C++ loops (`cpp_loop.tanh_f32`, used with and
    without feedback) against float64 tanh of the same float32 inputs: within 3e-7
    relative and 3 ulp everywhere (measured 1.5e-7, ≈1.3 float32 eps, near the branch
    point 0.625; torch's float32 tanh 6e-8), sign and −0 kept, NaN propagated, saturating
    to ±1."""
    assert cpp_loop.extension() is not None, cpp_loop.build_error()
    g = torch.Generator().manual_seed(0)
    dense = torch.linspace(-12, 12, 2_000_001, dtype=torch.float32)
    tiny = torch.logspace(-30, 0, 3001, dtype=torch.float64).to(torch.float32)
    near_zero = torch.randn(100_000, generator=g) * 1e-3  # where relative error shows
    points = torch.tensor([0.625, 0.6249999, 0.17, 0.35, 9.0, 50.0, -40.0, 1e30])
    x = torch.cat([dense, tiny, -tiny, near_zero, points])
    y = cpp_loop.tanh_f32(x).double()
    exact = torch.tanh(x.double())
    relative = ((y - exact).abs() / exact.abs().clamp_min(1e-300)).max().item()
    assert relative < 3e-7, relative
    f32 = torch.finfo(torch.float32)
    ulp = (y - exact).abs() / (f32.eps * exact.abs().clamp_min(f32.tiny))
    assert ulp.max() <= 3, f"max error {ulp.max():.2f} ulp at x = {x[ulp.argmax()]}"
    assert torch.equal(torch.signbit(y), torch.signbit(x))
    out = cpp_loop.tanh_f32(torch.tensor([-0.0, float("inf"), -float("inf"), float("nan")]))
    assert out[0].item() == 0 and torch.signbit(out[0])
    assert out[1].item() == 1 and out[2].item() == -1 and out[3].isnan()


def test_build_is_cached_under_the_toolkit_cache():
    """A second process finds the compiled module where the first one left it."""
    from elmbridge.download import cache_dir

    folder = cache_dir("torch_extensions", cpp_loop.build_key())
    assert list(folder.glob("*.so")), f"no compiled module in {folder}"


# ---- The bank's forward loop in inference at small batch, neurons across the lanes ----


def lanes_inputs(n, d_m, widths, batch, dropout, dtype, n_steps=12, d_tree=4, seed=0):
    """`bank_recurrence` keyword arguments for a recurrent bank of n neurons: widths are
    the MLP's hidden widths (() for a linear MLP), two synapse slots per branch drawn
    with replacement (repeated sources and rows of different lengths), β spread so that
    the ReLUs switch."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)

    d_a = widths[0] if widths else d_m
    rows = torch.randint(n * d_tree, (2 * n * d_tree,), generator=g)
    cols = torch.randint(n, (2 * n * d_tree,), generator=g)
    pattern = sparse_pattern(rows, cols, n * d_tree, n)
    outs = [*widths[1:], d_m] if widths else []
    layers = [
        (randn(n, w_in, w_out, scale=0.5), randn(n, 1, w_out, scale=0.3))
        for w_in, w_out in zip(widths, outs, strict=True)
    ]
    drop = (rand(n_steps, n, batch) < 0.7).to(dtype) / 0.7 if dropout else None
    return dict(
        activation="relu",
        pre=randn(n_steps, n, batch, d_a),
        memory=randn(n, batch, d_m),
        u=randn(n, d_m, d_a, scale=0.5),
        kappa=rand(n, 1, d_m),
        gain=rand(n, 1, d_m) + 0.5,
        layers=layers,
        feedback=Feedback(
            values=randn(pattern.col.numel(), scale=0.7), pattern=pattern, d_tree=d_tree,
            w_branch=randn(n, d_tree, d_a, scale=0.5), w_y=randn(n, d_m),
            beta=rand(n) - 0.3, kappa_r=0.8, drop=drop, highpass=randn(n, batch, scale=0.3),
            output=rand(n, batch),
        ),
    )  # fmt: skip


def force_forward_loop(monkeypatch, loop):
    """Make the C++ side run `loop` in place of its dispatching bank forward loop."""
    run = cpp_loop._Call.run
    monkeypatch.setattr(
        cpp_loop._Call, "run",
        lambda self, direction, dtype: run(
            self, loop if direction == "bank_forward" else direction, dtype
        ),
    )  # fmt: skip


def bank_outputs(inputs, backend, loop=None, monkeypatch=None):
    """(memories, mlp_out, outputs, highpasses) in inference on `backend`; loop names a
    C++ forward loop to force in place of the dispatching one."""
    if loop is not None:
        force_forward_loop(monkeypatch, loop)
    with torch.inference_mode(), use_backend(backend):
        result = bank_recurrence(**inputs)
    if loop is not None:
        monkeypatch.undo()
    return tuple(result)


def cast_inputs(inputs, dtype):
    def cast(x):
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    fb = inputs["feedback"]
    return {
        **{k: cast(v) for k, v in inputs.items() if k not in ("layers", "feedback")},
        "layers": [(cast(w), cast(b)) for w, b in inputs["layers"]],
        "feedback": fb and fb._replace(**{k: cast(v) for k, v in fb._asdict().items()}),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loop", [None, "bank_forward_lanes"], ids=["dispatch", "forced"])
@pytest.mark.parametrize(
    "n, d_m, widths, batch, dropout",
    [
        (20, 3, (10,), 1, False),
        (37, 5, (10,), 3, True),
        (20, 5, (), 8, True),
        (37, 3, (6, 7), 3, False),
        (16, 5, (10,), 2, True),
        (140, 3, (6,), 2, True),  # past 8 vectors of neurons: hardware gathers
    ],
)
def test_bank_lanes_forward_matches_eager(dtype, loop, n, d_m, widths, batch, dropout,
                                         monkeypatch):  # fmt: skip
    """Inference (no backward kept) at small batch: the loop with neurons across the
    vector lanes (16 float32, 8 float64: N 20 and 37 leave a tail group, 16 none; N 140
    takes the hardware-gathered branch sums; chosen by the C++ side up to batch 8 in
    float32, 4 in float64 (half of that past 8 vectors of neurons), or forced) against
    the eager loop in the same dtype (TOL) and, for float32, against the eager loop in
    float64 (1e-4 of the largest entry: float32 rounding through 12 steps). One, two and
    no MLP hidden layers, with and without a recurrent dropout mask."""
    inputs = lanes_inputs(n, d_m, widths, batch, dropout, dtype)
    actual = bank_outputs(inputs, "cpp", loop, monkeypatch)
    expected = bank_outputs(inputs, "eager")
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape and a.is_contiguous()
        assert_close(a, e, dtype)
    assert (expected[2] > 0).any() and (expected[2] == 0).any()  # ReLUs on and off
    if dtype == torch.float32:
        exact = bank_outputs(cast_inputs(inputs, torch.float64), "eager")
        for a, e in zip(actual, exact, strict=True):
            assert_close(a.double(), e, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("beta, active", [(-20.0, 0.0), (None, None), (20.0, 1.0)],
                         ids=["silent", "mixed", "all-active"])  # fmt: skip
def test_bank_lanes_forward_pushes_or_gathers_by_activity(dtype, batch, beta, active):
    """Past 8 vectors of neurons (N 140) the forward lanes loop sums the branches of a step
    whose sources are mostly silent by pushing the active ones along their rows of Sᵀ,
    else by the gather lists: all silent (every step pushes nothing), β as drawn (about
    half active: mostly pushes) and all active (every step gathers), each against the
    eager loop in float64, in inference and in training (the same loop, keeping the
    pre-activations) with the gradients of every input."""
    inputs = lanes_inputs(140, 3, (6,), batch, False, dtype)
    if beta is not None:
        fb = inputs["feedback"]
        inputs["feedback"] = fb._replace(beta=torch.full_like(fb.beta, beta),
                                         output=torch.full_like(fb.output, active))  # fmt: skip
    actual = bank_outputs(inputs, "cpp")
    exact = bank_outputs(cast_inputs(inputs, torch.float64), "eager")
    for a, e in zip(actual, exact, strict=True):
        assert_close(a.double(), e, dtype)
    if active is not None:
        assert (exact[2] > 0).all() if active else (exact[2] == 0).all()
    expected = bank_gradients(cast_inputs(inputs, torch.float64), "eager", LOSSES["all"])
    grads = bank_gradients(inputs, "cpp", LOSSES["all"])
    for name, e in expected.items():
        assert_close(grads[name].double(), e, dtype)


def lanes_leaves(inputs):
    """Copies of `lanes_inputs`' floating tensors as leaves that need grad, and the
    keyword arguments of `bank_recurrence` built on them."""
    fb = inputs["feedback"]

    def leaf(x):
        return x.detach().clone().requires_grad_()

    leaves = {k: leaf(inputs[k]) for k in ("pre", "memory", "u", "kappa", "gain")}
    for i, (w, b) in enumerate(inputs["layers"]):
        leaves |= {f"w{i}": leaf(w), f"b{i}": leaf(b)}
    fb_names = ("values", "w_branch", "w_y", "beta", "highpass", "output")
    leaves |= {k: leaf(getattr(fb, k)) for k in fb_names}
    kwargs = {k: leaves[k] for k in ("pre", "memory", "u", "kappa", "gain")}
    kwargs["activation"] = inputs["activation"]
    kwargs["layers"] = [(leaves[f"w{i}"], leaves[f"b{i}"]) for i in range(len(inputs["layers"]))]
    kwargs["feedback"] = fb._replace(**{k: leaves[k] for k in fb_names})
    return leaves, kwargs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "n, d_m, widths, batch, dropout",
    [(20, 3, (10,), 1, False), (37, 5, (6, 7), 3, True), (20, 5, (), 8, True)],
)
def test_bank_lanes_forward_keeps_activations(dtype, n, d_m, widths, batch, dropout,
                                              monkeypatch):  # fmt: skip
    """Training at small batch: the lanes loop (forced) also writes the pre-activations
    the backward pass reads. Outputs and the gradients of every input (through the C++
    backward) against the eager loop in float64."""
    inputs = lanes_inputs(n, d_m, widths, batch, dropout, dtype)
    results = {}
    for backend, case in (("eager", cast_inputs(inputs, torch.float64)), ("cpp", inputs)):
        leaves, kwargs = lanes_leaves(case)
        if backend == "cpp":
            force_forward_loop(monkeypatch, "bank_forward_lanes")
        with use_backend(backend):
            result = bank_recurrence(**kwargs)
        monkeypatch.undo()
        g = torch.Generator().manual_seed(5)
        proj = [torch.randn(y.shape, generator=g, dtype=torch.float64) for y in result]
        sum((y.double() * p).sum() for y, p in zip(result, proj, strict=True)).backward()
        results[backend] = [y.detach() for y in result], {k: v.grad for k, v in leaves.items()}
    (y_c, g_c), (y_e, g_e) = results["cpp"], results["eager"]
    for a, e in zip(y_c, y_e, strict=True):
        assert_close(a.double(), e, dtype)
    for name, e in g_e.items():
        assert g_c[name] is not None, name
        assert_close(g_c[name].double(), e, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_network_inference_matches_eager(dtype, monkeypatch):
    """A whole ELM Network forward in inference at batch 2 (the hidden bank on the lanes
    loop: N 21 is a full group and a tail in float32, three groups in float64) against
    the eager path: logits and every state. The hidden bank's loop is called without
    activations to keep (what selects the lanes loop), although its parameters need
    grad."""
    net = tiny_network(dtype, N=21, d_m=3, d_mlp=5, d_tree=4, d_brch=3, rho=0.5).eval()
    x = torch.rand(2, 15, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    kept = []
    run = cpp_loop._Call.run

    def record(self, direction, dtype):
        if direction == "bank_forward":
            kept.append(self.args.acts)
        run(self, direction, dtype)

    monkeypatch.setattr(cpp_loop._Call, "run", record)
    results = {}
    for backend in ("eager", "cpp"):
        with torch.inference_mode(), use_backend(backend):
            out = net.run((x * 0.4).to(dtype))
        results[backend] = (out.logits, out.activity, out.memory, *out.mlp_out, *out.state)
    for a, e in zip(results["cpp"], results["eager"], strict=True):
        assert_close(a, e, dtype)
    activity = results["eager"][1]
    assert (activity > 0).any() and (activity == 0).any()
    assert kept == [None]  # one hidden-bank call, no activations kept


# ---- The bank's reverse-time loop at small batch, neurons across the lanes ----


def force_backward(monkeypatch, loop):
    """Every C++ reverse-time call runs `loop` (an exported loop name) in place of the
    dispatching one, with the bookkeeping `cpp_loop.backward` does for that loop (what it
    stores, who sums the weight gradients); returns the list of (direction, N, batch) of
    those calls."""
    calls = []
    run = cpp_loop._Call.run
    if loop is not None:
        on_lanes = loop == "bank_backward_lanes"
        monkeypatch.setattr(cpp_loop, "_backward_on_lanes", lambda call, suffix: on_lanes)

    def forced(self, direction, dtype):
        if direction in ("backward", "bank_backward"):
            calls.append((direction, self.args.n, self.args.batch))
            direction = loop or direction
        run(self, direction, dtype)

    monkeypatch.setattr(cpp_loop._Call, "run", forced)
    return calls


def bank_leaves(inputs):
    """`bank_recurrence` keyword arguments with every floating tensor a fresh leaf (the
    dropout mask excepted: it is not a parameter)."""

    def leaf(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.detach().clone().requires_grad_()
        return x

    kw = {k: leaf(v) for k, v in inputs.items() if k not in ("layers", "feedback")}
    kw["layers"] = [(leaf(w), leaf(b)) for w, b in inputs["layers"]]
    fb = inputs["feedback"]
    if fb is not None:
        fb = fb._replace(**{k: leaf(v) for k, v in fb._asdict().items() if k != "drop"})
    kw["feedback"] = fb
    return kw


def bank_gradients(inputs, backend, loss_terms):
    """Gradients of every floating input of `bank_recurrence` (by name) for a random
    projection of the outputs named in loss_terms, on `backend`."""
    kw = bank_leaves(inputs)
    with use_backend(backend):
        result = bank_recurrence(**kw)
    g = torch.Generator().manual_seed(5)
    loss = 0
    for name in loss_terms:
        y = getattr(result, name)
        loss = loss + (y * torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)).sum()
    loss.backward()
    leaves = {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}
    for i, (w, b) in enumerate(kw["layers"]):
        leaves.update({f"w{i}": w, f"b{i}": b})
    if kw["feedback"] is not None:
        fb = kw["feedback"]._asdict()
        leaves.update({f"fb.{k}": v for k, v in fb.items() if k != "drop" and
                       isinstance(v, torch.Tensor) and v.is_floating_point()})  # fmt: skip
    return {k: v.grad for k, v in leaves.items() if v.is_floating_point()}


# Outputs feeding the loss: (a) memories only (no gradient of mlp_out, outputs or high-passes
# from outside), (b) all of them, (c) no memories (grad_memories null).
LOSSES = {
    "memories": ("memories",),
    "all": ("memories", "mlp_out", "outputs", "highpass"),
    "no-memories": ("mlp_out", "outputs"),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loop", ["bank_backward_lanes", "bank_backward_batch_inner"],
                         ids=["lanes", "batch-inner"])  # fmt: skip
@pytest.mark.parametrize(
    "n, d_m, widths, batch, dropout, feedback, loss",
    [
        (20, 3, (10,), 1, False, True, "memories"),
        (37, 5, (10,), 3, True, True, "all"),
        (20, 5, (), 8, True, True, "no-memories"),
        (37, 3, (6, 7), 3, False, True, "all"),
        (140, 3, (6,), 2, True, True, "all"),  # past 8 vectors of neurons in both dtypes
        (19, 3, (), 1, False, False, "all"),  # the network's readout
        (37, 5, (10,), 8, False, False, "memories"),
        (20, 3, (), 3, False, False, "no-memories"),
        (21, 5, (10,), 20, True, True, "all"),
    ],
)
def test_bank_backward_matches_eager(dtype, loop, n, d_m, widths, batch, dropout, feedback,
                                     loss, monkeypatch):  # fmt: skip
    """The reverse-time loops forced (the lanes loop, 16 float32 / 8 float64 neurons per
    group: N 19, 20 and 37 leave a tail group; and the batch-inner or row-tiled loop it
    replaces at small batch), with and without feedback, and the weight gradients after
    them (`cpp_loop.backward`), against the eager backward in float64 (its weight
    gradients from batched ATen products): the gradient of every input and weight, float64
    within TOL and float32 within 1e-4 of the largest entry (float32 rounding through 12
    steps). Batch 20: the batch-inner loop, and in the weight gradients more samples than
    a vector holds in float64."""
    inputs = lanes_inputs(n, d_m, widths, batch, dropout, dtype)
    if not feedback:
        inputs["feedback"] = None
    terms = [t for t in LOSSES[loss] if feedback or t in ("memories", "mlp_out")]
    expected = bank_gradients(cast_inputs(inputs, torch.float64), "eager", terms)
    calls = force_backward(monkeypatch, loop)
    actual = bank_gradients(inputs, "cpp", terms)
    assert calls == [("bank_backward" if feedback else "backward", n, batch)]
    assert actual.keys() == expected.keys()
    for name, e in expected.items():
        assert actual[name] is not None, name
        assert_close(actual[name].double(), e, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_lanes_backward_at_large_batch_matches_eager(dtype, monkeypatch):
    """The lanes loop forced at batch 20 with the bookkeeping that goes with it (∂L/∂S
    summed after it, in `weight_grads`, eight samples at a time: 8, 8 and 4), against the
    eager backward in float64."""
    inputs = lanes_inputs(21, 5, (10,), 20, True, dtype)
    expected = bank_gradients(cast_inputs(inputs, torch.float64), "eager", LOSSES["all"])
    calls = force_backward(monkeypatch, "bank_backward_lanes")
    actual = bank_gradients(inputs, "cpp", LOSSES["all"])
    assert calls == [("bank_backward", 21, 20)]
    for name, e in expected.items():
        assert_close(actual[name].double(), e, dtype)


@pytest.mark.parametrize("dtype, batch", [(torch.float32, 1), (torch.float64, 3)],
                         ids=["f32-b1", "f64-b3"])  # fmt: skip
def test_weight_grads_by_groups_of_neurons_match_eager(dtype, batch):
    """`weight_grads` after the lanes loop on a bank whose chunk of rows (all neurons) is
    past L2, so that it sums 16 neurons at a time (N 150: nine groups and a tail of six),
    over several chunks of steps (40 steps; chunks of 32 in float32 at batch 1, 5 in
    float64 at batch 3), against the eager backward in float64."""
    n, d_m, widths, d_tree, n_steps = 150, 20, (40,), 50, 40
    lanes = 16 if dtype == torch.float32 else 8
    chunk = max(1, 2 * lanes // batch)
    row_values = d_m + widths[0] + d_tree + widths[0] + d_m
    assert n * chunk * batch * row_values * dtype.itemsize > 2**20  # past the L2 rule
    assert n_steps > chunk
    inputs = lanes_inputs(n, d_m, widths, batch, True, dtype, n_steps=n_steps, d_tree=d_tree)
    # Weights scaled to the fan-ins (40 inputs, 50 branches), so that nothing blows up
    # over 40 steps.
    inputs["u"] = inputs["u"] / 8
    inputs["layers"] = [(w / 6, b) for w, b in inputs["layers"]]
    fb = inputs["feedback"]
    inputs["feedback"] = fb._replace(values=fb.values / 4, w_branch=fb.w_branch / 8)
    expected = bank_gradients(cast_inputs(inputs, torch.float64), "eager", LOSSES["all"])
    actual = bank_gradients(inputs, "cpp", LOSSES["all"])
    for name, e in expected.items():
        assert_close(actual[name].double(), e, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "n, batch, feedback, forward, shared",
    [
        (37, 2, True, None, True),  # both loops on lanes: the forward's layout is read
        (37, 2, True, "bank_forward_batch_inner", True),  # laid out by the other forward
        (19, 1, False, None, True),  # the readout (no feedback)
        (37, 12, True, None, False),  # the batch-inner reverse-time loop: nothing kept
    ],
)
def test_lanes_backward_reads_the_forward_weights(dtype, n, batch, feedback, forward, shared,
                                                  monkeypatch):  # fmt: skip
    """Where both the forward and the reverse-time loop run on lanes, the forward leaves
    its lane-layout weights for the backward (`lane_weights`); laid out by whichever
    forward loop ran (the batch-inner one forced here), they give the eager backward's
    gradients in float64; elsewhere nothing is kept."""
    inputs = lanes_inputs(n, 5, (10,), batch, True, dtype)
    if not feedback:
        inputs["feedback"] = None
    terms = LOSSES["all"] if feedback else ("memories", "mlp_out")
    expected = bank_gradients(cast_inputs(inputs, torch.float64), "eager", terms)
    kept = []
    backward = cpp_loop.backward

    def recorded(*args, **kwargs):
        kept.append(kwargs.get("lane_weights"))
        return backward(*args, **kwargs)

    monkeypatch.setattr(cpp_loop, "backward", recorded)
    if forward is not None:
        force_forward_loop(monkeypatch, forward)
    actual = bank_gradients(inputs, "cpp", terms)
    lanes = 16 if dtype == torch.float32 else 8
    d_in = 5 + (4 if feedback else 0)  # d_m, then d_tree (lanes_inputs' default 4)
    size = -(-n // lanes) * lanes * (d_in * 10 + 10 * 5)
    assert len(kept) == 1
    assert (kept[0].numel() if kept[0] is not None else 0) == (size if shared else 0)
    for name, e in expected.items():
        assert_close(actual[name].double(), e, dtype)


@pytest.mark.parametrize("widths", [(10,), ()], ids=["mlp", "linear"])
def test_batch_inner_backward_without_pre_gradient(widths, monkeypatch):
    """The batch-inner reverse-time loop (batch 12), which sums the weight gradients as it
    goes, where ∂L/∂pre is not wanted (pre needs no gradient): then no (T, N, B, ·)
    per-step gradient is allocated at all (∂L/∂a⁰, or ∂L/∂z for a linear MLP, included),
    and every other gradient matches the eager backward in float64."""
    inputs = lanes_inputs(21, 5, widths, 12, True, torch.float64)
    grads, allocated = {}, []
    empty = cpp_loop.empty

    def recorded_empty(like, *shape):
        allocated.append(shape)
        return empty(like, *shape)

    for backend in ("eager", "cpp"):
        kw = bank_leaves(inputs)
        kw["pre"] = kw["pre"].detach()
        with use_backend(backend):
            result = bank_recurrence(**kw)
        g = torch.Generator().manual_seed(5)
        loss = 0
        for name in LOSSES["all"]:
            y = getattr(result, name)
            loss = loss + (y * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum()
        monkeypatch.setattr(cpp_loop, "empty", recorded_empty)  # the backward's allocations
        loss.backward()
        monkeypatch.setattr(cpp_loop, "empty", empty)
        grads[backend] = {k: v.grad for k, v in kw.items() if isinstance(v, torch.Tensor)}
        grads[backend].update({f"w{i}": w.grad for i, (w, _) in enumerate(kw["layers"])})
        grads[backend].update({f"b{i}": b.grad for i, (_, b) in enumerate(kw["layers"])})
        grads[backend].update({f"fb.{k}": v.grad for k, v in kw["feedback"]._asdict().items()
                               if isinstance(v, torch.Tensor) and v.requires_grad})  # fmt: skip
    assert len(grads["eager"]) > 10
    assert [shape for shape in allocated if len(shape) == 4] == []
    assert grads["cpp"]["pre"] is None
    for name, expected in grads["eager"].items():
        if expected is not None:
            assert_close(grads["cpp"][name], expected, torch.float64)


def test_network_training_step_matches_eager(monkeypatch):
    """A whole ELM Network training step in float64 at batch 2 with recurrent dropout:
    both banks' reverse-time loops as dispatched (the lanes loop: the hidden bank at batch
    ≤ 4, the readout of 10 neurons at N ≥ 4) against the eager path, every parameter's
    gradient."""
    net = tiny_network(torch.float64, N=21, d_m=3, d_mlp=5, d_tree=4, d_brch=3, rho=0.5,
                       n_out=10, dropout_rec=0.3).train()  # fmt: skip
    x = torch.rand(2, 15, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    calls = force_backward(monkeypatch, None)
    grads = {}
    for backend in ("eager", "cpp"):
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks on both paths
        with use_backend(backend):
            out = net.run(x * 0.4)
        gen = torch.Generator().manual_seed(5)
        loss = (out.logits * torch.randn(out.logits.shape, generator=gen).double()).sum()
        (loss + out.activity.square().sum()).backward()
        grads[backend] = {name: p.grad.clone() for name, p in net.named_parameters()}
    assert sorted(calls) == [("backward", 10, 2), ("bank_backward", 21, 2)]
    for name, expected in grads["eager"].items():
        assert_close(grads["cpp"][name], expected, torch.float64)


def record_table_reads(monkeypatch) -> list[bool]:
    """Whether each bank forward call into C++ got a token table to read in place."""
    read_in_place = []
    run = cpp_loop._Call.run

    def record(self, direction, dtype):
        if direction == "bank_forward":
            read_in_place.append(bool(self.args.tokens))
        run(self, direction, dtype)

    monkeypatch.setattr(cpp_loop._Call, "run", record)
    return read_in_place


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch", [2, 12], ids=["lanes", "batch-inner"])
def test_token_input_read_in_place(dtype, batch, monkeypatch):
    """Token input in inference: the bank loops read the (token, neuron) table in place
    (`TokenRows`, no (T, N, B, d_a) copy; at batch 2 the lanes loop, at 12 the
    batch-inner one) against the eager path, which gathers the rows: logits, activity,
    memories and every state."""
    net = tiny_network(dtype, N=21, d_m=3, d_mlp=5, d_tree=4, d_brch=3, rho=0.5).eval()
    tokens = torch.randint(5, (batch, 15), generator=torch.Generator().manual_seed(4))
    read_in_place = record_table_reads(monkeypatch)
    results = {}
    for backend in ("eager", "cpp"):
        with torch.inference_mode(), use_backend(backend):
            out = net.run(tokens)
        results[backend] = (out.logits, out.activity, out.memory, *out.mlp_out, *out.state)
    for a, e in zip(results["cpp"], results["eager"], strict=True):
        assert_close(a, e, dtype)
    activity = results["eager"][1]
    assert (activity > 0).any() and (activity == 0).any()
    assert read_in_place == [True]


@pytest.mark.parametrize("batch", [2, 12], ids=["lanes", "batch-inner"])
def test_token_input_trains_in_place(batch, monkeypatch):
    """Token input in training, float64: the bank loops read the table in place here too
    (no (T, N, B, d_a) row gather), and ∂L/∂table is summed from ∂L/∂pre in C++ (by the
    batch-inner reverse-time loop as it goes; after the lanes loop, `cpp_loop.token_grad`).
    Against the eager path, which gathers the rows and lets
    autograd scatter their gradient back: logits and every parameter's gradient, the
    table's sources (synapse weights, first layer, its bias) among them."""
    net = tiny_network(torch.float64, N=21, d_m=3, d_mlp=5, d_tree=4, d_brch=3,
                       rho=0.5).train()  # fmt: skip
    tokens = torch.randint(5, (batch, 15), generator=torch.Generator().manual_seed(4))
    read_in_place = record_table_reads(monkeypatch)
    results = {}
    for backend in ("eager", "cpp"):
        net.zero_grad(set_to_none=True)
        with use_backend(backend):
            out = net.run(tokens)
        gen = torch.Generator().manual_seed(5)
        loss = (out.logits * torch.randn(out.logits.shape, generator=gen).double()).sum()
        (loss + out.activity.square().sum()).backward()
        results[backend] = (out.logits.detach(), {n: p.grad for n, p in net.named_parameters()})
    assert read_in_place == [True]
    assert_close(results["cpp"][0], results["eager"][0], torch.float64)
    for name, expected in results["eager"][1].items():
        assert expected is not None and expected.abs().sum() > 0, name
        assert_close(results["cpp"][1][name], expected, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_lanes_loops_keep_their_layout_per_pattern(dtype):
    """The lanes loops' gather-list layout (S's for the forward, Sᵀ's for the reverse-time
    loop, from the pattern's transposed CSR), built once per pattern in `cpp_loop` and
    kept: training at batch 2 against the eager path (logits and every gradient); the
    kept layout reused while the pattern is unchanged, rebuilt after an in-place change of
    it, and dropped with it."""
    net = tiny_network(dtype, N=37, d_m=3, d_mlp=5, d_tree=4, d_brch=3, rho=0.6).train()
    x = torch.rand(2, 9, 5, generator=torch.Generator().manual_seed(6), dtype=dtype)

    def train_step(backend="cpp"):
        net.zero_grad(set_to_none=True)
        with use_backend(backend):
            logits = net(x)[0]
        probe = torch.linspace(-1, 1, logits.numel(), dtype=dtype).view_as(logits)
        (logits * probe).sum().backward()
        return [logits.detach()] + [p.grad.clone() for p in net.parameters()]

    expected = train_step("eager")
    for a, e in zip(train_step(), expected, strict=True):
        assert_close(a, e, dtype)
    col = net.hidden.rec_col
    layouts = dict(cpp_loop._LAYOUTS[id(col)][1])
    assert {(dtype, 4, False), (dtype, 4, True)} <= set(layouts)
    train_step()
    assert all(cpp_loop._LAYOUTS[id(col)][1][k][2] is v[2] for k, v in layouts.items())
    col.add_(0)  # an in-place change (here of nothing) bumps the version: rebuilt
    for a, e in zip(train_step(), expected, strict=True):
        assert_close(a, e, dtype)
    for key in layouts:
        assert cpp_loop._LAYOUTS[id(col)][1][key][2] is not layouts[key][2]
    slot = id(col)
    net.hidden._index_synapses(net.hidden.source)  # new pattern buffers; the old ones die
    del col
    assert slot not in cpp_loop._LAYOUTS


@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="no transparent huge pages (Linux only)",
)
def test_large_sequences_advised_onto_huge_pages(monkeypatch):
    """`cpp_loop.empty` asks the kernel for transparent huge pages on a large tensor's
    range (a training step's fresh (T, N, B, ·) sequences faulted in 4 KiB at a time were
    30 % of Enwik8's step), read back from the kernel's own record of the mapping
    (/proc/self/smaps: VmFlags "hg"); a small tensor is not advised at all. (Whether a
    small tensor's heap pages carry the flag depends on the process's history, not on this
    code: a fresh-clone CI run found them flagged, a local full run did not.)"""

    def advised(x):
        address, flags, inside = x.data_ptr() + x.nbytes // 2, None, False
        for line in Path("/proc/self/smaps").read_text().splitlines():
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
                inside = start <= address < end
            elif head == "VmFlags:" and inside:
                flags = line.split()[1:]
        return flags is not None and "hg" in flags

    like = torch.zeros(1)
    large = cpp_loop.empty(like, 64, 1 << 19)  # 128 MiB, never written: no memory used
    assert large.shape == (64, 1 << 19) and large.dtype == like.dtype
    assert advised(large)
    calls = []
    monkeypatch.setattr(cpp_loop, "_advise_huge", calls.append)
    small = cpp_loop.empty(like, 16, 16)
    assert small.shape == (16, 16) and calls == []
