"""Detailed biophysical simulation: the Hay et al. (2011) L5PC in NEURON, NeuronIO datasets.

`open_dataset(path)` opens a dataset made by ``python -m biophys.simulate`` lazily.
Importing this package does not import NEURON; only running a simulation does.
"""

from biophys.store import open_dataset

__all__ = ["open_dataset"]
