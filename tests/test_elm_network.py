"""The ELM Network against an independent float64 loop over steps and neurons, and its
parameter accounting against docs/elm-model.md §4."""

import math

import pytest
import torch

from elmbridge.errors import UserError
from elmnet.network import ELMNetwork, ELMNetworkConfig, ELMNetworkState, regularisation
from elmnet.params import network_parameters
from elmnet.recurrence import use_backend

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_forward(net: ELMNetwork, x: torch.Tensor) -> torch.Tensor:
    """Literal float64 loop from docs/elm-model.md §4: every step, every neuron on its own.

    Synapses read [x_t ; o_{t−1}] through the module's fixed `source` indices; everything
    else is the document's equations with plain tensors.
    """
    c = net.config
    d = {k: v.detach().double() for k, v in net.state_dict().items() if v.is_floating_point()}
    if not x.is_floating_point():
        x = torch.nn.functional.one_hot(x, c.d_in).double() * c.token_scale
    x = x.double()
    B, T, _ = x.shape

    def taus(prefix, d_m):
        sig = torch.sigmoid(d[f"{prefix}.theta_m"])
        return c.tau_min + (c.tau_max - c.tau_min) * sig

    def neuron_step(prefix, n, src, m, d_tree, d_brch, hidden_layer):
        """One ELM neuron, v2, no branch trace. Returns its new memory."""
        tau = taus(prefix, m.shape[-1])
        k_m, k_lam = torch.exp(-c.dt / tau), torch.exp(-c.dt * c.lam / tau)
        source = getattr(net, prefix).source[n]
        syn = src[:, source] * d[f"{prefix}.w_s"][n]
        b = c.input_scale * syn.view(B, d_tree, d_brch).sum(-1)
        a = torch.cat([b, k_m * m], -1) @ d[f"{prefix}.w_first"][n] + d[f"{prefix}.b_first"][n]
        if hidden_layer:
            h = torch.relu(a) ** 2 if c.activation == "relu2" else torch.relu(a)
            a = h @ d[f"{prefix}.w_last"][n] + d[f"{prefix}.b_last"][n]
        dm = 1.7159 * torch.tanh(2.0 / 3.0 * a)
        return k_m * m + (1 - k_lam) * dm

    m = torch.zeros(B, c.N, c.d_m, dtype=torch.float64)
    rbar = torch.zeros(B, c.N, dtype=torch.float64)
    o = torch.zeros(B, c.N, dtype=torch.float64)
    mr = torch.zeros(B, c.n_out, c.readout_d_m, dtype=torch.float64)
    k_r = math.exp(-c.dt / c.tau_r)
    logits = []
    for t in range(T):
        src = torch.cat([x[:, t], o], -1)
        m = torch.stack(
            [neuron_step("hidden", n, src, m[:, n], c.d_tree, c.d_brch, True) for n in range(c.N)],
            1,
        )
        r = (m * d["hidden.w_y"]).sum(-1)
        rbar = k_r * rbar + (1 - k_r) * r
        o = torch.relu(r - rbar + d["hidden.beta"])
        mr = torch.stack(
            [
                neuron_step("readout", v, o, mr[:, v], c.d_tree, c.d_brch, False)
                for v in range(c.n_out)
            ],
            1,
        )
        y = (mr * d["readout.w_y"]).sum(-1)
        logits.append(y @ d["logits.weight"].T + d["logits.bias"])
    return torch.stack(logits, 1)


def tiny(**overrides) -> ELMNetworkConfig:
    base = dict(d_in=5, n_out=3, N=6, d_m=2, d_tree=3, d_brch=2, rho=0.5, tau_min=1.0,
                tau_max=20.0, tau_r=3.0, seed=1)  # fmt: skip
    return ELMNetworkConfig(**{**base, **overrides})


def randomise(net: ELMNetwork, seed: int) -> ELMNetwork:
    """Nonzero β and larger weights so that ReLUs switch and tanh bends."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.hidden.beta.copy_(torch.rand(net.config.N, generator=g, dtype=torch.float64) - 0.3)
        for p in net.parameters():
            p.mul_(1.0 + torch.rand(p.shape, generator=g, dtype=torch.float64))
    return net


REFERENCE_CONFIGS = [
    tiny(),
    tiny(rho=0.0, activation="relu"),
    tiny(rho=1.0, d_mlp=3, N=4, n_out=2),
    tiny(N=5, d_m=3, d_tree=2, d_brch=4, readout_d_m=2, tau_min=0.1, tau_max=50.0, dt=0.5),
]


@pytest.mark.parametrize("config", REFERENCE_CONFIGS)
def test_matches_float64_reference(config):
    net = randomise(ELMNetwork(config).double().eval(), seed=2)
    x = torch.rand(3, 25, config.d_in, generator=torch.Generator().manual_seed(3)) * 0.4
    logits, _ = net(x.double())
    assert logits.dtype == torch.float64 and logits.shape == (3, 25, config.n_out)
    torch.testing.assert_close(logits, reference_forward(net, x), rtol=1e-10, atol=1e-10)
    # The recurrent loop matters: outputs move and some ReLUs are off.
    activity = net.run(x.double()).activity
    assert (activity > 0).any() and (activity == 0).any()


def test_tokens_match_one_hot_reference():
    config = tiny(token_scale=3.0, d_in=7)
    net = randomise(ELMNetwork(config).double().eval(), seed=4)
    tokens = torch.randint(7, (2, 20), generator=torch.Generator().manual_seed(5))
    logits, _ = net(tokens)
    torch.testing.assert_close(logits, reference_forward(net, tokens), rtol=1e-10, atol=1e-10)
    one_hot = torch.nn.functional.one_hot(tokens, 7).double() * 3.0
    torch.testing.assert_close(net(one_hot)[0], logits, rtol=1e-12, atol=1e-12)


def test_float32_close_to_float64_reference():
    net = randomise(ELMNetwork(tiny()).double(), seed=6).float().eval()
    x = torch.rand(2, 40, 5, generator=torch.Generator().manual_seed(7)) * 0.4
    logits, _ = net(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits.double(), reference_forward(net, x), rtol=1e-4, atol=1e-4)


def test_chunked_equals_full_with_carried_state():
    net = randomise(ELMNetwork(tiny()).double().eval(), seed=8)
    x = torch.rand(2, 30, 5, dtype=torch.float64) * 0.4
    full, full_state = net(x)
    state, parts = None, []
    for chunk in (x[:, :11], x[:, 11:12], x[:, 12:12], x[:, 12:]):
        y, state = net(chunk, state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-12, atol=1e-12)
    assert isinstance(state, ELMNetworkState)
    for a, b in zip(state, full_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradcheck(dropout):
    """Gradients in the input, every parameter and every part of the carried state."""
    config = tiny(N=4, n_out=2, d_in=3, dropout_in=dropout, dropout_rec=dropout)
    net = randomise(ELMNetwork(config).double(), seed=9)
    net.train()
    g = torch.Generator().manual_seed(10)
    x = (torch.rand(2, 5, 3, dtype=torch.float64, generator=g) * 0.5).requires_grad_()
    state = ELMNetworkState(
        torch.randn(2, 4, 2, dtype=torch.float64, generator=g),
        torch.randn(2, 4, dtype=torch.float64, generator=g),
        torch.rand(2, 4, dtype=torch.float64, generator=g),
        torch.randn(2, 2, 3, dtype=torch.float64, generator=g),
    )
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in net.named_parameters())

    def f(x, *rest):
        torch.manual_seed(0)  # the same dropout masks in every evaluation
        st = ELMNetworkState(*rest[:4])
        ps = dict(zip(names, rest[4:], strict=True))
        out = torch.func.functional_call(net, ps, (x,), {"state": st}, strict=False)
        return out[0], *out[1]

    inputs = (x, *(s.requires_grad_() for s in state[:4]), *params)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_regularisers_match_their_definition():
    net = randomise(ELMNetwork(tiny()).double(), seed=11)
    x = torch.rand(2, 9, 5, dtype=torch.float64)
    out = net.run(x)
    act = out.activity.square().mean()
    z = torch.cat([z.flatten() for z in out.mlp_out])
    expected = 0.3 * act + 0.07 * z.square().mean()
    torch.testing.assert_close(regularisation(out, activity=0.3, mlp_output=0.07), expected)
    # Gradients flow through the hand-written backward into the regularised quantities.
    regularisation(out, activity=1.0, mlp_output=1.0).backward()
    assert net.hidden.w_last.grad.abs().sum() > 0 and net.readout.w_first.grad.abs().sum() > 0


def test_dropout_only_in_training():
    net = ELMNetwork(tiny(dropout_in=0.5, dropout_rec=0.5))
    x = torch.rand(2, 10, 5)
    net.eval()
    a, _ = net(x)
    torch.testing.assert_close(net(x)[0], a)
    net.train()
    assert not torch.allclose(net(x)[0], a)
    torch.testing.assert_close(ELMNetwork(tiny()).eval()(x)[0], a)  # same seed, no dropout


# ---------------------------------------------------------------------------------------
# Parameter accounting


def document_k_e(d_m: int, d_mlp: int, d_tree: int) -> int:
    """docs/elm-model.md §4, verbatim."""
    return d_mlp * (d_tree + d_m + 1) + d_m * (d_mlp + 1) + (d_m + 1)


def readout_by_hand(n_out: int, d_m: int, k_c: int, d_tree: int) -> int:
    """Readout neurons (k_c synapses, one linear layer, w_y) and Linear(n_out → n_out)."""
    per_neuron = k_c + d_m * (d_tree + d_m) + d_m + d_m
    return n_out * per_neuron + n_out * n_out + n_out


@pytest.mark.parametrize(
    "config",
    [*REFERENCE_CONFIGS, tiny(d_mlp=7), ELMNetworkConfig.for_task("shd-adding", N=3)],
)
def test_parameter_count_matches_document_and_module(config):
    count = network_parameters(config)
    k_e = document_k_e(config.d_m, config.d_mlp, config.d_tree)
    k_c = config.d_tree * config.d_brch
    readout = readout_by_hand(config.n_out, config.readout_d_m, k_c, config.d_tree)
    assert (count.N, count.k_e, count.k_c) == (config.N, k_e, k_c)
    assert count.total == config.N * (k_e + k_c) + readout
    net = ELMNetwork(config)
    assert sum(p.numel() for p in net.parameters()) == count.total
    assert sum(p.numel() for p in net.hidden.parameters()) == config.N * (k_e + k_c)
    assert net.parameter_count() == count


# Published fixed-budget sweeps (docs/elm-model.md §4): (d_m, N).
ENWIK8_SWEEP = [(5, 2398), (20, 742), (30, 440), (50, 206), (100, 64)]
SHD_SWEEP = [(3, 130), (5, 96), (9, 57), (15, 32), (25, 15)]


@pytest.mark.parametrize(
    "task, k_c, sweep, published_p",
    [("enwik8", 750, ENWIK8_SWEEP, 3.51e6), ("shd-adding", 300, SHD_SWEEP, 77e3)],
)
def test_published_sweeps_share_one_hidden_budget(task, k_c, sweep, published_p):
    """Every published N is floor(P_hidden / (k_e + k_c)) for one P_hidden.

    N = floor(P_h / s) holds for N·s ≤ P_h < (N+1)·s; intersecting these intervals over
    the sweep gives the budgets consistent with all of it. That the intersection is not
    empty (and narrow) checks the k_e formula with d_mlp = 2 d_m and a readout that does
    not depend on N. With this toolkit's readout the total P is within 0.5 % of the
    published one, which is given to 2–3 digits (≈77K, ≈3.51M; see the module docstring
    of elmnet.network for the readout's design).
    """
    sizes = {}
    for d_m, _ in sweep:
        c = ELMNetworkConfig.for_task(task, d_m=d_m, k_c=k_c)
        assert c.k_c == k_c
        sizes[d_m] = document_k_e(d_m, 2 * d_m, c.d_tree) + k_c
    low = max(n * sizes[d_m] for d_m, n in sweep)
    high = min((n + 1) * sizes[d_m] for d_m, n in sweep)
    assert low < high
    probe = ELMNetworkConfig.for_task(task, k_c=k_c)
    readout = network_parameters(probe).readout
    budget = readout + (low + high) // 2
    assert abs(budget - published_p) / published_p < 0.005
    for d_m, n in sweep:
        config = ELMNetworkConfig.from_budget(budget, d_m=d_m, k_c=k_c, task=task)
        assert config.N == n
        assert network_parameters(config).total <= budget
    # The brief's examples, with the budget this readout implies.
    if task == "shd-adding":
        assert ELMNetwork.from_budget(budget, d_m=5, k_c=300, task=task).config.N == 96
    else:
        assert ELMNetworkConfig.from_budget(budget, d_m=20, k_c=750, task=task).N == 742


def test_k_c_is_independent_of_k_e():
    a = ELMNetworkConfig.for_task("enwik8", k_c=750)
    b = ELMNetworkConfig.for_task("enwik8", k_c=1500)
    assert (a.d_tree, a.d_brch, b.d_brch) == (50, 15, 30)
    assert a.k_e == b.k_e and b.k_c == 2 * a.k_c
    bigger = ELMNetworkConfig.from_budget(3_500_000, d_m=20, k_c=1500, task="enwik8")
    assert bigger.N < ELMNetworkConfig.from_budget(3_500_000, d_m=20, k_c=750, task="enwik8").N


# ---------------------------------------------------------------------------------------
# Connectivity


def test_connectivity_is_a_fixed_sparse_gather():
    """ρ of the slots read hidden outputs, the rest inputs; nothing dense in N × N.

    With N = 20000 a dense recurrent matrix (N·d_tree × N floats) would need 3.2 GB; the
    module's tensors and one forward/backward stay small.
    """
    c = tiny(N=20000, d_in=4, n_out=2, d_m=1, d_tree=2, d_brch=2, rho=0.8)
    net = ELMNetwork(c)
    source = net.hidden.source
    assert source.shape == (c.N, c.k_c)
    recurrent = source >= c.d_in
    assert abs(recurrent.float().mean().item() - 0.8) < 0.01
    largest = max(t.numel() for t in [*net.parameters(), *net.buffers()])
    assert largest <= c.N * c.k_c * 2
    assert net.hidden.rec_col.numel() <= recurrent.sum()
    x = torch.rand(1, 3, 4)
    net(x)[0].sum().backward()
    assert net.hidden.w_s.grad[recurrent].abs().sum() > 0
    # Fixed at init and reproducible from the seed; another seed wires differently.
    assert torch.equal(
        ELMNetwork(tiny(seed=3)).hidden.source, ELMNetwork(tiny(seed=3)).hidden.source
    )
    assert not torch.equal(ELMNetwork(tiny(seed=3)).hidden.source, ELMNetwork(tiny()).hidden.source)


def test_state_dict_round_trip():
    net = randomise(ELMNetwork(tiny()).double(), seed=12)
    other = ELMNetwork(tiny(seed=5)).double()
    other.load_state_dict(net.state_dict())
    x = torch.rand(2, 8, 5, dtype=torch.float64)
    torch.testing.assert_close(other.eval()(x)[0], net.eval()(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("dropped", [False, True])
@pytest.mark.parametrize("backend", ["eager", "cpp"])
def test_token_pre_is_the_one_hot_product(dropped, backend):
    """The token path's row gather against the dense one-hot product of the composed input
    matrix (float64), with and without a per-token dropout factor, values and gradients
    (through the gather against through the dense product). With gradients on, the table
    holds only the tokens that occur (here 1, 4 and 5 of 0–6), renumbered."""
    config = tiny(d_in=7, token_scale=3.0)
    bank = randomise(ELMNetwork(config).double(), seed=16).hidden
    g = torch.Generator().manual_seed(17)
    tokens = torch.tensor([1, 4, 5])[torch.randint(3, (6, 4), generator=g)]  # (T, B)
    keep = None
    if dropped:
        keep = (torch.rand(6, 4, 1, generator=g, dtype=torch.float64) > 0.3) / 0.7
    with use_backend(backend):
        pre = bank.token_pre(tokens, 3.0, keep)
        matrix = bank.feedforward_matrix()
    one_hot = torch.nn.functional.one_hot(tokens, 7).double() * 3.0
    if dropped:
        one_hot = one_hot * keep
    drive = (one_hot @ matrix).view(6, 4, config.N, -1)
    expected = drive.transpose(1, 2) + bank.b_first.unsqueeze(1)
    assert pre.shape == (6, config.N, 4, config.d_mlp)
    torch.testing.assert_close(pre, expected, rtol=1e-12, atol=1e-12)
    weights = (bank.w_s, bank.w_first, bank.b_first)
    probe = torch.rand(pre.shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((pre * probe).sum(), weights)
    theirs = torch.autograd.grad((expected * probe).sum(), weights)
    for a, b in zip(ours, theirs, strict=True):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_weights_kept_between_calls_follow_every_change():
    """Without gradients the bank keeps what it derives from its weights (the composed
    input matrix, the recurrent synapse values, U, the gains) between calls; an optimiser
    step, an in-place edit, a state-dict load or a dtype change must each be seen."""
    config = tiny()
    net = randomise(ELMNetwork(config).double().eval(), seed=13)
    x = torch.rand(2, 15, 5, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    with torch.no_grad():
        first = net(x)[0]
        torch.testing.assert_close(first, reference_forward(net, x), rtol=1e-10, atol=1e-10)
        net.hidden.w_s.mul_(1.5)  # every derived tensor of the hidden bank depends on w_s
        net.hidden.w_first.add_(0.1)
    with torch.inference_mode():
        changed = net(x)[0]
    assert not torch.allclose(changed, first)
    torch.testing.assert_close(changed, reference_forward(net, x), rtol=1e-10, atol=1e-10)
    # An optimiser step with gradients on, then inference again; torch's fused Adam
    # changes the weights without bumping their version counters (torch 2.13).
    for optimiser in (
        torch.optim.SGD(net.parameters(), lr=0.5),
        torch.optim.Adam(net.parameters(), lr=0.1, fused=True),
    ):
        with torch.no_grad():
            before = net(x)[0]
        net.zero_grad()
        net(x)[0].square().sum().backward()
        optimiser.step()
        with torch.no_grad():
            after = net(x)[0]
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, reference_forward(net, x), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        other = randomise(ELMNetwork(config).double(), seed=15)
        net.load_state_dict(other.state_dict())
        torch.testing.assert_close(net(x)[0], reference_forward(net, x), rtol=1e-10, atol=1e-10)
        net.float()
        y = net(x.float())[0]
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), reference_forward(net, x), rtol=1e-4, atol=1e-4)
    # κ_m and the gains (from the buffer θ_m, kept with gradients on too): a change of θ_m
    # is seen, and what inference mode derived is not reused where autograd saves it.
    fresh = randomise(ELMNetwork(config).double(), seed=16)
    with torch.inference_mode():
        fresh(x)
    fresh(x)[0].square().sum().backward()
    with torch.no_grad():
        fresh.hidden.theta_m.mul_(0.8)
        torch.testing.assert_close(fresh(x)[0], reference_forward(fresh, x), rtol=1e-10,
                                   atol=1e-10)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(N=0), "N must be a positive integer"),
        (dict(rho=1.5), "rho is a probability"),
        (dict(dropout_rec=1.0), r"dropout_rec must be in \[0, 1\)"),
        (dict(tau_min=5.0, tau_max=5.0), "tau_min must be smaller"),
        (dict(activation="gelu"), "unknown activation 'gelu'"),
    ],
)
def test_bad_configurations_are_clear(kwargs, message):
    with pytest.raises(UserError, match=message):
        tiny(**kwargs)


def test_bad_task_budget_and_k_c_are_clear():
    with pytest.raises(UserError, match="unknown task 'mnist'"):
        ELMNetworkConfig.for_task("mnist")
    with pytest.raises(UserError, match="multiple of the 30 branches"):
        ELMNetworkConfig.for_task("shd-adding", k_c=301)
    with pytest.raises(UserError, match="less than one neuron"):
        ELMNetworkConfig.from_budget(8500, d_m=5, k_c=300, task="shd-adding")


def test_wrong_input_is_clear():
    net = ELMNetwork(tiny())
    with pytest.raises(UserError, match=r"\(batch, time, 5\)"):
        net(torch.zeros(2, 3, 4))
    with pytest.raises(UserError, match=r"tokens must lie in \[0, 5\)"):
        net(torch.full((2, 3), 5))


def test_speed_benchmark_runs_and_both_methods_agree():
    from benchmarks import elm_network_speed

    # main() asserts that the hand-written and autograd recurrences agree before timing.
    rows = elm_network_speed.main(
        ["--shd-steps", "8", "--enwik8-steps", "3", "--repeats", "1", "--threads", "1"]
    )
    assert [r["task"] for r in rows] == ["shd-adding", "enwik8"]
    assert [r["P"] for r in rows] == [77_291, 3_516_282]
    assert all(r["hand-written"] > 0 and r["autograd loop"] > 0 for r in rows)
