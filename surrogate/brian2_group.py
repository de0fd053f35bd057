"""Fitted ELM surrogates as a group of neurons inside a Brian2 network.

    >>> import brian2 as b2  # doctest: +SKIP
    >>> cells = SurrogateGroup(100, "num_memory_20", seed=1)  # doctest: +SKIP
    >>> drive = b2.Synapses(interneurons, cells.inputs, on_pre="count_post += 1")  # doctest: +SKIP
    >>> drive.connect(j=cells.channel(neuron=0, channel=700))  # doctest: +SKIP
    >>> spikes = b2.SpikeMonitor(cells.neurons)  # doctest: +SKIP
    >>> b2.run(1 * b2.second)  # doctest: +SKIP

How it works:

- `inputs` is a NeuronGroup of N × d_in synaptic channels (one variable, `count`).
  Brian2 `Synapses` deliver spikes onto it with ``on_pre="count_post += 1"``; channel c
  of neuron n is index n·d_in + c (`channel`). The sign of a channel (+1 excitatory,
  −1 inhibitory) is the cell's, in the cell's input order: for the NeuronIO L5PC the
  first 639 channels are excitatory and the last 639 inhibitory.
- Every 1 ms, a `network_operation` (at the start of the time step, before Brian2's
  thresholds) reads the counts of the past millisecond, multiplies them by the channel
  signs, advances all N surrogates by one step in PyTorch, batched over neurons (on CPU
  or GPU), and clears the counts. The surrogate's input for bin t is therefore the
  spikes that arrived during [t, t + 1 ms); its output for that bin is emitted at the
  start of the next millisecond: a causal 1 ms delay.
- `neurons` is a NeuronGroup of N with `v` (the predicted soma voltage, volt),
  `p_spike` (the predicted spike probability of the last bin) and a spike when the
  surrogate fires, so Brian2 synapses carry its spikes onward and monitors record them.
- Spikes are drawn from the predicted probability with a seeded generator (`rule =
  "sample"`, the default): the surrogate was trained with a per-millisecond Bernoulli
  likelihood, so sampling reproduces its rates and variability. `rule = "threshold"`
  fires whenever p_spike ≥ `threshold`: deterministic, but it turns every
  sub-threshold probability into silence and so biases rates; use it to compare spike
  times without sampling noise.
- `background_hz` adds independent Poisson input on every channel (drawn inside the
  network operation: far cheaper than 1278 × N Brian2 PoissonGroup neurons).

What does not work: Brian2's standalone modes (``cpp_standalone``, ``cuda_standalone``)
generate C++ code for the whole network and cannot call back into Python, so a
network_operation — and with it the PyTorch model — is not allowed there. Use runtime
mode (the default, numpy or Cython code generation). The operation's dt must be 1 ms,
the surrogate's time step; the network's dt must divide it.
"""

import os
from typing import Any

import brian2 as b2
import numpy as np
import torch

from elmbridge.errors import UserError
from elmnet.neuronio import SOMA, SPIKE, soma_mv


def neuronio_signs(d_in: int) -> np.ndarray:
    """(d_in,) +1 for the first half of the inputs (excitatory), −1 for the rest."""
    if d_in % 2:
        raise UserError(f"NeuronIO inputs come in exc/inh pairs; {d_in} is odd, give the signs")
    return np.r_[np.ones(d_in // 2), -np.ones(d_in // 2)].astype(np.float32)


class SurrogateStepper:
    """N copies of one ELM surrogate stepped one millisecond at a time, batched.

    This is the PyTorch half of `SurrogateGroup`, usable without Brian2: `step(counts)`
    takes the (N, d_in) spike counts of one 1 ms bin and returns the spike probability
    and the soma voltage (mV) of every neuron for that bin.

    Args:
        model: an ELM neuron with the NeuronIO outputs (spike logit, scaled soma).
        n: number of neurons.
        signs: (d_in,) +1/−1 per input channel.
        device: where the model runs.
    """

    def __init__(self, model, n: int, signs: np.ndarray, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.n, self.device = n, torch.device(device)
        self.signs = torch.as_tensor(signs, dtype=torch.float32, device=self.device)
        if self.signs.shape != (model.config.d_in,):
            raise UserError(
                f"{self.signs.numel()} channel signs for a model of {model.config.d_in} inputs"
            )
        self.state = None

    @torch.inference_mode()
    def step(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance one 1 ms bin. Returns (p_spike (N,), soma (N,) in mV)."""
        x = torch.as_tensor(counts, dtype=torch.float32, device=self.device) * self.signs
        y, self.state = self.model(x.view(self.n, 1, -1), self.state)
        y = y[:, 0].double().cpu()
        return torch.sigmoid(y[:, SPIKE]).numpy(), soma_mv(y[:, SOMA]).numpy()


def load_surrogate(source: str | os.PathLike):
    """A fitted surrogate from a run folder, a model file or a released model (name)."""
    from surrogate.evaluate import load_model

    model, _ = load_model(source)
    return model


class SurrogateGroup(b2.BrianObject):
    """N fitted ELM surrogates as one Brian2 object (see the module docstring).

    Args:
        n: number of neurons.
        model: a run folder, model file or released model name, or an `ELMNeuron`.
        signs: (d_in,) +1/−1 per channel (default: NeuronIO, first half excitatory).
        rule: "sample" (Bernoulli draws from p_spike) or "threshold".
        threshold: p_spike at which the threshold rule fires.
        background_hz: Poisson rate added on every channel, Hz (0: none); a pair
            (excitatory Hz, inhibitory Hz) sets the two kinds apart.
        drive: (n, d_in, T) spike counts added to the inputs in millisecond bins 0…T−1
            (for example NeuronIO input trains from `biophys.protocol`), or None.
        record_inputs: neurons whose total input counts per millisecond are kept in
            `recorded_inputs` (for replaying them elsewhere, e.g. in NEURON).
        seed: seed of the spike draws and the background.
        device: where the PyTorch model runs.
        name: prefix of the Brian2 objects' names.

    Attributes:
        inputs: NeuronGroup of n·d_in channels with variable `count`.
        neurons: NeuronGroup of n with `v` (volt), `p_spike`, and spikes.
        operation: the 1 ms network operation.

    The group contains the three (Brian2's `contained_objects`), so `brian2.run` and
    `brian2.Network(group, ...)` include them.
    """

    add_to_magic_network = True  # BrianObject's default is False: `brian2.run` would skip it

    def __init__(
        self,
        n: int,
        model: Any,
        *,
        signs: np.ndarray | None = None,
        rule: str = "sample",
        threshold: float = 0.5,
        background_hz: float | tuple[float, float] = 0.0,
        drive: np.ndarray | None = None,
        record_inputs: tuple[int, ...] = (),
        seed: int = 0,
        device: str | torch.device = "cpu",
        name: str = "surrogate",
    ):
        super().__init__(name=f"{name}*")
        if not isinstance(n, int) or n < 1:
            raise UserError(f"a surrogate group needs at least one neuron, got {n!r}")
        if rule not in ("sample", "threshold"):
            raise UserError(f"rule must be 'sample' or 'threshold', got {rule!r}")
        if not 0 < threshold <= 1:
            raise UserError(f"threshold is a probability in (0, 1], got {threshold}")
        if not isinstance(model, torch.nn.Module):
            model = load_surrogate(model)
        d_in = model.config.d_in
        signs = neuronio_signs(d_in) if signs is None else np.asarray(signs, np.float32)
        self.stepper = SurrogateStepper(model, n, signs, device)
        self.n, self.d_in, self.rule, self.threshold = n, d_in, rule, threshold
        self.rng = np.random.default_rng(seed)
        self.background_per_ms = self._background(background_hz, signs)
        if drive is not None and (drive.ndim != 3 or drive.shape[:2] != (n, d_in)):
            raise UserError(f"drive must have shape ({n}, {d_in}, T), got {drive.shape}")
        self.drive = drive
        self.record_inputs = list(record_inputs)
        self.recorded_inputs: list[np.ndarray] = []  # one (len(record_inputs), d_in) per ms
        self.bin = 0  # the millisecond bin the next step completes

        self.inputs = b2.NeuronGroup(n * d_in, "count : 1", name=f"{name}_inputs")
        self.neurons = b2.NeuronGroup(
            n,
            "v : volt\np_spike : 1\nfire : boolean",
            threshold="fire",
            reset="fire = False",
            name=f"{name}_neurons",
        )
        self.neurons.v = soma_mv(0.0) * b2.mV
        self.operation = b2.NetworkOperation(
            self._step, dt=1 * b2.ms, when="start", name=f"{name}_step"
        )
        self.contained_objects.extend([self.inputs, self.neurons, self.operation])

    @staticmethod
    def _background(rate_hz, signs: np.ndarray) -> np.ndarray:
        rates = np.broadcast_to(np.asarray(rate_hz, dtype=np.float64), (2,))
        if np.any(rates < 0) or not np.all(np.isfinite(rates)):
            raise UserError(f"background_hz must be finite and ≥ 0, got {rate_hz}")
        return np.where(signs > 0, rates[0], rates[1]) / 1000.0

    def channel(self, neuron: int | np.ndarray, channel: int | np.ndarray) -> np.ndarray:
        """Index in `inputs` of `channel` of `neuron` (arrays broadcast)."""
        neuron, channel = np.asarray(neuron), np.asarray(channel)
        if np.any((neuron < 0) | (neuron >= self.n)) or np.any(
            (channel < 0) | (channel >= self.d_in)
        ):
            raise UserError(f"neuron must be in [0, {self.n}) and channel in [0, {self.d_in})")
        return neuron * self.d_in + channel

    def _step(self, t) -> None:
        if t < 0.5 * b2.ms:  # at t = 0 no millisecond of input has been collected yet
            return
        counts = np.asarray(self.inputs.count_[:], dtype=np.float32).reshape(self.n, self.d_in)
        self.inputs.count_[:] = 0
        if self.background_per_ms.any():
            counts = counts + self.rng.poisson(self.background_per_ms, (self.n, self.d_in))
        if self.drive is not None and self.bin < self.drive.shape[2]:
            counts = counts + self.drive[:, :, self.bin]
        if self.record_inputs:
            self.recorded_inputs.append(counts[self.record_inputs].astype(np.int16))
        self.bin += 1
        p, soma = self.stepper.step(counts)
        fire = spike_draws(p, self.rng, self.rule, self.threshold)
        self.neurons.v_[:] = soma * float(b2.mV)
        self.neurons.p_spike_[:] = p
        self.neurons.fire_[:] = fire


def spike_draws(p: np.ndarray, rng: np.random.Generator, rule: str, threshold: float):
    """The spikes `SurrogateGroup` emits for probabilities `p` (for tests and analysis)."""
    return rng.random(p.shape) < p if rule == "sample" else p >= threshold
