"""Throughput of the ELM neuron: parallel traces vs. a plain per-step loop.

    python -m benchmarks.elm_neuron_speed [--batch 8] [--steps 500] [--device cpu|cuda]

NeuronIO configuration (d_in 1278, d_tree 45, d_brch 100, d_m 20). Throughput is in
(time steps × batch) per second, forward alone (inference mode) and forward + backward.
The baseline computes the routing, synapse traces and branch sums inside the time loop,
as a direct transcription of the equations would; both compute the same function (the
script checks that their outputs agree before timing).
"""

import argparse
import statistics
import time

import torch

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.training import resolve_device
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from elmnet.ops import decay, scaled_tanh


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(fn, model, x, backward: bool, repeats: int) -> float:
    """Median (time steps × batch) per second over `repeats` timed calls after a warm-up."""
    times = []
    for i in range(repeats + 1):
        _sync(x.device)
        start = time.perf_counter()
        if backward:
            model.zero_grad(set_to_none=True)
            fn(model, x).square().mean().backward()
        else:
            with torch.inference_mode():
                fn(model, x)
        _sync(x.device)
        if i:  # the first call warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return x.shape[0] * x.shape[1] / statistics.median(times)


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
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--d-m", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when present)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)
    check_sizes(args, ("batch", "steps", "d_m", "repeats"))
    if args.batch * args.steps > MAX_BATCH_STEPS:
        raise UserError(
            f"--batch × --steps = {args.batch * args.steps:,} is more than {MAX_BATCH_STEPS:,} "
            "(the input alone would need ≥ 5 GB)"
        )

    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = ELMNeuron(ELMConfig.branch_elm_neuronio(d_m=args.d_m)).to(device, dtype)
    spikes = torch.rand(args.batch, args.steps, 1278, device=device) < 0.01
    sign = torch.cat([torch.ones(639), -torch.ones(639)]).to(device)
    x = (spikes * sign).to(dtype)

    with torch.inference_mode():
        ours, base = parallel_forward(model, x), per_step_forward(model, x)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ours, base, rtol=tol, atol=tol)

    rows = []
    for name, fn in (("parallel traces", parallel_forward), ("per-step loop", per_step_forward)):
        rows.append(
            {
                "method": name,
                "forward": throughput(fn, model, x, backward=False, repeats=args.repeats),
                "forward+backward": throughput(fn, model, x, backward=True, repeats=args.repeats),
            }
        )
    print(
        f"ELM neuron, NeuronIO config (d_in 1278, d_tree 45, d_brch 100, d_m {args.d_m}), "
        f"batch {args.batch}, T {args.steps}, {device.type} {args.dtype}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'method':<18}{'forward (steps·B/s)':>22}{'fwd+bwd (steps·B/s)':>22}")
    for row in rows:
        print(f"{row['method']:<18}{row['forward']:>22,.0f}{row['forward+backward']:>22,.0f}")
    ratio_f = rows[0]["forward"] / rows[1]["forward"]
    ratio_b = rows[0]["forward+backward"] / rows[1]["forward+backward"]
    print(f"{'speed-up':<18}{ratio_f:>21.1f}×{ratio_b:>21.1f}×")
    return rows


def cli(argv: list[str] | None = None) -> int:
    main(argv)  # the rows are for callers; the command prints them
    return 0


if __name__ == "__main__":
    run_cli(cli)
