"""Roofline numbers for the ELM speed benchmarks: FLOPs, the FLOP/s torch.matmul reaches
at the same sizes, and the fixed cost per time step.

FLOPs count the matrix products only (2 per multiply-add), the work that dominates at
large batch; elementwise work (activations, tanh, the memory update) is left out. A
product that skips the zeros of a sparse operand (the ELM neuron's spike-input synapse
product) counts the multiply-adds it performs: nnz × n as `Product(1, 1, nnz, 1, n)`. A
model's forward pass is described by its list of `Product`s; its training step (forward
and backward) counts 3× the forward's FLOPs (each product has two gradient products).
The matmul reference times exactly those products with `torch.matmul` alone, in the same
counts and shapes: what the model would reach if nothing but its matrix products ran.

The fixed cost per time step is the intercept of a least-squares line through the time
per time step against the batch size: what a step costs however small the batch.
"""

import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import torch


class Product(NamedTuple):
    """`count` matrix products (batch × m × k) @ (batch × k × n), batch 1 a plain mm."""

    count: int
    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.count * self.batch * self.m * self.k * self.n


class Timing(NamedTuple):
    """Median wall-clock and CPU seconds of one call."""

    wall: float
    cpu: float

    def cost(self, device: torch.device) -> float:
        """The seconds the roofline uses: CPU time on a CPU (on a shared machine wall time
        also counts other processes' turns), wall time on a GPU (the host waits)."""
        return self.cpu if device.type == "cpu" else self.wall


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> Timing:
    """Median wall and process-CPU seconds of `fn()` over `repeats` calls after a warm-up.

    CPU time is the whole process's (all threads); on a busy machine wall time counts
    the time other processes held the cores, CPU time does not.
    """
    walls, cpus = [], []
    for i in range(repeats + 1):
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        if i:  # the first call warms up allocators and kernels
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus))


def time_interleaved(
    calls: dict[Hashable, Callable[[], object]], device: torch.device, repeats: int
) -> dict[Hashable, Timing]:
    """`time_call` for several calls taking turns (a, b, a, b, …): on a shared machine
    whatever load comes and goes falls on all of them alike, so their ratio holds."""
    samples = {name: ([], []) for name in calls}
    for i in range(repeats + 1):
        for name, fn in calls.items():
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            if i:  # the first round warms up allocators and kernels
                samples[name][0].append(time.perf_counter() - wall)
                samples[name][1].append(time.process_time() - cpu)
    return {
        name: Timing(statistics.median(walls), statistics.median(cpus))
        for name, (walls, cpus) in samples.items()
    }


def total_flops(products: Sequence[Product]) -> int:
    return sum(p.flops for p in products)


def matmul_reference(
    products: Sequence[Product], device: torch.device, dtype: torch.dtype, repeats: int = 3
) -> Timing:
    """Time of `products` run with torch.matmul alone (random operands, no other work).

    Products counted many times (one per time step) run as that many calls, as the
    model's time loop makes them.
    """
    operands = []
    for p in products:
        shape_a = (p.batch, p.m, p.k) if p.batch > 1 else (p.m, p.k)
        shape_b = (p.batch, p.k, p.n) if p.batch > 1 else (p.k, p.n)
        a = torch.randn(shape_a, device=device, dtype=dtype)
        b = torch.randn(shape_b, device=device, dtype=dtype)
        operands.append((p.count, a, b))

    def run():
        for count, a, b in operands:
            for _ in range(count):
                torch.matmul(a, b)

    return time_call(run, device, repeats)


def fixed_cost(batches: Sequence[int], seconds_per_step: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) in µs of time per time step against batch size (least squares).

    The intercept is the fixed cost per time step; the slope the cost per sample.
    """
    if len(set(batches)) < 2:
        raise ValueError("a fit needs at least two batch sizes")
    slope, intercept = statistics.linear_regression(
        [float(b) for b in batches], [s * 1e6 for s in seconds_per_step]
    )
    return intercept, slope


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9
