"""ELM neurons and networks in PyTorch.

Batch-first tensors (B, T, C); recurrent modules implement
`forward(x, state=None) -> (y, state)` and follow the input's device and dtype.
"""

from elmnet.neuron import ELMConfig, ELMNeuron, ELMState
from elmnet.params import ParameterCount, neuron_parameters
from elmnet.released import RELEASED_MODEL_NAMES, load_released

__all__ = [
    "RELEASED_MODEL_NAMES",
    "ELMConfig",
    "ELMNeuron",
    "ELMState",
    "ParameterCount",
    "load_released",
    "neuron_parameters",
]
