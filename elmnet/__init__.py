"""ELM neurons and networks in PyTorch.

Batch-first tensors (B, T, C); recurrent modules implement
`forward(x, state=None) -> (y, state)` and follow the input's device and dtype.
"""

from elmnet.config import ELMConfig, ELMNetworkConfig
from elmnet.network import ELMNetwork, ELMNetworkState
from elmnet.neuron import ELMNeuron, ELMState
from elmnet.params import ParameterCount, network_parameters, neuron_parameters
from elmnet.released import RELEASED_MODEL_NAMES, load_released

__all__ = [
    "RELEASED_MODEL_NAMES",
    "ELMConfig",
    "ELMNetwork",
    "ELMNetworkConfig",
    "ELMNetworkState",
    "ELMNeuron",
    "ELMState",
    "ParameterCount",
    "load_released",
    "network_parameters",
    "neuron_parameters",
]
