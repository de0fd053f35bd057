"""The NeuronIO input encoding and output mapping of ELM surrogates (docs/elm-model.md §1–2).

Inputs: +1 for an excitatory and −1 for an inhibitory spike in a 1 ms bin.
Outputs: y[..., 0] is the spike logit (probability = sigmoid), y[..., 1] the scaled soma
voltage; the training target is (clip(v, max = −55 mV) − (−67.7 mV)) · 0.1.
"""

import numpy as np
import torch

SOMA_CLIP_MV = -55.0
SOMA_OFFSET_MV = -67.7
SOMA_SCALE = 0.1
SPIKE, SOMA = 0, 1  # output channels


def encode_inputs(spikes: np.ndarray | torch.Tensor, kinds) -> np.ndarray | torch.Tensor:
    """Signed input: spikes (..., input) of 0/1 times +1 (exc) or −1 (inh) per input.

    Args:
        spikes: binary spikes, inputs on the last axis.
        kinds: per input "exc" or "inh".
    """
    sign = np.where(np.asarray(kinds) == "exc", 1.0, -1.0).astype(np.float32)
    if isinstance(spikes, torch.Tensor):
        return spikes.to(torch.float32) * torch.from_numpy(sign).to(spikes.device)
    return np.asarray(spikes, dtype=np.float32) * sign


def soma_target(v_mv):
    """Training target for a somatic voltage in mV (numpy array or tensor)."""
    clipped = v_mv.clip(max=SOMA_CLIP_MV)
    return (clipped - SOMA_OFFSET_MV) * SOMA_SCALE


def soma_mv(y_soma):
    """Predicted somatic voltage in mV from the soma output channel."""
    return y_soma / SOMA_SCALE + SOMA_OFFSET_MV
