"""The auditory wing: synthetic speech → artificial cochlea → SHD-format spike data sets.

- `biophys.auditory.speech`: the 20 SHD words spoken by synthetic voices (espeak-ng);
- `biophys.auditory.cochlea`: audio → bushy-cell spike trains (the SHD front end);
- `biophys.auditory.shd_format`: reading and writing the official SHD h5 layout;
- `biophys.auditory.shd_synth`: the whole chain as a resumable data-set generator
  (command: ``python -m biophys.shd_synth``).

Nothing here needs NEURON; the L5PC chain in the rest of `biophys` does not use it.
"""
