"""Training throughput of the ELM Network in the document's default configurations.

    python -m benchmarks.elm_network_speed [--device cpu|cuda] [--threads 1]
        [--shd-steps 1000] [--enwik8-steps 100] [--batch 8] [--repeats 3]

Throughput is (time steps × batch) per second of a full training step: forward, loss,
backward, gradient clipping and the optimiser step (Adamax for SHD-Adding, Adam for
Enwik8), on random input of the task's shape (spike counts at 2 % density; random bytes).
The configurations are `ELMNetworkConfig.for_task`'s: SHD-Adding N 96, d_m 5, k_c 300,
T 1000 (2 ms bins); Enwik8 N 742, d_m 20, k_c 750, T 100 (the BPTT window).

The baseline runs the same network with the hidden layer's time loop left to autograd
(the recurrent synapses as a gather and index_add, the per-neuron MLP as batched
matmuls); the script checks that both give the same logits before timing.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.elm_neuron_speed import MAX_BATCH_STEPS, check_sizes
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.training import resolve_device
from elmnet.config import ELMNetworkConfig
from elmnet.network import ELMNetwork
from elmnet.ops import TANH_GAIN, TANH_SLOPE, decay, memory_update_coefficients
from elmnet.params import network_parameters


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(forward, net, x, y, optimizer, repeats: int) -> float:
    """Median (time steps × batch) per second of a training step, after one warm-up."""
    times = []
    for i in range(repeats + 1):
        _sync(x.device)
        start = time.perf_counter()
        logits = forward(net, x)
        loss = F.cross_entropy(logits[:, -y.shape[1] :].flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        _sync(x.device)
        if i:
            times.append(time.perf_counter() - start)
    return x.shape[0] * x.shape[1] / statistics.median(times)


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
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shd-steps", type=int, default=1000)
    parser.add_argument("--enwik8-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the autograd loop")
    args = parser.parse_args(argv)
    check_sizes(args, ("batch", "shd_steps", "enwik8_steps", "repeats"))
    if args.threads is not None:
        check_sizes(args, ("threads",))
        torch.set_num_threads(args.threads)
    if args.batch * max(args.shd_steps, args.enwik8_steps) > MAX_BATCH_STEPS:
        raise UserError(f"--batch × steps is more than {MAX_BATCH_STEPS:,}; is it a typo?")
    device = resolve_device(args.device)

    rows = []
    for task, n_steps, optim in (
        ("shd-adding", args.shd_steps, torch.optim.Adamax),
        ("enwik8", args.enwik8_steps, torch.optim.Adam),
    ):
        config = ELMNetworkConfig.for_task(task, dropout_in=0.0, dropout_rec=0.0)
        net = ELMNetwork(config).to(device)
        x, y = task_inputs(task, config, args.batch, n_steps, device)
        methods = [("hand-written", hand_written_logits)]
        if not args.no_baseline:
            with torch.no_grad():
                ours, base = hand_written_logits(net, x), autograd_logits(net, x)
            torch.testing.assert_close(ours, base, rtol=1e-3, atol=1e-4)
            methods.append(("autograd loop", autograd_logits))
        row = {"task": task, "N": config.N, "d_m": config.d_m, "k_c": config.k_c,
               "P": network_parameters(config).total, "T": n_steps}  # fmt: skip
        for name, forward in methods:
            optimizer = optim(net.parameters(), lr=1e-4)
            row[name] = throughput(forward, net, x, y, optimizer, args.repeats)
        rows.append(row)

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"ELM Network training throughput (forward + backward + optimiser step), "
        f"{device.type} float32{threads}, batch {args.batch}; (time steps × batch) per second"
    )
    header = f"{'task':<12}{'N':>6}{'d_m':>5}{'k_c':>5}{'P':>11}{'T':>6}{'hand-written':>15}"
    if not args.no_baseline:
        header += f"{'autograd loop':>15}{'speed-up':>10}"
    print(header)
    for r in rows:
        line = (f"{r['task']:<12}{r['N']:>6}{r['d_m']:>5}{r['k_c']:>5}{r['P']:>11,}{r['T']:>6}"
                f"{r['hand-written']:>15,.0f}")  # fmt: skip
        if not args.no_baseline:
            line += f"{r['autograd loop']:>15,.0f}{r['hand-written'] / r['autograd loop']:>9.1f}×"
        print(line)
    return rows


def cli(argv: list[str] | None = None) -> int:
    main(argv)  # the rows are for callers; the command prints them
    return 0


if __name__ == "__main__":
    run_cli(cli)
