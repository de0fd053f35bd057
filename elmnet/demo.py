"""Run the published d_m = 20 Branch-ELM on synthetic NeuronIO-like input and plot it.

    python -m elmnet.demo [--model num_memory_20 | PATH] [--out outputs/elm_demo.png]

--out is the image file itself (.png, .pdf or .svg); its folder is created.

The input mimics the NeuronIO protocol's character (piecewise-constant excitatory and
inhibitory rates that change every few hundred ms) without the simulator: `elmnet`
does not depend on `biophys`.
"""

import argparse
import time

import numpy as np
import torch

from elmbridge.cli import run_cli
from elmbridge.errors import MissingDataError, UserError
from elmbridge.files import check_output_file, user_writes
from elmnet.neuron import ELMConfig, ELMNeuron
from elmnet.neuronio import SOMA, SPIKE, soma_mv
from elmnet.params import neuron_parameters
from elmnet.released import load_released

# The input is held dense in memory (1278 float32 channels per ms, several copies while it
# is drawn): a minute is ≈0.3 GB; more is a typo, not a demo.
MAX_DURATION_MS = 60_000
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


def synthetic_neuronio_input(
    duration_ms: int, seed: int, n_exc: int = 639, n_inh: int = 639
) -> np.ndarray:
    """(duration_ms, n_exc + n_inh) input: +1 per excitatory, −1 per inhibitory spike.

    Rates are piecewise constant over random intervals of 50–250 ms: excitatory rates
    uniform in [2, 25] Hz per channel, inhibitory ones 30–100 % of the excitatory rate,
    each channel scaled by a fixed factor in [0.5, 1.5]; the NeuronIO protocol's
    balanced-but-fluctuating drive in miniature.
    """
    rng = np.random.default_rng(seed)
    rate_exc = np.empty(duration_ms)
    rate_inh = np.empty(duration_ms)
    t = 0
    while t < duration_ms:
        length = int(rng.integers(50, 250))
        exc = rng.uniform(2.0, 25.0)
        rate_exc[t : t + length] = exc
        rate_inh[t : t + length] = exc * rng.uniform(0.3, 1.0)
        t += length
    gain_exc = rng.uniform(0.5, 1.5, n_exc)
    gain_inh = rng.uniform(0.5, 1.5, n_inh)
    p_exc = np.clip(rate_exc[:, None] * gain_exc[None] / 1000.0, 0, 1)
    p_inh = np.clip(rate_inh[:, None] * gain_inh[None] / 1000.0, 0, 1)
    exc = rng.random((duration_ms, n_exc)) < p_exc
    inh = rng.random((duration_ms, n_inh)) < p_inh
    return np.concatenate([exc, -1.0 * inh], axis=1).astype(np.float32)


def _load_model(source: str) -> tuple[ELMNeuron, str]:
    try:
        return load_released(source), f"released model {source}"
    except MissingDataError as err:
        print(f"notice: {err}\nnotice: running a randomly initialised d_m = 20 Branch-ELM instead.")
        torch.manual_seed(0)
        return ELMNeuron(ELMConfig.branch_elm_neuronio(d_m=20)).eval(), "random Branch-ELM"


def plot_demo(x: np.ndarray, spike_prob: np.ndarray, soma_mv: np.ndarray, title: str, out):
    """Input raster, predicted somatic voltage and spike probability, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(soma_mv))
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), sharex=True, height_ratios=[2, 1.3, 1])
    exc_t, exc_c = np.nonzero(x > 0)
    inh_t, inh_c = np.nonzero(x < 0)
    axes[0].scatter(exc_t, exc_c, s=0.3, c="tab:red", lw=0, label="excitatory")
    axes[0].scatter(inh_t, inh_c, s=0.3, c="tab:blue", lw=0, label="inhibitory")
    axes[0].set(ylabel="input channel", title=title)
    axes[0].legend(loc="upper right", markerscale=15, fontsize=8)
    axes[1].plot(t, soma_mv, c="k", lw=0.8)
    axes[1].set(ylabel="predicted soma (mV)")
    axes[2].plot(t, spike_prob, c="tab:purple", lw=0.8)
    axes[2].set(ylabel="P(spike)", xlabel="time (ms)", ylim=(0, 1))
    fig.tight_layout()
    with user_writes(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m elmnet.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default="num_memory_20", help="released model name or folder")
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/elm_demo.png"),
        help="the image file to write (.png, .pdf or .svg)",
    )  # fmt: skip
    parser.add_argument("--duration-ms", type=int, default=2000, help="1 to 60000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.duration_ms <= MAX_DURATION_MS:
        raise UserError(f"--duration-ms must be 1 to {MAX_DURATION_MS} ms, got {args.duration_ms}")
    if args.seed < 0:
        raise UserError(f"--seed must be ≥ 0, got {args.seed}")
    # Checked before the model is loaded (or fetched), so a bad path costs nothing.
    check_output_file(args.out, suffixes=IMAGE_SUFFIXES)

    model, label = _load_model(args.model)
    count = neuron_parameters(model.config)
    print(f"{label}: d_m = {model.config.d_m}, {count.total} parameters "
          f"(k_e = {count.k_e}, k_c = {count.k_c})")  # fmt: skip

    x = torch.from_numpy(synthetic_neuronio_input(args.duration_ms, args.seed))[None]
    with torch.inference_mode():
        model(x[:, :50])  # warm-up
        start = time.perf_counter()
        y, _ = model(x)
        elapsed = time.perf_counter() - start
    print(f"forward: {args.duration_ms} ms of input in {elapsed * 1e3:.0f} ms "
          f"({args.duration_ms / elapsed:,.0f} time steps per second, batch 1)")  # fmt: skip

    spike_prob = torch.sigmoid(y[0, :, SPIKE]).numpy()
    soma = soma_mv(y[0, :, SOMA]).numpy()
    print(f"predicted: mean P(spike) {spike_prob.mean():.4f} per ms, "
          f"soma {soma.mean():.1f} ± {soma.std():.1f} mV")  # fmt: skip
    plot_demo(x[0].numpy(), spike_prob, soma, f"{label} on synthetic NeuronIO-like input",
              args.out)  # fmt: skip
    print(f"plot saved to {args.out}")


if __name__ == "__main__":
    run_cli(main)
