"""Throughput of the ELM neuron: parallel traces vs. a plain per-step loop, with roofline.

    python -m benchmarks.elm_neuron_speed [--batch 8 32 128] [--steps 500]
        [--device cpu|cuda] [--threads 1] [--no-baseline] [--autocast none|bf16]

NeuronIO configuration (d_in 1278, d_tree 45, d_brch 100, d_m 20). Throughput is in
(time steps × batch) per second, forward alone (inference mode) and forward + backward,
per wall-clock second and per second of the process's CPU time (on a shared machine the
wall clock also runs while other processes hold the cores). The baseline computes the
routing, synapse traces and branch sums inside the time loop, as a direct transcription
of the equations would; both compute the same
function (the script checks that their outputs agree before timing). On CUDA with
triton installed the fused kernels (`elmnet.fused`) get their own row, and so does the
eager recurrence captured in CUDA graphs ("cuda graph", `benchmarks.cuda_graph`; checked
against the eager output first, and left out with a line saying why when its capture
fails); on the CPU the
compiled C++ loops (`elmnet.cpp_loop`) do, beside the eager loop of the same
parallel-traces model; elsewhere a line says why they cannot run. Rows on the CPU:
"parallel traces" (backend eager: parallel-scan trace, dense synapse product, eager
recurrence), "cpp rec. only" (the C++ recurrence, with the scan and the dense product:
the CPU default before the C++ trace and spike product), "cpp loops" (everything
in C++: recurrence, trace, spike product) and "auto" (what a user gets: as "cpp loops"
up to batch 128, above it the eager recurrence with the C++ trace and spike product);
"cpp, int8 input" is "cpp loops" on the same spikes as an int8 tensor.
With `--autocast bf16` every timed call runs under torch.autocast to bfloat16 (the
recurrence itself stays float32), without the C++ rows, and the matmul reference is
timed in bfloat16. The methods are timed taking turns (`roofline.time_interleaved`), so
load on a shared machine falls on all alike and their ratios hold.

Roofline (`benchmarks.roofline`): FLOPs per step and sample of the matrix products, the
FLOP/s reached (rows on the spike product count the multiply-adds it performs, 2 per
nonzero input and branch, not the dense product's 2 · d_in · d_tree), the FLOP/s
torch.matmul reaches on the same (dense) products alone, and, with two or more batch
sizes, the fixed cost per time step (intercept of time per step against batch size).
"""

import argparse
import contextlib
import functools

import torch

from benchmarks import cuda_graph, roofline
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.training import resolve_device
from elmnet import cpp_loop, fused
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from elmnet.ops import SPIKE_MAX_DENSITY, _scan_trace, decay, scaled_tanh
from elmnet.recurrence import use_backend

# --autocast: the timed calls under torch.autocast to this dtype (none: plain float32).
AUTOCAST = {"none": None, "bf16": torch.bfloat16}
NOT_CUDA_GRAPH = "CUDA graphs capture CUDA work"
# Under autocast the products around the loops hand them bfloat16, which they do not take.
AUTOCAST_NO_CPP = "the C++ loops take float32 or float64, not autocast's bfloat16"


def precision(device: torch.device, autocast: str):
    """The context every timed call runs in: torch.autocast to `AUTOCAST[autocast]`, with
    its weight cache off (a captured CUDA graph may not use it, and every row should run
    alike), or nothing."""
    dtype = AUTOCAST[autocast]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


# The row of the same spikes given as int8 (the spike product reads a quarter of the bytes).
INT8 = "cpp, int8 input"
NOT_CUDA = "the fused kernels run on CUDA (triton's CPU interpreter is for tests, not timings)"


def per_step_forward(model: ELMNeuron, x: torch.Tensor) -> torch.Tensor:
    """The baseline: every linear stage recomputed inside the time loop (v1 dynamics)."""
    c = model.config
    batch, n_steps, _ = x.shape
    w_s = model.w_s
    kappa_s = decay(c.tau_s, c.dt)
    kappa_m, gain = model.memory_coefficients()
    synapse = x.new_zeros(batch, c.n_synapses)
    memory = x.new_zeros(batch, c.d_m)
    outputs = []
    for t in range(n_steps):
        routed = x[:, t, model.syn_index]
        synapse = kappa_s * synapse + w_s * routed
        branch = synapse.view(batch, c.d_tree, c.d_brch).sum(-1)
        proposal = scaled_tanh(model.mlp(torch.cat([branch, kappa_m * memory], dim=-1)))
        memory = kappa_m * memory + gain * proposal
        outputs.append(model.head(memory))
    return torch.stack(outputs, dim=1)


def parallel_forward(model: ELMNeuron, x: torch.Tensor) -> torch.Tensor:
    return model(x)[0]


def dense_scan_forward(model: ELMNeuron, x: torch.Tensor) -> torch.Tensor:
    """`ELMNeuron.forward` as it was before the C++ trace and spike product: the dense
    synapse product and the parallel-scan trace, then the recurrence (zero state)."""
    c = model.config
    drive = x @ model.synapse_matrix().to(x.dtype)
    kappa = torch.as_tensor(decay(c.tau_s, c.dt), dtype=x.dtype)
    branch = _scan_trace(drive, kappa, None)
    memory = model.memory_recurrence(branch, x.new_zeros(x.shape[0], c.d_m))
    return model.head(memory)


def timed_call(fn, model, x, backward: bool, backend: str, within=contextlib.nullcontext):
    """One forward (inference mode) or forward+backward on `backend`'s time loop, within
    `within()` (a context manager made anew each call, e.g. `precision`'s)."""

    def call():
        with use_backend(backend), within():
            if backward:
                model.zero_grad(set_to_none=True)
                fn(model, x).square().mean().backward()
            else:
                with torch.inference_mode():
                    fn(model, x)

    return call


def cpp_unavailable(device: torch.device, dtype: torch.dtype, activation: str) -> str | None:
    """Why the benchmark gets no C++-loop row here, or None."""
    if device.type != "cpu":
        return "the C++ loops are for CPU tensors"
    return cpp_loop.unavailable(device, dtype, activation)


def forward_products(
    config: ELMConfig, batch: int, n_steps: int, nonzeros: int | None = None
) -> list[roofline.Product]:
    """The matrix products of one forward pass of `parallel_forward`; with `nonzeros`
    (the input's nonzero count) the synapse product is counted as the spike product runs
    it, one d_tree-wide multiply-add per nonzero, else as the dense product."""
    c, rows = config, batch * n_steps
    synapses = roofline.Product(1, 1, rows, c.d_in, c.d_tree)
    if nonzeros is not None:
        synapses = roofline.Product(1, 1, nonzeros, 1, c.d_tree)
    per_step = [roofline.Product(n_steps, 1, batch, c.d_m, c.d_mlp)]
    per_step += [roofline.Product(n_steps, 1, batch, c.d_mlp, c.d_mlp)] * (c.n_mlp_layers - 1)
    per_step += [roofline.Product(n_steps, 1, batch, c.d_mlp, c.d_m)]
    return [
        synapses,  # synapses → branches
        roofline.Product(1, 1, rows, c.d_tree, c.d_mlp),  # branch half of the first layer
        *per_step,  # the memory recurrence
        roofline.Product(1, 1, rows, c.d_m, c.d_out),  # readout
    ]


# The input is batch × steps × 1278 values, several copies of it while timing.
MAX_BATCH_STEPS = 1_000_000


def check_sizes(args, names: tuple[str, ...]) -> None:
    """Each of the options `names` must be at least 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8], help="one or more")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--d-m", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-step loop")
    parser.add_argument("--autocast", choices=list(AUTOCAST), default="none",
                        help="time every call under torch.autocast to this dtype")  # fmt: skip
    args = parser.parse_args(argv)
    batches, args.batch = args.batch, min(args.batch)
    check_sizes(args, ("batch", "steps", "d_m", "repeats"))
    if args.threads is not None:
        check_sizes(args, ("threads",))
        torch.set_num_threads(args.threads)
    if max(batches) * args.steps > MAX_BATCH_STEPS:
        raise UserError(
            f"--batch × --steps = {max(batches) * args.steps:,} is more than "
            f"{MAX_BATCH_STEPS:,} (the input alone would need ≥ 5 GB)"
        )

    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = ELMConfig.branch_elm_neuronio(d_m=args.d_m)
    model = ELMNeuron(config).to(device, dtype)
    sign = torch.cat([torch.ones(639), -torch.ones(639)]).to(device)
    methods = [("parallel traces", parallel_forward, "eager")]
    if not args.no_baseline:
        methods.append(("per-step loop", per_step_forward, "eager"))
    # Never time triton's CPU interpreter (TRITON_INTERPRET=1, for the tests): CUDA only.
    no_fused = (
        NOT_CUDA
        if device.type != "cuda"
        else fused.unavailable(device, dtype, config.activation, config.n_mlp_layers)
    )
    if no_fused is None:
        methods.append(("fused kernels", parallel_forward, "triton"))
    no_graph = NOT_CUDA_GRAPH if device.type != "cuda" else None
    graphed = functools.partial(cuda_graph.neuron_output, loops=cuda_graph.GraphedLoops())
    no_cpp = cpp_unavailable(device, dtype, config.activation)
    if no_cpp is None and args.autocast != "none":
        no_cpp = AUTOCAST_NO_CPP
    within = functools.partial(precision, device, args.autocast)
    if no_cpp is None:
        methods.append(("cpp rec. only", dense_scan_forward, "cpp"))
        methods.append(("cpp loops", parallel_forward, "cpp"))
    if device.type == "cpu":
        methods.append(("auto", parallel_forward, "auto"))
    if no_cpp is None:
        # The same spikes stored as int8: the spike product reads a quarter of the bytes.
        methods.append((INT8, parallel_forward, "cpp"))
    spiking = {"cpp loops", "auto", INT8} if no_cpp is None else set()

    rows = []
    for batch in batches:
        spikes = torch.rand(batch, args.steps, 1278, device=device) < 0.01
        x = (spikes * sign).to(dtype)
        with torch.inference_mode(), use_backend("eager"):
            ours = parallel_forward(model, x)
            tol = 1e-4 if dtype == torch.float32 else 1e-10
            if not args.no_baseline:
                base = per_step_forward(model, x)
                torch.testing.assert_close(ours, base, rtol=tol, atol=tol)
        if no_cpp is None:
            with torch.inference_mode(), use_backend("cpp"):
                torch.testing.assert_close(parallel_forward(model, x), ours, rtol=tol, atol=tol)
                torch.testing.assert_close(dense_scan_forward(model, x), ours, rtol=tol, atol=tol)
                int8 = parallel_forward(model, x.to(torch.int8))
                torch.testing.assert_close(int8, ours, rtol=tol, atol=tol)
        timed = methods
        if device.type == "cuda":
            eager_call = functools.partial(parallel_forward, model, x)
            failed = cuda_graph.why_not(model, eager_call, functools.partial(graphed, model, x))
            if failed is None:
                timed = [*methods, ("cuda graph", graphed, "eager")]
            else:  # the last failure is reported; the other batches keep their rows
                no_graph = f"batch {batch}: {failed}"
        products = forward_products(config, batch, args.steps)
        flops = roofline.total_flops(products)
        nonzeros = int(torch.count_nonzero(x))
        density = nonzeros / x.numel()
        spike_flops = flops
        if density <= SPIKE_MAX_DENSITY:
            spike_flops = roofline.total_flops(
                forward_products(config, batch, args.steps, nonzeros)
            )
        reference = roofline.matmul_reference(
            products, device, AUTOCAST[args.autocast] or dtype, repeats=args.repeats
        )
        calls = {}
        for name, fn, backend in timed:
            inputs = x.to(torch.int8) if name == INT8 else x
            calls[name, False] = timed_call(fn, model, inputs, False, backend, within)
            calls[name, True] = timed_call(fn, model, inputs, True, backend, within)
        timings = roofline.time_interleaved(calls, device, args.repeats)
        for name, _, _ in timed:
            fwd, both = timings[name, False], timings[name, True]
            done = spike_flops if name in spiking else flops
            rows.append({
                "batch": batch, "method": name,
                "forward": batch * args.steps / fwd.wall,
                "forward+backward": batch * args.steps / both.wall,
                "forward_per_cpu_s": batch * args.steps / fwd.cpu,
                "both_per_cpu_s": batch * args.steps / both.cpu,
                "forward_s": fwd.cost(device), "both_s": both.cost(device),
                "flops_per_step": done / (batch * args.steps), "density": density,
                "forward_gflops": roofline.gflops(done, fwd.cost(device)),
                "both_gflops": roofline.gflops(3 * done, both.cost(device)),
                "matmul_gflops": roofline.gflops(flops, reference.cost(device)),
            })  # fmt: skip
    report(rows, args, device, batches, no_fused, no_cpp, no_graph)
    return rows


def report(rows, args, device, batches, no_fused, no_cpp=None, no_graph=None) -> None:
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    kind = args.dtype if args.autocast == "none" else f"{args.dtype} under {args.autocast} autocast"
    print(
        f"ELM neuron, NeuronIO config (d_in 1278, d_tree 45, d_brch 100, d_m {args.d_m}), "
        f"T {args.steps}, {device.type} {kind}{threads}"
    )
    print(
        f"{'batch':>5}  {'method':<16}{'forward':>11}{'per CPU-s':>11}{'GFLOP/s':>9}"
        f"{'fwd+bwd':>11}{'per CPU-s':>11}{'GFLOP/s':>9}{'matmul GFLOP/s':>16}"
    )
    for r in rows:
        print(
            f"{r['batch']:>5}  {r['method']:<16}{r['forward']:>11,.0f}"
            f"{r['forward_per_cpu_s']:>11,.0f}{r['forward_gflops']:>9.2f}"
            f"{r['forward+backward']:>11,.0f}{r['both_per_cpu_s']:>11,.0f}{r['both_gflops']:>9.2f}"
            f"{r['matmul_gflops']:>16.2f}"
        )
    clock = "CPU" if device.type == "cpu" else "wall-clock"
    print(
        "forward, fwd+bwd: (time steps × batch) per wall-clock second; per CPU-s: per "
        f"second of this process's CPU time; GFLOP/s and fixed costs from {clock} time"
    )
    for batch in batches:
        named = {r["method"]: r for r in rows if r["batch"] == batch}
        first = named["parallel traces"]
        line = f"batch {batch}: {first['flops_per_step']:,.0f} FLOPs per step "
        line += "and sample (forward; fwd+bwd 3×)"
        if "cpp loops" in named:
            line += (f", {named['cpp loops']['flops_per_step']:,.0f} on the spike product "
                     f"(input density {first['density']:.2%})")  # fmt: skip
        if "per-step loop" in named:
            a, b = named["parallel traces"], named["per-step loop"]
            line += (f"; parallel/per-step {a['forward'] / b['forward']:.1f}× forward, "
                     f"{a['forward+backward'] / b['forward+backward']:.1f}× fwd+bwd")  # fmt: skip
        if "fused kernels" in named:
            a, f = named["parallel traces"], named["fused kernels"]
            line += (f"; fused/eager {f['forward'] / a['forward']:.2f}× forward, "
                     f"{f['forward+backward'] / a['forward+backward']:.2f}× fwd+bwd")  # fmt: skip
        if "cuda graph" in named:
            a, f = named["parallel traces"], named["cuda graph"]
            line += (f"; graph/eager {f['forward'] / a['forward']:.2f}× forward, "
                     f"{f['forward+backward'] / a['forward+backward']:.2f}× fwd+bwd")  # fmt: skip
        if "cpp loops" in named:
            a, f = named["parallel traces"], named["cpp loops"]
            line += (f"; cpp/eager {f['forward'] / a['forward']:.2f}× forward, "
                     f"{f['forward+backward'] / a['forward+backward']:.2f}× fwd+bwd")  # fmt: skip
            a = named["cpp rec. only"]
            line += (f"; cpp/cpp rec. only {f['forward'] / a['forward']:.2f}× forward, "
                     f"{f['forward+backward'] / a['forward+backward']:.2f}× fwd+bwd")  # fmt: skip
        print(line)
    if no_fused:
        print(f"fused kernels: not run ({no_fused})")
    if no_graph:
        print(f"cuda graph: not run ({no_graph})")
    if no_cpp and device.type == "cpu":
        print(f"cpp loops: not run ({no_cpp})")
    if len(set(batches)) >= 2:
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            if len({r["batch"] for r in mine}) < 2:  # a row some batches lack (cuda graph)
                continue
            fits = []
            for key in ("forward_s", "both_s"):
                per_step = [r[key] / args.steps for r in mine]
                fixed, per_sample = roofline.fixed_cost([r["batch"] for r in mine], per_step)
                fits.append(f"{fixed:.1f} µs + {per_sample:.2f} µs/sample")
            print(f"fixed cost per time step, {method}: forward {fits[0]}; fwd+bwd {fits[1]}")


def cli(argv: list[str] | None = None) -> int:
    main(argv)  # the rows are for callers; the command prints them
    return 0


if __name__ == "__main__":
    run_cli(cli)
