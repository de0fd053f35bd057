"""Detailed biophysical simulation: the Hay et al. (2011) L5PC in NEURON, NeuronIO datasets.

`open_dataset(path)` opens a dataset made by ``python -m biophys.simulate`` lazily.
Importing this package does not import NEURON; only running a simulation does.
"""

import os

# NEURON prints a "no DISPLAY" warning on import on every headless machine (and on every
# Dask worker); this toolkit never uses its GUI. Set before any NEURON import, inherited
# by worker processes; a user's own setting wins.
os.environ.setdefault("NEURON_MODULE_OPTIONS", "-nogui")

from biophys.store import open_dataset

__all__ = ["open_dataset"]
