"""Packed sweep points (elmnet.packed): each point of a packed model equals its solo run.

The solo runs are plain `ELMNetwork`s trained one by one; the packed model trains copies
of the same networks at once. Compared in float64: outputs, every gradient, the carried
state, and the parameters after several optimiser steps with dropout on.
"""

import copy

import pytest
import torch

from elmbridge.errors import UserError
from elmnet.network import ELMNetwork, ELMNetworkConfig
from elmnet.packed import PackedNetworks, merge_patterns

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIGHT = dict(rtol=1e-10, atol=1e-12)


def point(**overrides) -> ELMNetwork:
    base = dict(d_in=5, n_out=3, N=6, d_m=2, d_tree=3, d_brch=2, rho=0.5, tau_min=1.0,
                tau_max=20.0, tau_r=3.0, seed=1, dropout_in=0.2, dropout_rec=0.3)  # fmt: skip
    return ELMNetwork(ELMNetworkConfig(**{**base, **overrides})).double()


# Different seeds, N, k_c (d_brch), ρ, τ_m range: all packable.
POINTS = [dict(seed=1), dict(seed=2, N=4, d_brch=4), dict(seed=3, N=9, rho=0.9, tau_max=50.0)]


def batches(n_steps: int, seed: int, count: int):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(4, 12, 5, generator=g, dtype=torch.float64) * 0.5,
            torch.randint(3, (4,), generator=g),
        )
        for _ in range(count)
    ]


def loss_of(logits, y):
    return torch.nn.functional.cross_entropy(logits[:, -1], y) + 0.1 * logits.square().mean()


def test_training_equals_solo_runs():
    nets = [point(**p) for p in POINTS]
    packed = PackedNetworks([copy.deepcopy(n) for n in nets], rng_seeds=[10, 11, 12]).train()
    data = [batches(12, seed=20 + k, count=3) for k in range(len(nets))]

    # Solo runs, one after the other, each from its own seed.
    solo_logits, solo_grads = [], []
    for k, net in enumerate(nets):
        torch.manual_seed(10 + k)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for step, (x, y) in enumerate(data[k]):
            opt.zero_grad()
            logits, _ = net(x)
            loss_of(logits, y).backward()
            if step == 0:
                solo_logits.append(logits.detach())
                solo_grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()

    # The same points packed: one optimiser, clipping per point.
    opt = torch.optim.Adam(packed.parameters(), lr=1e-2)
    for step in range(3):
        opt.zero_grad()
        logits, _ = packed([d[step][0] for d in data])
        sum(loss_of(lg, d[step][1]) for lg, d in zip(logits, data, strict=True)).backward()
        if step == 0:
            for k, net in enumerate(packed.networks):
                torch.testing.assert_close(logits[k].detach(), solo_logits[k], **TIGHT)
                for name, p in net.named_parameters():
                    torch.testing.assert_close(p.grad, solo_grads[k][name], **TIGHT)
        packed.clip_grad_norm_per_point(0.5)
        opt.step()

    for solo, net in zip(nets, packed.networks, strict=True):
        for (name, p), q in zip(solo.named_parameters(), net.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-11, msg=name)
    # The steps moved the parameters: the comparison is not of untouched copies.
    fresh = point(**POINTS[0])
    assert not torch.equal(fresh.hidden.w_s, packed.networks[0].hidden.w_s)


def test_states_and_state_gradients_equal_solo_runs():
    nets = [point(**p, dropout_in=0.0, dropout_rec=0.0) for p in POINTS]
    packed = PackedNetworks(nets).eval()
    g = torch.Generator().manual_seed(30)
    xs = [torch.rand(2, 9, 5, generator=g, dtype=torch.float64) for _ in nets]
    _, first_states = packed(xs)
    # A second chunk from the carried states, with gradients into those states.
    states = [type(s)(*(t.detach().requires_grad_() for t in s)) for s in first_states]
    logits, new_states = packed(xs, states)
    total = sum(lg.square().sum() + sum(t.sum() for t in st) for lg, st in
                zip(logits, new_states, strict=True))  # fmt: skip
    total.backward()
    for net, x, st, lg, new in zip(nets, xs, states, logits, new_states, strict=True):
        solo_state = type(st)(*(t.detach().clone().requires_grad_() for t in st))
        solo_logits, solo_new = net(x, solo_state)
        (solo_logits.square().sum() + sum(t.sum() for t in solo_new)).backward()
        torch.testing.assert_close(lg, solo_logits, **TIGHT)
        for a, b in zip(new, solo_new, strict=True):
            torch.testing.assert_close(a, b, **TIGHT)
        for a, b in zip(st, solo_state, strict=True):
            torch.testing.assert_close(a.grad, b.grad, **TIGHT)


def test_merged_pattern_is_block_diagonal():
    nets = [point(**p) for p in POINTS]
    patterns = [n.hidden.pattern for n in nets]
    shapes = [(n.config.N * 3, n.config.N) for n in nets]
    merged = merge_patterns(patterns, shapes)
    values = [torch.rand(p.col.numel(), dtype=torch.float64) for p in patterns]

    def dense(p, v, shape):
        return torch.sparse_csr_tensor(
            p.crow.long(), p.col.long(), v, shape, check_invariants=True
        ).to_dense()

    expected = torch.block_diag(
        *(dense(p, v, s) for p, v, s in zip(patterns, values, shapes, strict=True))
    )
    got = dense(merged, torch.cat(values), expected.shape)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # The transposed pattern, in its entry order, is the transpose.
    t_shape = (expected.shape[1], expected.shape[0])
    got_t = dense(merged._replace(crow=merged.crow_t, col=merged.col_t),
                  torch.cat(values)[merged.perm_t], t_shape)  # fmt: skip
    torch.testing.assert_close(got_t, expected.t(), rtol=0, atol=0)


def test_unpackable_points_are_refused():
    with pytest.raises(UserError, match="must share d_m"):
        PackedNetworks([point(), point(d_m=3)])
    packed = PackedNetworks([point(), point(seed=2)])
    with pytest.raises(UserError, match="one batch size and length"):
        packed([torch.rand(2, 5, 5).double(), torch.rand(3, 5, 5).double()])
    with pytest.raises(UserError, match="2 inputs for 3"):
        PackedNetworks([point(), point(), point()])([torch.rand(2, 5, 5).double()] * 2)
