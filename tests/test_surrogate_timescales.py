"""Freezing slow memory units at evaluation (surrogate.timescales)."""

import math

import pytest
import torch
from toy_cell import make_toy_store

from elmbridge.errors import UserError
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from surrogate.data import inspect_store
from surrogate.evaluate import EvalProtocol
from surrogate.timescales import FrozenMemoryNeuron, freeze_ablation


def model(seed=0):
    torch.manual_seed(seed)
    net = ELMNeuron(ELMConfig(d_in=16, d_m=6, d_tree=4, d_brch=4, routing="neuronio"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def test_freezing_every_unit_leaves_only_the_readout_bias():
    net = model()
    x = torch.randn(2, 50, 16)
    frozen = FrozenMemoryNeuron(net, tau_cut_ms=0.5)  # below τ_min = 1 ms: all frozen
    assert frozen.n_frozen == 6
    y, state = frozen(x)
    torch.testing.assert_close(y, net.head.bias.expand_as(y), rtol=0, atol=0)
    assert state.memory.abs().max() == 0


def test_a_cut_above_every_tau_changes_nothing():
    net = model()
    x = torch.randn(2, 50, 16)
    frozen = FrozenMemoryNeuron(net, tau_cut_ms=1000.0)
    assert frozen.n_frozen == 0
    torch.testing.assert_close(frozen(x)[0], net(x)[0], rtol=0, atol=0)


def test_frozen_units_do_not_feed_the_output():
    net = model()
    cut = 10.0
    slow = net.tau_m > cut
    assert 0 < slow.sum() < 6
    x = torch.randn(2, 60, 16)
    y = FrozenMemoryNeuron(net, cut)(x)[0]
    # Whatever the frozen units would propose (the MLP's last layer rows) or read out
    # (their readout columns) no longer matters; the unfrozen model does change.
    changed = model()
    with torch.no_grad():
        changed.mlp[-1].weight[slow] += 5.0
        changed.mlp[-1].bias[slow] -= 2.0
        changed.head.weight[:, slow] += 3.0
    torch.testing.assert_close(FrozenMemoryNeuron(changed, cut)(x)[0], y, rtol=0, atol=1e-6)
    assert not torch.allclose(changed(x)[0], net(x)[0])


def test_freeze_ablation_rows(tmp_path):
    path = tmp_path / "toy.zarr"
    make_toy_store(path, n_sims=2, n_segments=8, n_time=1200)
    info = inspect_store(path)
    rows = freeze_ablation(model(), info, [0, 1], [5.0, 0.5],
                           EvalProtocol(max_spikes=1000))  # fmt: skip
    assert [r["tau_cut_ms"] for r in rows] == [math.inf, 0.5, 5.0]
    assert [r["n_frozen"] for r in rows][:2] == [0, 6]
    assert rows[0]["AUC_lost"] == 0
    with pytest.raises(UserError, match="positive times"):
        freeze_ablation(model(), info, [0], [0.0])
