"""The ELM Network's input drive on the spike product (`elmnet.ops.spike_matmul`) against
the float64 dense product and the literal float64 loop of tests/test_elm_network.

Spike input (binary, ≈1 % nonzero, like SHD's bins) takes the C++ product over its
nonzeros; the eager backend takes the dense GEMM. Both must give the same logits, state
and gradients in every parameter, the input and the carried state: float64 within 1e-10
(the products differ only in summation order).
"""

import shutil

import pytest
import torch

from elmnet import cpp_loop
from elmnet.network import ELMNetwork, ELMNetworkState
from elmnet.ops import SPIKE_MAX_DENSITY
from elmnet.recurrence import use_backend
from tests.test_elm_network import randomise, reference_forward, tiny

NO_COMPILER = shutil.which("c++") is None and shutil.which("g++") is None
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(NO_COMPILER, reason="no C++ compiler (c++ or g++) on PATH"),
]
TOL = dict(rtol=1e-10, atol=1e-10)
D_IN = 128  # wide enough that 2 % density leaves a few spikes per row


def spikes(batch: int, n_steps: int, density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n_steps, D_IN, generator=g, dtype=torch.float64) < density).double()


@pytest.fixture
def spike_calls(monkeypatch):
    """Counts calls that reach the C++ spike product (and finish there, not dense)."""
    calls = []
    real = cpp_loop.spike_product

    def counting(x, m, max_density):
        calls.append(x.shape)
        return real(x, m, max_density)

    monkeypatch.setattr(cpp_loop, "spike_product", counting)
    return calls


def test_spike_input_matches_float64_reference(spike_calls):
    net = randomise(ELMNetwork(tiny(d_in=D_IN)).double().eval(), seed=2)
    x = spikes(3, 20, 0.01, seed=3)
    with use_backend("cpp"):
        logits, _ = net(x)
    assert spike_calls, "the spike product was not used"
    torch.testing.assert_close(logits, reference_forward(net, x), **TOL)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_spike_input_gradients_match_dense_product(spike_calls, dropout):
    """Every gradient (parameters, input, carried state) through the spike product equals
    the dense product's (eager backend: `x @ matrix`, autograd's own backward)."""
    config = tiny(d_in=D_IN, dropout_in=dropout, dropout_rec=dropout)
    net = randomise(ELMNetwork(config).double(), seed=9).train()
    g = torch.Generator().manual_seed(10)
    x = spikes(2, 12, 0.01, seed=11)
    batch, n, n_out = 2, config.N, config.n_out
    state = ELMNetworkState(
        torch.randn(batch, n, config.d_m, dtype=torch.float64, generator=g),
        torch.randn(batch, n, dtype=torch.float64, generator=g),
        torch.rand(batch, n, dtype=torch.float64, generator=g),
        torch.randn(batch, n_out, config.readout_d_m, dtype=torch.float64, generator=g),
    )
    weights = torch.randn(batch, 12, n_out, dtype=torch.float64, generator=g)

    def run(backend):
        net.zero_grad(set_to_none=True)
        xs = x.clone().requires_grad_()
        st = ELMNetworkState(*(s.clone().requires_grad_() for s in state[:4]))
        torch.manual_seed(0)  # the same dropout masks on both backends
        with use_backend(backend):
            logits, new = net(xs, st)
        loss = (logits * weights).sum() + new.memory.square().sum() + new.output.sum()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters()}
        grads["input"] = xs.grad
        grads.update({f"state.{i}": s.grad for i, s in enumerate(st[:4])})
        return logits.detach(), grads

    sparse_logits, sparse_grads = run("cpp")
    assert spike_calls, "the spike product was not used"
    dense_logits, dense_grads = run("eager")
    torch.testing.assert_close(sparse_logits, dense_logits, **TOL)
    assert sparse_grads.keys() == dense_grads.keys()
    for name, grad in dense_grads.items():
        assert grad is not None and grad.abs().max() > 0, name
        torch.testing.assert_close(sparse_grads[name], grad, **TOL, msg=name)


def test_dense_input_keeps_the_dense_product(spike_calls):
    net = randomise(ELMNetwork(tiny(d_in=D_IN)).double().eval(), seed=4)
    x = spikes(2, 10, 4 * SPIKE_MAX_DENSITY, seed=5)
    with use_backend("cpp"):
        logits, _ = net(x)
    assert not spike_calls  # the sampled density sent it to the GEMM
    with use_backend("eager"):
        torch.testing.assert_close(logits, net(x)[0], **TOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_bank_pre_is_the_swap_plus_bias(dtype):
    """`cpp_loop.bank_pre` against the permuted sum it replaces: equal to the last bit
    (one addition per entry), and its gradients against autograd's of that sum."""
    assert cpp_loop.extension() is not None, cpp_loop.build_error()
    g = torch.Generator().manual_seed(12)
    drive = torch.randn(7, 3, 5, 4, generator=g, dtype=torch.float64).to(dtype)
    bias = torch.randn(5, 4, generator=g, dtype=torch.float64).to(dtype)
    grad = torch.randn(7, 5, 3, 4, generator=g, dtype=torch.float64).to(dtype)
    results = []
    for fn in (cpp_loop.bank_pre, lambda d, b: d.transpose(1, 2) + b.unsqueeze(1)):
        d, b = drive.clone().requires_grad_(), bias.clone().requires_grad_()
        out = fn(d, b)
        out.backward(grad)
        results.append((out.detach(), d.grad, b.grad))
    (out, grad_d, grad_b), (want, want_d, want_b) = results
    assert out.is_contiguous() and out.shape == (7, 5, 3, 4)
    assert torch.equal(out, want) and torch.equal(grad_d, want_d)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(grad_b, want_b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_feedforward_matrix_in_cpp(dtype):
    """The hidden bank's composed input matrix (`cpp_loop.feedforward_matrix` under the C++
    backend) against a float64 loop over the synapse slots, and its gradients in w_s and
    W_first against autograd through the eager construction (index_add), for a bank with
    recurrent slots (which add nothing here) and sources drawn twice for one branch."""
    net = randomise(ELMNetwork(tiny(d_in=6, N=5, d_tree=3, d_brch=4, rho=0.3)).double(), seed=2)
    bank = net.hidden.to(dtype)
    n, d_a, d_tree, d_brch = bank.n, bank.w_first.shape[-1], bank.d_tree, bank.d_brch
    want = torch.zeros(bank.d_src, n * d_a, dtype=torch.float64)
    for k in range(n):
        for slot in range(d_tree * d_brch):
            source = int(bank.source[k, slot])
            if source < bank.d_src:
                w = bank.input_scale * bank.w_s[k, slot].double()
                want[source, k * d_a : (k + 1) * d_a] += (
                    w * bank.w_first[k, slot // d_brch].double()
                )
    assert bank.source.ge(bank.d_src).any()  # some slots are recurrent
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    results = {}
    for backend in ("cpp", "eager"):
        bank.zero_grad(set_to_none=True)
        with use_backend(backend):
            matrix = bank.feedforward_matrix()
        (matrix * grad.to(dtype)).sum().backward()
        results[backend] = (matrix.detach(), bank.w_s.grad, bank.w_first.grad)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["cpp"][0].double(), want, **tol)
    for actual, expected in zip(results["cpp"][1:], results["eager"][1:], strict=True):
        torch.testing.assert_close(actual, expected, **tol)
