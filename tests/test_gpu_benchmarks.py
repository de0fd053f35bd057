"""The prepared GPU run (`benchmarks.gpu_table`) and its CUDA-graph rows, on the CPU.

CI has no GPU: the captures themselves never run here. What runs is everything around
them: the wrappers of `benchmarks.cuda_graph` compute the models' outputs and gradients
(off CUDA they call the loops directly), the benchmarks' autocast option, and the
driver's files.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from benchmarks import cuda_graph, elm_network_speed, gpu_table
from elmnet.config import ELMConfig, ELMNetworkConfig
from elmnet.network import ELMNetwork
from elmnet.neuron import ELMNeuron
from elmnet.recurrence import use_backend


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _check_same(model, expected_fn, got_fn) -> list[torch.Tensor]:
    """expected_fn() and got_fn() give the same output and parameter gradients (of the
    output's squared sum), to float64 rounding; returns the gradients."""
    with use_backend("eager"):
        expected = expected_fn()
        expected.square().sum().backward()
        grads = _grads(model)
        model.zero_grad()
        got = got_fn()
        got.square().sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(_grads(model), grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    return grads


@pytest.mark.parametrize(
    "task, overrides", [("shd-adding", {"N": 24, "d_m": 5, "k_c": 60}), ("enwik8", {"N": 40})]
)
def test_graphed_network_computes_the_networks_logits_and_gradients(task, overrides):
    config = ELMNetworkConfig.for_task(task, dropout_in=0.0, dropout_rec=0.0, **overrides)
    net = ELMNetwork(config).double()
    x, _ = elm_network_speed.task_inputs(task, config, 3, 7, torch.device("cpu"))
    x = x.double() if x.is_floating_point() else x
    loops = cuda_graph.GraphedLoops()
    grads = _check_same(net, lambda: net(x)[0], lambda: cuda_graph.network_logits(net, x, loops))
    assert any(g.abs().sum() > 0 for g in grads)


def test_graphed_neuron_computes_the_neurons_output_and_gradients():
    model = ELMNeuron(ELMConfig.branch_elm_neuronio(d_m=4)).double()
    x = torch.randn(2, 9, 1278, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loops = cuda_graph.GraphedLoops()
    _check_same(model, lambda: model(x)[0], lambda: cuda_graph.neuron_output(model, x, loops))


def test_graph_rows_are_checked_against_eager_outputs_and_gradients():
    config = ELMNetworkConfig.for_task(
        "shd-adding", dropout_in=0.0, dropout_rec=0.0, N=24, d_m=5, k_c=60
    )
    net = ELMNetwork(config)
    x, _ = elm_network_speed.task_inputs("shd-adding", config, 2, 6, torch.device("cpu"))
    loops = cuda_graph.GraphedLoops()

    def eager():
        return net(x)[0]

    assert cuda_graph.why_not(net, eager, lambda: cuda_graph.network_logits(net, x, loops)) is None
    assert all(p.grad is None for p in net.parameters())  # left as found

    def off():  # another output
        return 1.01 * net(x)[0]

    assert "capture or replay failed: AssertionError" in cuda_graph.why_not(net, eager, off)

    def no_gradients():  # the same output, cut off from the parameters
        return eager().detach().requires_grad_()

    assert "gradient is missing" in cuda_graph.why_not(net, eager, no_gradients)

    def other_gradients():  # the same output, other gradients
        out = eager()
        return out + 0.01 * (out - out.detach())

    assert "capture or replay failed: AssertionError" in cuda_graph.why_not(
        net, eager, other_gradients
    )

    def broken():
        raise RuntimeError("operation not permitted when stream is capturing")

    assert "RuntimeError: operation not permitted" in cuda_graph.why_not(net, eager, broken)


@pytest.mark.parametrize("backend", ["eager", "auto"])
def test_backward_inside_autocast_equals_backward_after_it(backend):
    # The eager loop's backward has a sparse product without a bfloat16 kernel: called
    # inside the autocast region, as the benchmarks' training step does, it had raised.
    config = ELMNetworkConfig.for_task(
        "shd-adding", dropout_in=0.0, dropout_rec=0.0, N=24, d_m=5, k_c=60
    )
    net = ELMNetwork(config)
    x, y = elm_network_speed.task_inputs("shd-adding", config, 2, 9, torch.device("cpu"))
    grads = []
    for inside in (True, False):
        net.zero_grad()
        with use_backend(backend):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x)[0][:, -1].float(), y[:, 0])
                if inside:
                    loss.backward()
            if not inside:
                loss.backward()
        grads.append(_grads(net))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.isfinite(g).all() for g in grads[0])


def test_gpu_table_dry_run_writes_every_run(tmp_path, capsys):
    out = tmp_path / "table"
    gpu_table.main(
        ["--device", "cpu", "--out", str(out), "--batch", "1", "2", "--configs", "small",
         "--repeats", "1", "--neuron-steps", "10"]
    )  # fmt: skip
    assert "a dry run on cpu" in capsys.readouterr().out
    record = json.loads((out / "rows.json").read_text())
    runs = record["runs"]
    assert [r["name"] for r in runs] == [
        "neuron, autocast none", "network, autocast none",
        "neuron, autocast bf16", "network, autocast bf16",
    ]  # fmt: skip
    assert all("error" not in r and r["rows"] for r in runs)
    assert {r["batch"] for r in runs[1]["rows"]} == {1, 2}
    assert record["provenance"]["software"]["torch"] == torch.__version__
    table = (out / "table.md").read_text()
    assert table.count("## ") == 4
    assert "float32 under bf16 autocast" in table and "cuda graph: not run" in table
    # Under autocast the C++ loops (float32/float64 only) have no rows.
    assert all("cpp loops" not in r for r in runs[3]["rows"])
    assert any("cpp loops" in r for r in runs[1]["rows"])
