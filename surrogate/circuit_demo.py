"""A recurrent circuit of L5PC surrogates in Brian2: `python -m surrogate.circuit_demo`.

The circuit: `--n-pc` fitted L5PC surrogates (`surrogate.brian2_group.SurrogateGroup`,
default the released d_m 20 Branch-ELM) and `--n-int` Brian2 LIF interneurons.

- Each pyramidal cell gets NeuronIO-like background input on its 1278 synapses (the
  NMDA protocol of `biophys.protocol`, one seed per cell: the regime the surrogate was
  fitted in), excitatory input from other pyramidal cells (each pair with probability
  `--p-pc-pc`, onto `--syn-per-contact` random excitatory synapses) and inhibitory input
  from the interneurons (probability `--p-int-pc`, inhibitory synapses).
- Interneurons are LIF neurons with Poisson background, excited by the pyramidal cells.

It saves a raster and population rates, prints the speed in simulated neuron-seconds
per wall second next to NEURON's for the same number of full L5PCs (measured on the
validation cells and extrapolated to the machine's cores), and validates: the inputs
the first `--validate-cells` pyramidal cells received in the circuit are replayed, open
loop, into the full NEURON L5PC and into the surrogate alone, and their rates and spike
times are compared.
"""

import argparse
import os
import time
from pathlib import Path
from typing import Any

import brian2 as b2
import numpy as np

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import write_json
from elmbridge.provenance import run_record
from surrogate.brian2_group import SurrogateGroup, SurrogateStepper, load_surrogate
from surrogate.metrics import spike_metrics

# LIF interneurons (fast-spiking-like): membrane and synapse parameters, with units.
LIF = dict(tau=10 * b2.ms, v_rest=-65 * b2.mV, v_th=-50 * b2.mV, v_reset=-60 * b2.mV,
           refractory=2 * b2.ms)  # fmt: skip
LIF_EQUATIONS = "dv/dt = (v_rest - v) / tau : volt (unless refractory)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m surrogate.circuit_demo",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="num_memory_20", help="released model, run or model file")
    p.add_argument("--n-pc", type=int, default=64, help="pyramidal-cell surrogates")
    p.add_argument("--n-int", type=int, default=16, help="LIF interneurons")
    p.add_argument("--duration-ms", type=int, default=1000, help="simulated time, ms")
    p.add_argument("--p-pc-pc", type=float, default=0.1, help="PC → PC contact probability")
    p.add_argument("--p-pc-int", type=float, default=0.3, help="PC → interneuron probability")
    p.add_argument("--p-int-pc", type=float, default=0.5, help="interneuron → PC probability")
    p.add_argument("--syn-per-contact", type=int, default=10, help="synapses per contact")
    p.add_argument("--w-pc-int-mv", type=float, default=2.0, help="PC → interneuron jump, mV")
    p.add_argument("--int-background-hz", type=float, default=2500.0,
                   help="total Poisson rate onto each interneuron (0.5 mV jumps), Hz")  # fmt: skip
    p.add_argument("--validate-cells", type=int, default=2,
                   help="cells replayed in NEURON (0: skip the comparison)")  # fmt: skip
    p.add_argument("--draws", type=int, default=20, help="spike draws per replayed cell")
    p.add_argument(
        "--codegen",
        choices=["auto", "cython", "numpy"],
        default="auto",
        help="Brian2 code generation (runtime mode; standalone cannot host PyTorch)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="where the surrogates run (default: cuda when present)")
    p.add_argument("--out", type=Path, default=Path("outputs/circuit"), help="output folder")
    return p


def check_args(args: argparse.Namespace) -> None:
    for name in ("n_pc", "n_int", "syn_per_contact", "draws"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration_ms < 2:
        raise UserError("--duration-ms must be at least 2 ms")
    if args.duration_ms > 600_000:
        raise UserError("--duration-ms above 10 min of simulated time is not a demo; use less")
    for name in ("p_pc_pc", "p_pc_int", "p_int_pc"):
        if not 0 <= getattr(args, name) <= 1:
            raise UserError(f"--{name.replace('_', '-')} is a probability in [0, 1]")
    if not 0 <= args.validate_cells <= args.n_pc:
        raise UserError(f"--validate-cells must be in [0, --n-pc = {args.n_pc}]")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder")


def background_drive(n: int, duration_ms: int, seed: int) -> np.ndarray:
    """(n, 1278, T) NeuronIO-protocol input of the L5PC, one simulation seed per cell."""
    from biophys.cells import describe_cell
    from biophys.protocol import neuronio_inputs

    cell = describe_cell("L5PC")
    return np.stack([neuronio_inputs(cell, duration_ms, seed * 100_003 + i) for i in range(n)])


def contacts(rng, n_pre, n_post, p, k, channels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random contacts pre → post (probability p, no self-contact when pre = post), each
    onto k channels drawn from `channels`. Returns (pre, post, channel) arrays."""
    pre, post = np.nonzero(rng.random((n_pre, n_post)) < p)
    if n_pre == n_post:
        keep = pre != post
        pre, post = pre[keep], post[keep]
    chosen = rng.choice(channels, size=(pre.size, k))
    return np.repeat(pre, k), np.repeat(post, k), chosen.ravel()


def build_circuit(args, model, drive: np.ndarray) -> dict[str, Any]:
    """The Brian2 objects of the circuit (see the module docstring)."""
    rng = np.random.default_rng(args.seed)
    d_half = model.config.d_in // 2
    pcs = SurrogateGroup(
        args.n_pc, model, drive=drive, record_inputs=tuple(range(args.validate_cells)),
        seed=args.seed, device=args.device or "cpu",
    )  # fmt: skip
    ints = b2.NeuronGroup(
        args.n_int, LIF_EQUATIONS, threshold="v > v_th", reset="v = v_reset",
        refractory=LIF["refractory"], method="exact", namespace=dict(LIF), name="interneurons",
    )  # fmt: skip
    ints.v = LIF["v_rest"]
    # Many 20 Hz sources rather than one fast one: a source must fire < once per step.
    n_sources = max(1, round(args.int_background_hz / 20.0))
    background = b2.PoissonInput(ints, "v", N=n_sources, rate=20 * b2.Hz, weight=0.5 * b2.mV)
    pre, post, chan = contacts(rng, args.n_pc, args.n_pc, args.p_pc_pc, args.syn_per_contact,
                               np.arange(d_half))  # fmt: skip
    pc_pc = b2.Synapses(pcs.neurons, pcs.inputs, on_pre="count_post += 1", name="pc_pc")
    pc_pc.connect(i=pre, j=pcs.channel(post, chan))
    pc_int = b2.Synapses(pcs.neurons, ints, on_pre="v_post += w", namespace={
        "w": args.w_pc_int_mv * b2.mV}, name="pc_int")  # fmt: skip
    pc_int.connect(p=args.p_pc_int)
    pre, post, chan = contacts(rng, args.n_int, args.n_pc, args.p_int_pc, args.syn_per_contact,
                               np.arange(d_half, 2 * d_half))  # fmt: skip
    int_pc = b2.Synapses(ints, pcs.inputs, on_pre="count_post += 1", name="int_pc")
    int_pc.connect(i=pre, j=pcs.channel(post, chan))
    monitors = {"pc": b2.SpikeMonitor(pcs.neurons), "int": b2.SpikeMonitor(ints)}
    network = b2.Network(pcs, ints, background, pc_pc, pc_int, int_pc, *monitors.values())
    return {"network": network, "pcs": pcs, "monitors": monitors}


def neuron_replay(recorded: np.ndarray, seed: int) -> tuple[list[np.ndarray], float]:
    """Simulate the full L5PC on each recorded input (k, 1278, T); spike times (ms) and the
    wall seconds per simulated second of one cell on one core."""
    from biophys.simulation import simulate

    spikes, wall = [], 0.0
    for i, counts in enumerate(recorded):
        start = time.perf_counter()
        rec = simulate("L5PC", counts > 0, seed=seed + i)
        wall += time.perf_counter() - start
        spikes.append(np.asarray(rec.spike_times, dtype=np.float64))
    return spikes, wall / (recorded.shape[0] * recorded.shape[2] / 1000)


def surrogate_replay(model, recorded: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(k, T) spike probability of the surrogate alone on the same binary inputs."""
    from surrogate.brian2_group import neuronio_signs

    stepper = SurrogateStepper(model, recorded.shape[0], neuronio_signs(recorded.shape[1]))
    return np.stack([stepper.step((recorded[:, :, t] > 0).astype(np.float32))[0]
                     for t in range(recorded.shape[2])], axis=1)  # fmt: skip


def compare(neuron_spikes, p: np.ndarray, draws: int, seed: int) -> list[dict[str, Any]]:
    """Rates and spike-time agreement of NEURON and the surrogate, per replayed cell."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, times in enumerate(neuron_spikes):
        n_ms = p.shape[1]
        label = np.zeros(n_ms, np.uint8)
        label[np.floor(times).astype(int).clip(0, n_ms - 1)] = 1
        samples = rng.random((draws, n_ms)) < p[i]
        # A NEURON spike counts as matched when a surrogate spike lies within ±5 ms.
        near = np.array([[s[max(0, t - 5) : t + 6].any() for t in np.flatnonzero(label)]
                         for s in samples])  # fmt: skip
        rows.append({
            "cell": i,
            "NEURON_rate_Hz": len(times) / (n_ms / 1000),
            "surrogate_rate_Hz": float(p[i].sum() / (n_ms / 1000)),
            "surrogate_sampled_rate_Hz_sd": float(samples.sum(1).std() / (n_ms / 1000)),
            "matched_within_5ms": float(near.mean()) if near.size else float("nan"),
            "matched_by_chance": float(1 - (1 - samples.mean()) ** 11),
            "AUC_vs_NEURON": spike_metrics(label, p[i]).get("AUC", float("nan")),
        })  # fmt: skip
    return rows


def plot(monitors, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, layout="constrained")
    pc, it = monitors["pc"], monitors["int"]
    axes[0].plot(pc.t / b2.ms, pc.i, "|", c="tab:blue", ms=3, label="L5PC surrogates")
    axes[0].plot(it.t / b2.ms, it.i + args.n_pc, "|", c="tab:red", ms=3, label="LIF interneurons")
    axes[0].set(ylabel="neuron", title="raster")
    axes[0].legend(loc="upper right", fontsize=8)
    bins = np.arange(0, args.duration_ms + 10, 10)
    for mon, n, color, name in ((pc, args.n_pc, "tab:blue", "L5PC"),
                                (it, args.n_int, "tab:red", "interneurons")):  # fmt: skip
        counts, _ = np.histogram(mon.t / b2.ms, bins)
        axes[1].plot(bins[:-1], counts / n / 0.01, c=color, label=name)
    axes[1].set(xlabel="time (ms)", ylabel="rate (Hz, 10 ms bins)")
    axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    from elmbridge.training import resolve_device

    resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_surrogate(args.model)
    print(f"NeuronIO background for {args.n_pc} cells × {args.duration_ms} ms …", flush=True)
    drive = background_drive(args.n_pc, args.duration_ms, args.seed)
    b2.prefs.codegen.target = args.codegen
    b2.start_scope()
    b2.defaultclock.dt = 0.1 * b2.ms  # the interneurons' step; the surrogates step at 1 ms
    b2.seed(args.seed)
    circuit = build_circuit(args, model, drive)
    # The first millisecond compiles Brian2's code objects (once per machine for Cython):
    # it is run apart so that the speed is that of simulating, not of compiling.
    circuit["network"].run(1 * b2.ms, namespace={})
    start = time.perf_counter()
    circuit["network"].run((args.duration_ms - 1) * b2.ms, namespace={})
    wall = time.perf_counter() - start
    monitors = circuit["monitors"]
    plot(monitors, args, args.out / "circuit.png")
    sizes = {"pc": args.n_pc, "int": args.n_int}
    rates = {k: m.num_spikes / sizes[k] / (args.duration_ms / 1000) for k, m in monitors.items()}
    surrogate_speed = args.n_pc * (args.duration_ms - 1) / 1000 / wall
    result = {"wall_s": wall, "rates_Hz": rates, "surrogate_neuron_s_per_s": surrogate_speed}
    if args.validate_cells:
        recorded = np.stack(circuit["pcs"].recorded_inputs, axis=-1)  # (k, 1278, T)
        print(f"replaying {args.validate_cells} cells' inputs in NEURON …", flush=True)
        neuron_spikes, neuron_cost = neuron_replay(recorded, args.seed)
        p = surrogate_replay(model, recorded, args.draws, args.seed)
        result["validation"] = compare(neuron_spikes, p, args.draws, args.seed)
        cores = os.cpu_count() or 1
        result["neuron_neuron_s_per_s"] = cores / neuron_cost
        result["neuron_cost_s_per_cell_s"] = neuron_cost
    write_json(args.out / "circuit.json", {**run_record(vars(args), args.seed), **result})
    print_report(args, result)
    return 0


def print_report(args, result: dict[str, Any]) -> None:
    print(f"\n{args.n_pc} L5PC surrogates + {args.n_int} LIF interneurons, "
          f"{args.duration_ms} ms in {result['wall_s']:.1f} s wall")  # fmt: skip
    print(f"rates: L5PC {result['rates_Hz']['pc']:.2f} Hz, "
          f"interneurons {result['rates_Hz']['int']:.2f} Hz")  # fmt: skip
    print(f"speed: surrogates {result['surrogate_neuron_s_per_s']:.1f} neuron-s per wall-s")
    if "validation" in result:
        cores = os.cpu_count() or 1
        print(f"       NEURON L5PC {result['neuron_neuron_s_per_s']:.3f} neuron-s per wall-s "
              f"({result['neuron_cost_s_per_cell_s']:.1f} s per cell-second, × {cores} cores, "
              "extrapolated)")  # fmt: skip
        print("\nreplayed open loop (NEURON vs the surrogate alone, same inputs):")
        print(f"{'cell':>4} {'NEURON Hz':>10} {'surr. Hz':>9} {'matched ±5ms':>13} "
              f"{'by chance':>10} {'AUC':>7}")  # fmt: skip
        for r in result["validation"]:
            print(f"{r['cell']:>4} {r['NEURON_rate_Hz']:>10.2f} {r['surrogate_rate_Hz']:>9.2f} "
                  f"{r['matched_within_5ms']:>13.2f} {r['matched_by_chance']:>10.2f} "
                  f"{r['AUC_vs_NEURON']:>7.3f}")  # fmt: skip
    print(f"\nplot: {args.out / 'circuit.png'}; numbers: {args.out / 'circuit.json'}")


if __name__ == "__main__":
    run_cli(main)
