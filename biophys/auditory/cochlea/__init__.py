"""An artificial cochlea that turns speech into spike trains, as used to make SHD.

Pipeline (Cramer et al. 2020, after the `lauscher` converter):

1. `audio`: the clip is normalised to RMS 0.3 and tapered with a Hann window;
2. `basilar_membrane`: Sieroka (2006) hydrodynamic BM, 700 channels, base to apex (high
   to low frequency), solved in the frequency domain; output at half the audio rate;
3. `hair_cell`: Meddis inner hair cell per channel → fibre spike probability per step;
4. `bushy_cell`: 40 auditory-nerve fibres per channel (binomial draws over the
   non-refractory fibres) into one leaky integrate-and-fire bushy cell.

Use::

    from biophys.auditory.cochlea import audio_to_spikes
    spikes = audio_to_spikes(samples, 48_000, seed=1)
    spikes.times_s, spikes.units          # SHD-style spike lists

Randomness (the fibres) comes only from `seed`; the rest is deterministic.
"""

from biophys.auditory.cochlea.pipeline import CochleaParams, CochleaSpikes, audio_to_spikes

__all__ = ["CochleaParams", "CochleaSpikes", "audio_to_spikes"]
