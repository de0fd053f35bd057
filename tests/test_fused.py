"""The Triton kernels of the memory recurrence (elmnet.fused) against the eager path.

The kernels run in triton's CPU interpreter (TRITON_INTERPRET=1), so these tests need
triton but no GPU. Each compares forward outputs and the gradients of every input and
weight with the eager path, which `test_elm_neuron` / `test_elm_network` check against
float64 loops; the network is also checked against that float64 loop directly.

Tolerances (float32): outputs within 1e-5 absolute and relative; gradients within 1e-4
relative and 1e-5 of the largest gradient of the same tensor absolute. The two paths sum
in different orders and the kernels' tanh goes through the sigmoid (≈ 1e-7 absolute).
"""

import os
import sys

import pytest
import torch

# triton reads TRITON_INTERPRET when it is imported: set it first. Nothing else in this
# project uses triton, so the setting outlives this module harmlessly.
_TRITON_EARLIER = "triton" in sys.modules
os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from elmbridge.errors import UserError  # noqa: E402
from elmnet import cpp_loop  # noqa: E402
from elmnet.network import ELMNetwork, ELMNetworkConfig, ELMNetworkState  # noqa: E402
from elmnet.recurrence import bank_recurrence, memory_recurrence, use_backend  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        _TRITON_EARLIER or os.environ["TRITON_INTERPRET"] in ("", "0"),
        reason="triton was imported before its interpreter could be switched on",
    ),
]


def assert_grads_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def run_both(fn, inputs: dict[str, torch.Tensor], seed: int = 1):
    """fn(**inputs) on both backends: (outputs, gradients of a random projection)."""
    results = {}
    for backend in ("eager", "triton"):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        with use_backend(backend):
            outputs = fn(**leaves)
        g = torch.Generator().manual_seed(seed)
        loss = sum((y * torch.randn(y.shape, generator=g)).sum() for y in outputs)
        loss.backward()
        results[backend] = ([y.detach() for y in outputs], {k: v.grad for k, v in leaves.items()})
    return results["eager"], results["triton"]


def neuron_inputs(batch, n_steps, d_a, d_m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        pre=torch.randn(batch, n_steps, d_a, generator=g),
        memory=torch.randn(batch, d_m, generator=g),
        u=0.5 * torch.randn(d_m, d_a, generator=g),
        kappa=torch.rand(d_m, generator=g),
        gain=torch.rand(d_m, generator=g),
        w_out=0.5 * torch.randn(d_a, d_m, generator=g),
        b_out=torch.randn(d_m, generator=g),
    )


@pytest.mark.parametrize(
    "activation, batch, n_steps, d_a, d_m",
    [("relu2", 3, 7, 5, 4), ("silu", 2, 5, 20, 3), ("relu", 17, 4, 6, 17)],
)
def test_neuron_matches_eager(activation, batch, n_steps, d_a, d_m):
    """One neuron, one hidden MLP layer; batch 17 spans two tiles, d_m 17 two blocks."""

    def fn(**kw):
        return (memory_recurrence(activation, **kw),)

    (y_e, g_e), (y_t, g_t) = run_both(fn, neuron_inputs(batch, n_steps, d_a, d_m))
    torch.testing.assert_close(y_t[0], y_e[0], rtol=1e-5, atol=1e-5)
    for name in g_e:
        assert_grads_close(g_t[name], g_e[name])


def test_linear_bank_matches_eager():
    """N neurons without feedback and with a linear MLP, as the network's readout."""
    g = torch.Generator().manual_seed(3)
    n, batch, n_steps, d_m = 5, 4, 6, 3
    inputs = dict(
        pre=torch.randn(n_steps, n, batch, d_m, generator=g),
        memory=torch.randn(n, batch, d_m, generator=g),
        u=0.5 * torch.randn(n, d_m, d_m, generator=g),
        kappa=torch.rand(d_m, generator=g),
        gain=torch.rand(d_m, generator=g),
    )

    def fn(**kw):
        result = bank_recurrence("identity", layers=[], **kw)
        return result.memories, result.mlp_out

    (y_e, g_e), (y_t, g_t) = run_both(fn, inputs)
    for a, b in zip(y_t, y_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name in g_e:
        assert_grads_close(g_t[name], g_e[name])


def tiny_network(**overrides) -> ELMNetwork:
    base = dict(d_in=5, n_out=3, N=6, d_m=2, d_tree=3, d_brch=2, rho=0.5, tau_min=1.0,
                tau_max=20.0, tau_r=3.0, seed=1, dropout_in=0.0, dropout_rec=0.0)  # fmt: skip
    net = ELMNetwork(ELMNetworkConfig(**{**base, **overrides}))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # nonzero β and larger weights, so ReLUs switch and tanh bends
        net.hidden.beta.copy_(torch.rand(net.config.N, generator=g) - 0.3)
        for p in net.parameters():
            p.mul_(1.0 + torch.rand(p.shape, generator=g))
    return net


@pytest.mark.parametrize(
    "overrides",
    [dict(dropout_rec=0.3), dict(rho=1.0, d_mlp=3, N=4), dict(rho=0.0, activation="relu")],
    ids=["dropout", "all-recurrent", "no-recurrent-synapse"],
)
def test_network_matches_eager(overrides):
    """The recurrent bank with its sparse gather, the readout bank and every gradient:
    parameters, input and all four parts of the carried state."""
    net = tiny_network(**overrides).train()
    c = net.config
    g = torch.Generator().manual_seed(4)
    batch = 3
    inputs = dict(
        x=torch.rand(batch, 7, c.d_in, generator=g) * 0.4,
        memory=torch.randn(batch, c.N, c.d_m, generator=g),
        highpass=torch.randn(batch, c.N, generator=g),
        output=torch.rand(batch, c.N, generator=g),
        readout=torch.randn(batch, c.n_out, c.readout_d_m, generator=g),
    )

    def fn(x, memory, highpass, output, readout):
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks on both paths
        out = net.run(x, ELMNetworkState(memory, highpass, output, readout))
        return (out.logits, out.activity, *out.mlp_out, *out.state)

    results = {}
    for backend in ("eager", "triton"):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        with use_backend(backend):
            outputs = fn(**leaves)
        gen = torch.Generator().manual_seed(5)
        sum((y * torch.randn(y.shape, generator=gen)).sum() for y in outputs).backward()
        grads = {k: v.grad for k, v in leaves.items()}
        grads.update({n: p.grad.clone() for n, p in net.named_parameters()})
        results[backend] = [y.detach() for y in outputs], grads
    (y_e, g_e), (y_t, g_t) = results["eager"], results["triton"]
    for a, b in zip(y_t, y_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (y_e[1] > 0).any() and (y_e[1] == 0).any()  # ReLUs on and off
    for name in g_e:
        assert g_t[name] is not None, name
        assert_grads_close(g_t[name], g_e[name])


def test_network_matches_float64_reference():
    from tests.test_elm_network import reference_forward

    net = tiny_network().eval()
    x = torch.rand(2, 12, 5, generator=torch.Generator().manual_seed(6)) * 0.4
    with use_backend("triton"):
        logits, _ = net(x)
    torch.testing.assert_close(logits.double(), reference_forward(net, x), rtol=1e-4, atol=1e-4)


def test_unsupported_configurations_say_why():
    inputs = neuron_inputs(2, 3, 4, 2)
    hidden = [(torch.eye(4), torch.zeros(4))]
    with use_backend("triton"), pytest.raises(UserError, match="at most one hidden"):
        memory_recurrence("relu", **inputs, hidden=hidden)
    with use_backend("triton"), pytest.raises(UserError, match="float32"):
        memory_recurrence("relu", **{k: v.double() for k, v in inputs.items()})
    with pytest.raises(UserError, match="unknown recurrence backend"), use_backend("cuda"):
        pass
    # "auto" on CPU never runs the kernels, whatever triton's mode: the C++ loops, or eager.
    with use_backend("auto"):
        y = memory_recurrence("relu", **inputs)
    with use_backend("cpp" if cpp_loop.extension() is not None else "eager"):
        torch.testing.assert_close(y, memory_recurrence("relu", **inputs), rtol=0, atol=0)


def test_packed_points_on_the_kernels_equal_solo_eager_runs():
    """Two packed sweep points (elmnet.packed) through the kernels, against each point's
    solo eager run: logits and every parameter gradient."""
    from elmnet.packed import PackedNetworks

    nets = [tiny_network(seed=1), tiny_network(seed=2, N=4, d_brch=3)]
    packed = PackedNetworks(nets).eval()
    g = torch.Generator().manual_seed(7)
    xs = [torch.rand(2, 6, 5, generator=g) * 0.4 for _ in nets]
    with use_backend("triton"):
        logits, _ = packed(xs)
    sum(lg.square().sum() for lg in logits).backward()
    fused_grads = [{n: p.grad.clone() for n, p in net.named_parameters()} for net in nets]
    for net, x, lg, grads in zip(nets, xs, logits, fused_grads, strict=True):
        net.zero_grad(set_to_none=True)
        with use_backend("eager"):
            solo, _ = net(x)
        solo.square().sum().backward()
        torch.testing.assert_close(lg, solo, rtol=1e-5, atol=1e-5)
        for name, p in net.named_parameters():
            assert_grads_close(grads[name], p.grad)
