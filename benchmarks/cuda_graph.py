"""The eager time loop captured in CUDA graphs: the alternative to the fused kernels that
the speed benchmarks compare them with (issue 18, goal 3; `elmnet.fused` says why the
kernels were built first).

A CUDA graph records a call's kernels once per input shape and replays them: no Python
and no launch latency per operation, but still one kernel per operation per step, and
every intermediate through global memory. What is captured here is the recurrence alone,
`bank_recurrence` on the "eager" backend, forward and backward
(`torch.cuda.make_graphed_callables`; a plain `torch.cuda.graph` in inference mode). The
work around it (the input products, the token table, the spike counts) synchronises with
the host or changes shape with the data, which a graph cannot hold, so it runs as usual.

Off CUDA, `GraphedLoops` runs the same calls without a graph: the tests check there that
the wrappers compute what the models compute. The capture itself can only run on a GPU.

    loops = GraphedLoops()
    logits = network_logits(net, x, loops)     # an ELMNetwork, as net(x)[0]
    y = neuron_output(neuron, x, loops)        # an ELMNeuron, as neuron(x)[0]
"""

from collections.abc import Callable

import torch
from torch import nn

from elmnet.network import ELMNetwork
from elmnet.neuron import ELMNeuron
from elmnet.ops import decay, exp_trace
from elmnet.recurrence import BankRecurrence, use_backend


class _Owned(nn.Module):
    """`fn(*tensors)` as a module that owns `owner`: make_graphed_callables returns the
    gradients of a module's parameters, of a plain function's arguments only."""

    def __init__(self, owner: nn.Module, fn: Callable):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, *tensors):
        with use_backend("eager"):
            out = self.fn(*tensors)
        return (out,) if isinstance(out, torch.Tensor) else tuple(x for x in out if x is not None)


class GraphedLoops:
    """The recurrences of one model, each captured once per call signature (name, input
    shapes, dtypes, which inputs need gradients, inference mode, autocast) and replayed
    after.

    A replay's outputs live in the graph's buffers until the next replay of the same
    graph, as `make_graphed_callables` hands them out: use them before calling again. A
    training graph reads the parameters where they are (an optimiser updates them in
    place). An inference graph keeps what the bank derived from its weights when it was
    captured (`ELMBank._derived` makes new tensors after a weight changes): right for
    timing, stale for evaluation after further training steps."""

    def __init__(self):
        self._kept: dict = {}

    def run(self, owner: nn.Module, name: str, fn: Callable, *tensors: torch.Tensor) -> tuple:
        """`fn(*tensors)` on the eager loops, through a graph on CUDA and directly
        elsewhere, as a tuple of the tensors it returns (a tensor, or a tuple of tensors
        and Nones). `owner` holds the parameters `fn` reads."""
        call = _Owned(owner, fn)
        if tensors[0].device.type != "cuda":
            return call(*tensors)
        inference = torch.is_inference_mode_enabled()
        grads = torch.is_grad_enabled() and not inference
        signature = tuple((t.shape, t.dtype, t.requires_grad) for t in tensors)
        autocast = torch.is_autocast_enabled("cuda")
        key = (id(owner), name, inference, grads, autocast, signature)
        if key not in self._kept:
            self._kept[key] = (_captured_training if grads else _captured_inference)(call, tensors)
        return self._kept[key](*tensors)


def _captured_training(call: _Owned, tensors: tuple) -> Callable:
    samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)
    return torch.cuda.make_graphed_callables(call, samples, allow_unused_input=True)


def _captured_inference(call: _Owned, tensors: tuple) -> Callable:
    static = [t.clone() for t in tensors]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: allocator, library handles
        for _ in range(2):
            call(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = call(*static)

    def replay(*tensors):
        for kept, t in zip(static, tensors, strict=True):
            kept.copy_(t)
        graph.replay()
        return outputs

    return replay


def why_not(model: nn.Module, eager: Callable, graphed: Callable) -> str | None:
    """Why a CUDA-graph row cannot run, or None: `graphed()` must give `eager()`'s output
    (the model's, on the same input) in inference mode, and the same parameter gradients
    of its mean square. A capture that fails, or a replay that differs, then costs its
    row, not the table. Tolerances: float32 rounding and CUDA's unordered atomic sums."""
    try:
        with torch.inference_mode(), use_backend("eager"):
            expected = eager()
            torch.testing.assert_close(graphed(), expected, rtol=1e-4, atol=1e-4)
        grads = []
        for fn in (eager, graphed):
            model.zero_grad(set_to_none=True)
            with use_backend("eager"):
                fn().square().mean().backward()
            grads.append([p.grad for p in model.parameters()])
        model.zero_grad(set_to_none=True)
        for want, got in zip(*grads, strict=True):
            if want is None or got is None:
                if (want is None) != (got is None):
                    raise AssertionError("a parameter's gradient is missing on one side")
                continue
            scale = float(want.abs().max()) if want.numel() else 0.0
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * scale + 1e-12)
    except Exception as error:  # any failure is reported, not raised
        return f"capture or replay failed: {type(error).__name__}: {str(error)[:300]}"
    return None


def _bank_run(bank, names: tuple[str, ...]) -> Callable:
    def fn(*tensors):
        return bank.run(**dict(zip(names, tensors, strict=True)))

    return fn


def _run_bank(loops: GraphedLoops, bank, name: str, **inputs) -> BankRecurrence:
    names = tuple(k for k, v in inputs.items() if v is not None)
    out = loops.run(bank, name, _bank_run(bank, names), *(inputs[k] for k in names))
    return BankRecurrence(*out, *([None] * (len(BankRecurrence._fields) - len(out))))


def network_logits(net: ELMNetwork, x: torch.Tensor, loops: GraphedLoops) -> torch.Tensor:
    """`net(x)[0]` (zero initial state) with both banks' recurrences on `loops`."""
    inputs, state = net.hidden_inputs(x, None, lazy=False)
    hidden = _run_bank(loops, net.hidden, "hidden", **inputs)
    readout = _run_bank(loops, net.readout, "readout", **net.readout_inputs(hidden.outputs, state))
    return net.finish(hidden, readout, state).logits


def neuron_output(model: ELMNeuron, x: torch.Tensor, loops: GraphedLoops) -> torch.Tensor:
    """`model(x)[0]` (zero initial state) with the memory recurrence on `loops`."""
    c = model.config
    state = model.initial_state(x.shape[0], x)
    branch = exp_trace(model.branch_drive(x), decay(c.tau_s, c.dt), state.branch)
    (memory,) = loops.run(model, "memory", model.memory_recurrence, branch, state.memory)
    return model.head(memory)
