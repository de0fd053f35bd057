"""Fitted neurons as the hidden neurons of an ELM Network (elmnet/transfer.py).

The network built from a fitted neuron is checked against the neuron's own equations as
`elmnet.reference` writes them (docs/elm-model.md §1), fed with the branch input that the
network's synapses route to each of the neuron's branches, computed here by a loop.
"""

import json
import math

import pytest
import torch
from task_files import write_shd_pair

from elmbridge.errors import UserError
from elmnet import train
from elmnet.config import ELMConfig, ELMNetworkConfig
from elmnet.network import ELMNetwork
from elmnet.neuron import ELMNeuron
from elmnet.reference import reference_forward
from elmnet.released import load_released
from elmnet.transfer import branch_map, neuron_network_fields, transfer_neuron


def fitted_neuron(seed: int = 0, **overrides) -> ELMNeuron:
    """A small NeuronIO-style neuron with random (not initial) weights, in float64."""
    config = ELMConfig(
        d_in=20, d_out=2, d_m=4, d_tree=6, d_brch=5, routing="neuronio", tau_s=5.0,
        **overrides,
    )  # fmt: skip
    neuron = ELMNeuron(config).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in neuron.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
        neuron.theta_m.copy_(torch.randn(neuron.theta_m.shape, generator=g, dtype=torch.float64))
    return neuron


def transferred(neuron: ELMNeuron, freeze: bool = True, **overrides) -> ELMNetwork:
    fields = dict(d_in=7, n_out=3, N=3, d_tree=4, d_brch=3, rho=0.0, seed=5)
    fields.update(neuron_network_fields(neuron))
    fields.update(overrides)
    network = ELMNetwork(ELMNetworkConfig(**fields)).double()
    transfer_neuron(network, neuron, freeze=freeze)
    return network


def routed_branch_input(network: ELMNetwork, x: torch.Tensor) -> torch.Tensor:
    """(N, B, T, d_tree) branch sums 10·Σ w_s·x[source] of the feed-forward synapses."""
    bank, c = network.hidden, network.config
    out = x.new_zeros(c.N, x.shape[0], x.shape[1], c.d_tree)
    for n in range(c.N):
        for k in range(c.k_c):
            source = int(bank.source[n, k])
            assert source < c.d_in  # rho = 0: no recurrent synapse
            out[n, :, :, k // c.d_brch] += c.input_scale * bank.w_s[n, k] * x[:, :, source]
    return out


def neuron_on_branches(neuron: ELMNeuron, branch_input: torch.Tensor, mapping, head=None):
    """The fitted neuron's reference equations with branch k driven by branch_input[..., j]
    where mapping[j] = k and by nothing elsewhere; the readout `head` (default its own)."""
    c = neuron.config
    batch, n_steps, _ = branch_input.shape
    full = branch_input.new_zeros(batch, n_steps, c.d_tree)
    full[:, :, mapping] = branch_input
    # One unit-weight synapse per branch: the reference then reads the branch input as is.
    params = {
        "theta_s": torch.ones(c.d_tree, dtype=torch.float64),
        "index": torch.arange(c.d_tree),
        "valid": torch.ones(c.d_tree, dtype=torch.bool),
        "theta_m": neuron.theta_m.detach(),
        "mlp": [(m.weight.detach(), m.bias.detach()) for m in neuron.mlp if hasattr(m, "weight")],
        "head": head or (neuron.head.weight.detach(), neuron.head.bias.detach()),
    }
    return reference_forward(params, c.to_dict(), full)


@pytest.mark.parametrize("dynamics", ["v1", "v2"])
def test_network_computes_what_the_fitted_neuron_computes(dynamics):
    neuron = fitted_neuron(dynamics=dynamics)
    network = transferred(neuron).eval()
    c = network.config
    mapping = branch_map(neuron.config.d_tree, c.d_tree)
    assert mapping.tolist() == [0, 1, 3, 4]  # ⌊j·6/4⌋
    g = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.full((2, 25, c.d_in), 0.3, dtype=torch.float64), generator=g) * 0.1
    out = network.run(x)
    routed = routed_branch_input(network, x)
    d_m = c.d_m
    identity = (torch.eye(d_m, dtype=torch.float64), torch.zeros(d_m, dtype=torch.float64))
    tau_m = neuron.tau_m.detach()
    kappa_m = torch.exp(-1.0 / tau_m)
    kappa_b = math.exp(-1.0 / neuron.config.tau_s)
    kappa_r = math.exp(-1.0 / c.tau_r)
    for n in range(c.N):
        # Memory: the reference with an identity readout returns m_t itself.
        memory = neuron_on_branches(neuron, routed[n], mapping, head=identity)
        torch.testing.assert_close(out.memory[:, n].transpose(0, 1), memory, rtol=1e-11, atol=1e-12)
        # MLP output z from the traced branch input and the previous memory.
        trace, b = torch.zeros_like(routed[n][:, 0]), []
        for t in range(x.shape[1]):
            trace = kappa_b * trace + routed[n][:, t]
            b.append(trace)
        b = torch.stack(b, 1)
        full = b.new_zeros(*b.shape[:2], neuron.config.d_tree)
        full[..., mapping] = b
        previous = torch.cat([memory.new_zeros(memory.shape[0], 1, d_m), memory[:, :-1]], 1)
        z = neuron.mlp(torch.cat([full, kappa_m * previous], -1))
        torch.testing.assert_close(out.mlp_out[0][:, n].transpose(0, 1), z, rtol=1e-10, atol=1e-11)
        # Output: the spike logit less its bias, high-passed and rectified (β = 0).
        logit = neuron_on_branches(neuron, routed[n], mapping)[..., 0]
        r = logit - neuron.head.bias[0].detach()
        r_bar, o = torch.zeros_like(r[:, 0]), []
        for t in range(x.shape[1]):
            r_bar = kappa_r * r_bar + (1 - kappa_r) * r[:, t]
            o.append(torch.relu(r[:, t] - r_bar))
        torch.testing.assert_close(
            out.activity[:, n].t(), torch.stack(o, 1), rtol=1e-10, atol=1e-11
        )


def test_chunked_run_carries_the_trace():
    network = transferred(fitted_neuron(seed=3)).eval()
    x = torch.rand(2, 20, 7, dtype=torch.float64)
    full, _ = network(x)
    first, state = network(x[:, :8])
    second, _ = network(x[:, 8:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_parameters_get_no_gradient(freeze):
    network = transferred(fitted_neuron(seed=2), freeze=freeze, rho=0.3)
    network.train()
    logits, _ = network(torch.rand(2, 10, 7, dtype=torch.float64))
    logits.square().sum().backward()
    copied = {"hidden.w_first", "hidden.b_first", "hidden.w_last", "hidden.b_last", "hidden.w_y"}
    for name, p in network.named_parameters():
        if freeze and name in copied:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initialisation_copies_weights_and_leaves_them_trainable():
    neuron = fitted_neuron(seed=4)
    network = transferred(neuron, freeze=False)
    bank = network.hidden
    for n in range(network.config.N):
        torch.testing.assert_close(bank.w_last[n], neuron.mlp[2].weight.detach().t())
        torch.testing.assert_close(bank.w_y[n], neuron.head.weight.detach()[0])
    torch.testing.assert_close(bank.tau_m, neuron.tau_m.detach())
    assert all(p.requires_grad for p in network.parameters())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_tree": 7, "d_brch": 2}, "cannot take a fitted neuron of 6"),
        ({"d_m": 5}, "d_m=5 differs"),
        ({"activation": "relu2"}, "activation='relu2' differs"),
        ({"tau_b": None}, "tau_b=None differs"),
    ],
)
def test_mismatch_is_one_line_user_error(overrides, message):
    with pytest.raises(UserError, match=message) as err:
        transferred(fitted_neuron(), **overrides)
    assert "\n" not in str(err.value)


def test_deeper_mlp_is_refused():
    with pytest.raises(UserError, match="one MLP hidden layer"):
        neuron_network_fields(fitted_neuron(n_mlp_layers=2))


def test_released_model_on_thirty_branches():
    """The published d_m = 20 fit (45 branches) as 30-branch network neurons, as in the
    composition experiment: memory equal to the neuron's equations on the routed input."""
    neuron = load_released("num_memory_20").double()
    network = transferred(neuron, N=2, d_in=11, d_tree=30, d_brch=2).eval()
    x = torch.poisson(torch.full((1, 30, 11), 0.2, dtype=torch.float64))
    out = network.run(x)
    mapping = branch_map(45, 30)
    routed = routed_branch_input(network, x)
    d_m = network.config.d_m
    identity = (torch.eye(d_m, dtype=torch.float64), torch.zeros(d_m, dtype=torch.float64))
    for n in range(2):
        memory = neuron_on_branches(neuron, routed[n], mapping, head=identity)
        torch.testing.assert_close(out.memory[:, n].transpose(0, 1), memory, rtol=1e-10, atol=1e-11)


# --- the commands: elmnet.train --neuron (released models), surrogate.compose (fits) ---


@pytest.fixture(scope="module")
def shd_dir(tmp_path_factory):
    return write_shd_pair(tmp_path_factory.mktemp("shd"), n_train=40, n_test=12)


COMMAND = (
    "--task shd --N 3 --k-c 60 --d-tree 30 --bin-ms 100 --steps 4 --eval-every 4 --batch 4 "
    "--no-progress --threads 1"
).split()


@pytest.mark.usefixtures("one_torch_thread")
def test_train_with_frozen_released_neuron_keeps_its_weights(shd_dir, tmp_path):
    out = tmp_path / "run"
    args = [*COMMAND, "--data", str(shd_dir), "--out", str(out), "--neuron", "num_memory_20"]
    assert train.main(args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["neuron"]["weights"] == "frozen"
    assert record["neuron"]["branch_map"] == branch_map(45, 30).tolist()
    assert record["network"]["d_m"] == 20 and record["network"]["dynamics"] == "v1"
    count = record["parameters"]
    # Frozen per hidden neuron: the MLP (50·40 + 40 + 40·20 + 20) and w_y (20).
    assert count["P"] - count["trainable"] == 3 * (50 * 40 + 40 + 40 * 20 + 20 + 20)
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    neuron = load_released("num_memory_20")
    torch.testing.assert_close(best["hidden.w_last"][2], neuron.mlp[2].weight.detach().t())
    torch.testing.assert_close(best["hidden.w_y"][0], neuron.head.weight.detach()[0])


@pytest.mark.usefixtures("one_torch_thread")
def test_random_weights_keep_the_architecture_and_parameter_count(shd_dir, tmp_path):
    runs = {}
    for mode in ("random", "init"):
        out = tmp_path / mode
        args = [*COMMAND, "--data", str(shd_dir), "--out", str(out), "--neuron",
                "num_memory_20", "--neuron-weights", mode]  # fmt: skip
        assert train.main(args) == 0
        runs[mode] = json.loads((out / "run.json").read_text())
    assert runs["random"]["network"] == runs["init"]["network"]
    assert runs["random"]["parameters"] == runs["init"]["parameters"]
    assert runs["init"]["parameters"]["trainable"] == runs["init"]["parameters"]["P"]


def test_neuron_options_refuse_contradictions(shd_dir, tmp_path):
    base = [*COMMAND, "--data", str(shd_dir), "--out", str(tmp_path / "x")]
    with pytest.raises(UserError, match="--neuron-weights needs --neuron"):
        train.main([*base, "--neuron-weights", "init"])
    with pytest.raises(UserError, match="--d-m 5 contradicts the --neuron's d_m=20"):
        train.main([*base, "--neuron", "num_memory_20", "--d-m", "5"])
    assert not (tmp_path / "x").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_compose_reads_a_model_file_and_refuses_point_neurons(shd_dir, tmp_path):
    from surrogate import compose
    from surrogate.model_file import save_model
    from surrogate.point_neurons import PointNeuron, PointNeuronConfig

    neuron = fitted_neuron(seed=6).float()
    save_model(neuron, tmp_path / "neuron.pt")
    out = tmp_path / "run"
    args = [*COMMAND, "--data", str(shd_dir), "--out", str(out), "--neuron",
            str(tmp_path / "neuron.pt"), "--d-tree", "4", "--k-c", "8"]  # fmt: skip
    assert compose.main(args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["neuron"]["kind"] == "model file" and record["network"]["d_m"] == 4
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    torch.testing.assert_close(best["hidden.b_first"][1], neuron.mlp[0].bias.detach())

    lif = PointNeuronConfig(kind="lif", d_in=2, groups=(0, 1), group_names=("a-exc", "a-inh"))
    save_model(PointNeuron(lif), tmp_path / "lif.pt")
    with pytest.raises(UserError, match="point neuron"):
        compose.main([*COMMAND, "--data", str(shd_dir), "--out", str(tmp_path / "lif"),
                      "--neuron", str(tmp_path / "lif.pt")])  # fmt: skip
