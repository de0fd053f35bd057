"""The ELM neuron against an independent float64 step-by-step implementation."""

import pytest
import torch

from elmbridge.errors import UserError
from elmnet.neuron import ELMConfig, ELMNeuron, ELMState
from elmnet.ops import exp_trace
from elmnet.params import neuron_parameters
from elmnet.reference import reference_forward


def module_params(model: ELMNeuron) -> tuple[dict, dict]:
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    params = {
        "theta_s": model.theta_s.detach(),
        "index": model.syn_index,
        "valid": model.syn_valid,
        "theta_m": model.theta_m.detach(),
        "mlp": [(m.weight.detach(), m.bias.detach()) for m in linears],
        "head": (model.head.weight.detach(), model.head.bias.detach()),
    }
    return params, model.config.to_dict()


def randomise(model: ELMNeuron, seed: int) -> ELMNeuron:
    """Random weights everywhere, some synaptic weights negative (relu matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        model.theta_s.add_(0.3)
    return model


CONFIGS = [
    dict(d_in=10, d_m=3, routing="none", activation="relu"),
    dict(d_in=12, d_m=4, d_tree=3, d_brch=5, routing="neuronio", activation="silu"),
    dict(d_in=9, d_m=5, d_tree=4, d_brch=3, routing="random", activation="relu2", routing_seed=3),
    dict(d_in=16, d_m=2, d_mlp=7, n_mlp_layers=2, d_tree=4, d_brch=6, routing="neuronio"),
    dict(d_in=8, d_m=6, routing="none", tau_min=2.0, tau_max=40.0, dt=0.5, lam=3.0, tau_s=2.5),
]


@pytest.mark.parametrize("dynamics", ["v1", "v2"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_matches_float64_reference(cfg, dynamics):
    model = randomise(ELMNeuron(ELMConfig(dynamics=dynamics, **cfg)).double(), seed=1)
    x = torch.randn(3, 40, cfg["d_in"], generator=torch.Generator().manual_seed(2))
    x = x.double()
    y, _ = model(x)
    ref = reference_forward(*module_params(model), x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


def test_float32_close_to_float64_reference():
    cfg = CONFIGS[1]
    model = randomise(ELMNeuron(ELMConfig(**cfg)), seed=4)
    x = torch.randn(2, 60, cfg["d_in"], generator=torch.Generator().manual_seed(5))
    y, _ = model(x)
    assert y.dtype == torch.float32
    ref = reference_forward(*module_params(model), x)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_exp_trace_matches_loop_with_initial_state():
    g = torch.Generator().manual_seed(0)
    for T in (1, 2, 5, 37, 64, 65):
        u = torch.randn(2, T, 3, generator=g, dtype=torch.float64)
        kappa = torch.tensor([0.0, 0.5, 0.99], dtype=torch.float64)
        init = torch.randn(2, 3, generator=g, dtype=torch.float64)
        b, expected = init, []
        for t in range(T):
            b = kappa * b + u[:, t]
            expected.append(b)
        torch.testing.assert_close(exp_trace(u, kappa, init), torch.stack(expected, 1))


@pytest.mark.parametrize("dynamics", ["v1", "v2"])
def test_chunked_equals_full(dynamics):
    cfg = CONFIGS[2]
    model = randomise(ELMNeuron(ELMConfig(dynamics=dynamics, **cfg)).double(), seed=7)
    x = torch.randn(2, 50, cfg["d_in"], dtype=torch.float64)
    full, state_full = model(x)
    state, parts = None, []
    for chunk in (x[:, :13], x[:, 13:14], x[:, 14:50]):
        y, state = model(chunk, state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.memory, state_full.memory)
    assert isinstance(state, ELMState)


GRADCHECK_CONFIGS = [
    dict(d_in=6, d_m=2, d_tree=3, d_brch=2, routing="neuronio", activation="silu"),
    dict(d_in=5, d_m=3, d_mlp=4, n_mlp_layers=2, d_tree=2, d_brch=3, routing="random",
         activation="relu2"),
    dict(d_in=4, d_m=2, routing="none", activation="identity"),
]  # fmt: skip


@pytest.mark.parametrize("dynamics", ["v1", "v2"])
@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS)
def test_gradcheck(cfg, dynamics):
    """Gradients in inputs, every parameter (τ_m learnable) and the carried state."""
    model = ELMNeuron(ELMConfig(learn_tau_m=True, dynamics=dynamics, **cfg))
    model = randomise(model.double(), seed=8)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 6, cfg["d_in"], dtype=torch.float64, generator=g).requires_grad_()
    branch = torch.randn(2, model.config.d_tree, dtype=torch.float64, generator=g)
    memory = torch.randn(2, cfg["d_m"], dtype=torch.float64, generator=g)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in model.named_parameters())

    def f(x, branch, memory, *ps):
        state = ELMState(branch, memory)
        out, new = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x, state))
        return out, new.memory

    inputs = (x, branch.requires_grad_(), memory.requires_grad_(), *params)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_parameter_count_matches_document_and_module():
    for d_m, expected in ((1, 4601), (20, 8002), (100, 54002)):
        cfg = ELMConfig.branch_elm_neuronio(d_m=d_m)
        count = neuron_parameters(cfg)
        assert count.total == expected
        assert count.k_c == 4500 and count.k_e == expected - 4500
        assert sum(p.numel() for p in ELMNeuron(cfg).parameters()) == expected
    for cfg in CONFIGS:
        for learn in (False, True):
            c = ELMConfig(learn_tau_m=learn, **cfg)
            assert neuron_parameters(c).total == sum(p.numel() for p in ELMNeuron(c).parameters())
    assert neuron_parameters(ELMConfig.branch_elm_neuronio(learn_tau_m=True)).total == 8022


def test_follows_input_dtype_and_device():
    model = ELMNeuron(ELMConfig(**CONFIGS[1]))
    x = torch.zeros(1, 3, 12)
    y, state = model(x)
    assert y.dtype == state.memory.dtype == torch.float32
    y64, state64 = model.double()(x.double())
    assert y64.dtype == state64.branch.dtype == torch.float64
    if torch.cuda.is_available():
        cuda_model = model.float().cuda()
        y_cuda, s_cuda = cuda_model(x.cuda())
        assert y_cuda.device.type == s_cuda.memory.device.type == "cuda"
        torch.testing.assert_close(y_cuda.cpu(), model.float().cpu()(x)[0])


def test_mixed_precision_trains():
    model = ELMNeuron(ELMConfig(**CONFIGS[3]))
    x = torch.randn(2, 20, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = model(x)
    assert state.memory.dtype == torch.float32
    y.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    reference, _ = model(x)
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_in=0), "d_in must be a positive integer"),
        (dict(d_in=4, d_m=-1), "d_m must be a positive integer"),
        (dict(d_in=4, d_mlp=0), "d_mlp must be a positive integer"),
        (dict(d_in=4, tau_min=10.0, tau_max=10.0), "tau_min must be smaller than tau_max"),
        (dict(d_in=4, tau_min=0.0), "tau_min must be positive"),
        (dict(d_in=4, activation="gelu"), "unknown activation 'gelu'"),
        (dict(d_in=4, routing="tree"), "unknown routing 'tree'"),
        (dict(d_in=4, dynamics="v3"), "unknown dynamics 'v3'"),
        (dict(d_in=4, d_tree=2), "routing 'none' connects channel i"),
        (dict(d_in=1277, d_tree=45, d_brch=100, routing="neuronio"), "d_in must be even"),
        (dict(d_in=1278, d_tree=45, d_brch=20, routing="neuronio"), "larger than d_brch=20"),
    ],
)
def test_bad_configurations_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ELMConfig(**kwargs)


def test_wrong_input_shape_is_clear():
    model = ELMNeuron(ELMConfig(d_in=4))
    with pytest.raises(UserError, match=r"\(batch, time, 4\)"):
        model(torch.zeros(2, 3, 5))
    with pytest.raises(UserError, match=r"\(batch, time, 4\)"):
        model(torch.zeros(3, 4))


# Explicit routing: branches of unequal size, a channel read by two branches, one unread.
BRANCHES = [[0, 5, 6], [2], [7, 1, 3, 5]]


@pytest.mark.parametrize("dynamics", ["v1", "v2"])
def test_explicit_routing_reads_the_listed_channels(dynamics):
    cfg = ELMConfig(
        d_in=8, d_m=3, d_brch=5, routing="explicit", branch_inputs=BRANCHES, dynamics=dynamics
    )
    assert cfg.d_tree == 3 and cfg.branch_inputs == ((0, 5, 6), (2,), (7, 1, 3, 5))
    model = randomise(ELMNeuron(cfg).double(), seed=7)
    x = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(8)).double()
    y, _ = model(x)
    # Slot tables written out by hand from the branch lists, not by the routing code.
    index = torch.tensor([0, 5, 6, 0, 0, 2, 2, 2, 2, 2, 7, 1, 3, 5, 7])
    valid = torch.tensor([1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0], dtype=torch.bool)
    params, as_dict = module_params(model)
    ref = reference_forward({**params, "index": index, "valid": valid}, as_dict, x)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    # An input no branch lists has no effect on the output.
    x4 = x.clone()
    x4[..., 4] += 3.0
    torch.testing.assert_close(model(x4)[0], y, rtol=0, atol=0)


def test_explicit_routing_round_trips_through_a_dict():
    import json

    cfg = ELMConfig(d_in=8, d_m=3, d_brch=4, routing="explicit", branch_inputs=BRANCHES)
    again = ELMConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(routing="explicit"), "goes with routing 'explicit'.*without branch_inputs"),
        (dict(routing="random", d_tree=3, d_brch=4, branch_inputs=BRANCHES), "with branch_inputs"),
        (dict(d_brch=3, branch_inputs=BRANCHES), "branch 2 reads 4 channels.*d_brch >= 4"),
        (dict(d_tree=2, d_brch=4, branch_inputs=BRANCHES), "lists 3 branches but d_tree=2"),
        (dict(d_brch=4, branch_inputs=[[0], [8]]), r"channel 8, outside 0\.\.7"),
        (dict(d_brch=4, branch_inputs=[[0], [-1]]), r"channel -1, outside"),
        (dict(d_brch=4, branch_inputs=[[0], []]), "branch 1 reads no input channel"),
        (dict(d_brch=4, branch_inputs=[[0], [1.5]]), r"holds 1\.5, not an input channel"),
        (dict(d_brch=4, branch_inputs="0,1"), "list of branches"),
        (dict(d_brch=4, branch_inputs=[3]), r"branch_inputs\[0\] must be a list"),
    ],
)
def test_bad_explicit_routings_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        ELMConfig(**{"d_in": 8, "routing": "explicit", **kwargs})
    assert "\n" not in str(err.value)
