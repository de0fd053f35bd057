"""Task data for the ELM Network: one module per data set.

`shd` reads the Spiking Heidelberg Digits HDF5 files, `shd_adding` builds the SHD-Adding
task from them, `enwik8` serves the Enwik8 byte stream. Each fetches its files into the
user cache when asked and says how to get them when it cannot.
"""
