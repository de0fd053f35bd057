"""Throughput and roofline of the ELM Network in the document's default configurations.

    python -m benchmarks.elm_network_speed [--device cpu|cuda] [--threads 1]
        [--batch 8 32 64] [--configs shd-adding enwik8 small] [--shd-steps 1000]
        [--enwik8-steps 100] [--repeats 3] [--no-baseline] [--autocast none|bf16]

Two throughputs, in (time steps × batch) per second: the forward pass alone (inference
mode), and a full training step: forward, loss, backward, gradient clipping and the
optimiser step (Adamax for SHD-Adding, Adam for Enwik8, made as `elmnet.train` makes them:
`elmbridge.training.new_optimizer`), on random input of the task's
shape (spike counts at 2 % density; random bytes). Each is printed per wall-clock
second and per second of the process's CPU time (on a shared machine the wall clock
also runs while other processes hold the cores). The configurations
are `ELMNetworkConfig.for_task`'s: SHD-Adding N 96, d_m 5, k_c 300, T 1000 (2 ms bins);
Enwik8 N 742, d_m 20, k_c 750, T 100 (the BPTT window); `small` is the base point of
the cpu sweep preset (SHD-Adding with N 24, d_m 5, k_c 60, T 50: 20 ms bins).

Rows: the hand-written recurrence (eager); the fused kernels (`elmnet.fused`) on CUDA
with triton, else a line saying why not; on CUDA the eager recurrence captured in CUDA
graphs ("cuda graph", `benchmarks.cuda_graph`; checked against the eager logits first,
and left out with a line saying why when its capture fails); on the CPU the same
recurrence on the compiled C++ time loops (`elmnet.cpp_loop`, "cpp loops"); and, for
training, the baseline that leaves the hidden layer's time loop to autograd (the
recurrent synapses as a gather and index_add, the per-neuron MLP as batched matmuls; the
script checks that it gives the same logits before timing). With `--autocast bf16` every
timed call runs under torch.autocast to bfloat16 (the recurrence itself stays float32:
`elmnet.recurrence`), and the matmul reference is timed in bfloat16. The methods are
timed taking turns (`roofline.time_interleaved`), so load on a shared machine falls on
all alike.

Roofline (`benchmarks.roofline`): FLOPs per step and sample of the matrix products
(the recurrent synapses' sparse product is left out: 1 % of the FLOPs for SHD-Adding,
14 % for Enwik8), the FLOP/s
reached, the FLOP/s torch.matmul reaches on the same products alone ("% fwd", "% train":
the method's FLOP/s as a share of it), and, with two or more batch sizes, the fixed cost
per time step (intercept of time per step against batch size). With spike input the cpp
rows take the spike product (`elmnet.ops.spike_matmul`): their FLOPs and their matmul
reference count its multiply-adds (nonzeros × N·d_a), the eager rows the dense product's.
"""

import argparse
import contextlib
import functools

import torch
import torch.nn.functional as F

from benchmarks import cuda_graph, roofline
from benchmarks.elm_neuron_speed import (
    AUTOCAST,
    AUTOCAST_NO_CPP,
    MAX_BATCH_STEPS,
    NOT_CUDA,
    NOT_CUDA_GRAPH,
    check_sizes,
    cpp_unavailable,
    precision,
)
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.training import clip_gradients, new_optimizer, resolve_device
from elmnet import fused
from elmnet.config import ELMNetworkConfig
from elmnet.network import ELMNetwork
from elmnet.ops import (
    SPIKE_MAX_DENSITY,
    TANH_GAIN,
    TANH_SLOPE,
    decay,
    memory_update_coefficients,
)
from elmnet.params import network_parameters
from elmnet.recurrence import use_backend


def autograd_logits(net: ELMNetwork, x: torch.Tensor) -> torch.Tensor:
    """The network's forward pass with the hidden recurrence as a plain autograd loop."""
    h, c = net.hidden, net.config
    pre = h.feedforward(x.transpose(0, 1), c.token_scale)
    n_steps, n, batch, _ = pre.shape
    kappa_m, gain = memory_update_coefficients(h.tau_m, c.dt, c.lam, "v2")
    u = h.w_first[:, c.d_tree :] * kappa_m.unsqueeze(-1)
    w_branch = h.w_first[:, : c.d_tree]
    slot = h.rec_slot
    row = (slot // c.k_c) * c.d_tree + (slot % c.k_c) // c.d_brch
    col = h.source.flatten()[slot] - c.d_in
    weight = c.input_scale * h.w_s.flatten()[slot].unsqueeze(-1)
    kappa_r = decay(c.tau_r, c.dt)
    m = pre.new_zeros(n, batch, c.d_m)
    highpass = out = pre.new_zeros(n, batch)
    outputs = []
    for t in range(n_steps):
        branches = pre.new_zeros(n * c.d_tree, batch).index_add(0, row, out[col] * weight)
        a = pre[t] + torch.bmm(m, u) + torch.bmm(branches.view(n, c.d_tree, batch).mT, w_branch)
        z = TANH_SLOPE * (torch.bmm(torch.relu(a).square(), h.w_last) + h.b_last.unsqueeze(1))
        m = kappa_m * m + TANH_GAIN * gain * torch.tanh(z)
        r = (m * h.w_y.unsqueeze(1)).sum(-1)
        highpass = kappa_r * highpass + (1 - kappa_r) * r
        out = torch.relu(r - highpass + h.beta.unsqueeze(-1))
        outputs.append(out)
    readout = net.readout.run(
        net.readout.feedforward(torch.stack(outputs).transpose(1, 2)),
        pre.new_zeros(c.n_out, batch, c.readout_d_m),
    )
    return net.logits(torch.einsum("tvbi,vi->btv", readout.memories, net.readout.w_y))


def hand_written_logits(net: ELMNetwork, x: torch.Tensor) -> torch.Tensor:
    return net(x)[0]


def training_step(forward, net, x, y, optimizer) -> None:
    logits = forward(net, x)
    loss = F.cross_entropy(logits[:, -y.shape[1] :].flatten(0, 1), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(net.parameters(), 1.0)
    optimizer.step()


def forward_products(
    config, batch: int, n_steps: int, tokens: bool, nonzeros: int | None = None
) -> list[roofline.Product]:
    """The matrix products of one forward pass of the network; with `nonzeros` (the
    input's nonzero count) the input product is counted as the spike product runs it, one
    N·d_a-wide multiply-add per nonzero, else as the dense product."""
    c, rows = config, batch * n_steps
    d_a, d_r = c.d_mlp or c.d_m, c.readout_d_m
    products = [] if tokens else [roofline.Product(1, 1, rows, c.d_in, c.N * d_a)]
    if nonzeros is not None:
        products = [roofline.Product(1, 1, nonzeros, 1, c.N * d_a)]
    products += [
        roofline.Product(n_steps, c.N, batch, c.d_m, d_a),  # memory → first layer
        roofline.Product(n_steps, c.N, batch, c.d_tree, d_a),  # recurrent branches → first
        roofline.Product(n_steps, c.N, batch, d_a, c.d_m),  # hidden MLP layer
        roofline.Product(n_steps, c.N, batch, c.d_m, 1),  # readout r = w_y · m
        roofline.Product(1, 1, rows, c.N, c.n_out * d_r),  # readout neurons' input
        roofline.Product(n_steps, c.n_out, batch, d_r, d_r),  # their memory → MLP
        roofline.Product(1, c.n_out, rows, d_r, 1),  # their r
        roofline.Product(1, 1, rows, c.n_out, c.n_out),  # logits
    ]
    return products


CONFIGS = {  # name: (task, overrides, default steps option)
    "shd-adding": ("shd-adding", {}, "shd_steps"),
    "enwik8": ("enwik8", {}, "enwik8_steps"),
    "small": ("shd-adding", {"N": 24, "d_m": 5, "k_c": 60}, None),
}
SMALL_STEPS = 50


def task_inputs(task: str, config, batch: int, n_steps: int, device):
    g = torch.Generator().manual_seed(0)
    if task == "shd-adding":
        x = (torch.rand(batch, n_steps, config.d_in, generator=g) < 0.02).float()
        y = torch.randint(config.n_out, (batch, 1), generator=g)
    else:
        x = torch.randint(config.d_in, (batch, n_steps), generator=g)
        y = torch.randint(config.n_out, (batch, n_steps), generator=g)
    return x.to(device), y.to(device)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--batch", type=int, nargs="+", default=[8], help="one or more")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        default=["shd-adding", "enwik8"])  # fmt: skip
    parser.add_argument("--shd-steps", type=int, default=1000)
    parser.add_argument("--enwik8-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the autograd loop")
    parser.add_argument("--autocast", choices=list(AUTOCAST), default="none",
                        help="time every call under torch.autocast to this dtype")  # fmt: skip
    args = parser.parse_args(argv)
    batches, args.batch = args.batch, min(args.batch)
    check_sizes(args, ("batch", "shd_steps", "enwik8_steps", "repeats"))
    if args.threads is not None:
        check_sizes(args, ("threads",))
        torch.set_num_threads(args.threads)
    if max(batches) * max(args.shd_steps, args.enwik8_steps) > MAX_BATCH_STEPS:
        raise UserError(f"--batch × steps is more than {MAX_BATCH_STEPS:,}; is it a typo?")
    device = resolve_device(args.device)
    # Never time triton's CPU interpreter (TRITON_INTERPRET=1, for the tests): CUDA only.
    no_fused = (
        NOT_CUDA if device.type != "cuda" else fused.unavailable(device, torch.float32, "relu2", 1)
    )
    no_cpp = cpp_unavailable(device, torch.float32, "relu2")
    if no_cpp is None and args.autocast != "none":
        no_cpp = AUTOCAST_NO_CPP
    no_graph = NOT_CUDA_GRAPH if device.type != "cuda" else None
    reference_dtype = AUTOCAST[args.autocast] or torch.float32
    within = functools.partial(precision, device, args.autocast)

    rows = []
    for name in dict.fromkeys(args.configs):
        task, overrides, steps_option = CONFIGS[name]
        n_steps = getattr(args, steps_option) if steps_option else SMALL_STEPS
        config = ELMNetworkConfig.for_task(task, dropout_in=0.0, dropout_rec=0.0, **overrides)
        net = ELMNetwork(config).to(device)
        optim = "adamax" if task == "shd-adding" else "adam"
        for batch in batches:
            x, y = task_inputs(task, config, batch, n_steps, device)
            methods = [("hand-written", "eager", hand_written_logits)]
            if no_fused is None:
                methods.append(("fused", "triton", hand_written_logits))
            if device.type == "cuda":
                graphed = functools.partial(
                    cuda_graph.network_logits, loops=cuda_graph.GraphedLoops()
                )
                eager_call = functools.partial(hand_written_logits, net, x)
                failed = cuda_graph.why_not(net, eager_call, functools.partial(graphed, net, x))
                if failed is None:
                    methods.append(("cuda graph", "eager", graphed))
                else:  # the last failure is reported; the other points keep their rows
                    no_graph = f"{name} batch {batch}: {failed}"
            if no_cpp is None:
                methods.append(("cpp loops", "cpp", hand_written_logits))
            if not args.no_baseline:
                with torch.no_grad(), use_backend("eager"):
                    ours, base = hand_written_logits(net, x), autograd_logits(net, x)
                torch.testing.assert_close(ours, base, rtol=1e-3, atol=1e-4)
                methods.append(("autograd loop", "eager", autograd_logits))
            if no_cpp is None:
                with torch.no_grad():
                    with use_backend("eager"):
                        ours = hand_written_logits(net, x)
                    with use_backend("cpp"):
                        compiled = hand_written_logits(net, x)
                torch.testing.assert_close(compiled, ours, rtol=1e-4, atol=1e-5)
            tokens = not x.is_floating_point()
            products = forward_products(config, batch, n_steps, tokens)
            flops = roofline.total_flops(products)
            reference = roofline.matmul_reference(products, device, reference_dtype, args.repeats)
            # Spike input: the cpp rows run the spike product (`spike_matmul`), so their
            # FLOPs and matmul reference count its multiply-adds, not the dense product's.
            nonzeros = None if tokens else int(torch.count_nonzero(x))
            spiking = nonzeros is not None and nonzeros <= SPIKE_MAX_DENSITY * x.numel()
            spike_flops, spike_reference = flops, reference
            if spiking:
                spike_products = forward_products(config, batch, n_steps, tokens, nonzeros)
                spike_flops = roofline.total_flops(spike_products)
                spike_reference = roofline.matmul_reference(
                    spike_products, device, reference_dtype, args.repeats
                )
            row = {"task": task, "config": name, "N": config.N, "d_m": config.d_m,
                   "k_c": config.k_c, "P": network_parameters(config).total, "T": n_steps,
                   "batch": batch, "flops_per_step": flops / (batch * n_steps),
                   "matmul_gflops": roofline.gflops(flops, reference.cost(device)),
                   "spike_flops_per_step": spike_flops / (batch * n_steps),
                   "spike_matmul_gflops": roofline.gflops(
                       spike_flops, spike_reference.cost(device))}  # fmt: skip
            calls = {}
            for method, backend, forward in methods:
                optimizer = new_optimizer(optim, net.parameters(), lr=1e-4)
                step = functools.partial(training_step, forward, net, x, y, optimizer)
                calls[method, "train"] = on_backend(backend, step, within)
                if method != "autograd loop":
                    calls[method, "forward"] = on_backend(
                        backend, functools.partial(forward, net, x), within, inference=True
                    )
            timings = roofline.time_interleaved(calls, device, args.repeats)
            for method, backend, _ in methods:
                done = spike_flops if backend == "cpp" else flops
                matmul = row["spike_matmul_gflops" if backend == "cpp" else "matmul_gflops"]
                row[f"{method} matmul GFLOP/s"] = matmul
                train = timings[method, "train"]
                row[method] = batch * n_steps / train.wall
                row[f"{method} per CPU-s"] = batch * n_steps / train.cpu
                row[f"{method} s"] = train.cost(device)
                row[f"{method} GFLOP/s"] = roofline.gflops(3 * done, train.cost(device))
                if method != "autograd loop":
                    fwd = timings[method, "forward"]
                    row[f"{method} forward"] = batch * n_steps / fwd.wall
                    row[f"{method} forward per CPU-s"] = batch * n_steps / fwd.cpu
                    row[f"{method} forward s"] = fwd.cost(device)
                    row[f"{method} forward GFLOP/s"] = roofline.gflops(done, fwd.cost(device))
            rows.append(row)
    report(rows, args, device, batches, no_fused, no_cpp, no_graph)
    return rows


def on_backend(backend: str, fn, within=contextlib.nullcontext, inference: bool = False):
    """`fn` as a call that runs on `backend`'s time loop within `within()` (a context
    manager made anew each call, e.g. `precision`'s), in inference mode if asked."""

    def call():
        with use_backend(backend), within(), torch.inference_mode(inference):
            fn()

    return call


def report(rows, args, device, batches, no_fused, no_cpp=None, no_graph=None) -> None:
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    clock = "CPU" if device.type == "cpu" else "wall-clock"
    kind = "float32" if args.autocast == "none" else f"float32 under {args.autocast} autocast"
    print(
        f"ELM Network throughput, {device.type} {kind}{threads}; (time steps × batch) per "
        "wall-clock second, and per second of this process's CPU time (per CPU-s); "
        f"training = forward + backward + optimiser step; GFLOP/s and fixed costs from "
        f"{clock} time"
    )
    methods = ("hand-written", "fused", "cuda graph", "cpp loops", "autograd loop")
    methods = [m for m in methods if any(m in r for r in rows)]
    header = f"{'config':<11}{'N':>5}{'d_m':>4}{'k_c':>5}{'P':>11}{'T':>6}{'batch':>6}  "
    header += f"{'method':<14}{'forward':>10}{'per CPU-s':>10}{'GFLOP/s':>8}"
    header += f"{'training':>10}{'per CPU-s':>10}{'GFLOP/s':>8}{'matmul GFLOP/s':>15}"
    header += f"{'% fwd':>7}{'% train':>8}"
    print(header)
    for r in rows:
        for m in (m for m in methods if m in r):
            line = (f"{r['config']:<11}{r['N']:>5}{r['d_m']:>4}{r['k_c']:>5}{r['P']:>11,}"
                    f"{r['T']:>6}{r['batch']:>6}  {m:<14}")  # fmt: skip
            if f"{m} forward" in r:
                line += (f"{r[f'{m} forward']:>10,.0f}{r[f'{m} forward per CPU-s']:>10,.0f}"
                         f"{r[f'{m} forward GFLOP/s']:>8.2f}")  # fmt: skip
            else:
                line += f"{'-':>10}{'':>10}{'':>8}"
            line += f"{r[m]:>10,.0f}{r[f'{m} per CPU-s']:>10,.0f}{r[f'{m} GFLOP/s']:>8.2f}"
            matmul = r[f"{m} matmul GFLOP/s"]
            line += f"{matmul:>15.2f}"
            if f"{m} forward" in r:
                line += f"{100 * r[f'{m} forward GFLOP/s'] / matmul:>7.1f}"
            else:
                line += f"{'-':>7}"
            line += f"{100 * r[f'{m} GFLOP/s'] / matmul:>8.1f}"
            print(line)
    for r in rows:
        line = f"{r['config']} batch {r['batch']}: {r['flops_per_step']:,.0f} FLOPs per step "
        line += "and sample (forward; training 3×)"
        if r["spike_flops_per_step"] != r["flops_per_step"]:
            line += f", cpp with the spike product {r['spike_flops_per_step']:,.0f}"
        if "autograd loop" in r:
            line += f"; hand-written/autograd {r['hand-written'] / r['autograd loop']:.1f}×"
        if "fused" in r:
            line += (f"; fused/eager {r['fused forward'] / r['hand-written forward']:.2f}× "
                     f"forward, {r['fused'] / r['hand-written']:.2f}× training")  # fmt: skip
        if "cuda graph" in r:
            line += (f"; graph/eager {r['cuda graph forward'] / r['hand-written forward']:.2f}× "
                     f"forward, {r['cuda graph'] / r['hand-written']:.2f}× training")  # fmt: skip
        if "cpp loops" in r:
            # Per CPU-s: on a shared machine the wall clock also counts others' turns.
            fwd = r["cpp loops forward per CPU-s"] / r["hand-written forward per CPU-s"]
            train = r["cpp loops per CPU-s"] / r["hand-written per CPU-s"]
            line += f"; cpp/eager per CPU-s {fwd:.2f}× forward, {train:.2f}× training"
        print(line)
    if no_fused:
        print(f"fused kernels: not run ({no_fused})")
    if no_graph:
        print(f"cuda graph: not run ({no_graph})")
    if no_cpp and device.type == "cpu":
        print(f"cpp loops: not run ({no_cpp})")
    if len(set(batches)) < 2:
        return
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        for m in methods:
            fits = []
            for key, label in ((f"{m} forward s", "forward"), (f"{m} s", "training")):
                timed = [r for r in mine if key in r]
                if len({r["batch"] for r in timed}) >= 2:
                    per_step = [r[key] / r["T"] for r in timed]
                    fixed, per_sample = roofline.fixed_cost([r["batch"] for r in timed], per_step)
                    fits.append(f"{label} {fixed:.1f} µs + {per_sample:.2f} µs/sample")
            if fits:
                print(f"fixed cost per time step, {config}, {m}: {'; '.join(fits)}")


def cli(argv: list[str] | None = None) -> int:
    main(argv)  # the rows are for callers; the command prints them
    return 0


if __name__ == "__main__":
    run_cli(cli)
