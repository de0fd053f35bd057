"""The cochlea as one function: audio → spike trains of the bushy cells."""

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from biophys.auditory.cochlea import audio as audio_mod
from biophys.auditory.cochlea import basilar_membrane, bushy_cell, hair_cell
from biophys.auditory.cochlea.basilar_membrane import BasilarMembraneParams
from biophys.auditory.cochlea.bushy_cell import BushyCellParams
from biophys.auditory.cochlea.hair_cell import HairCellParams


@dataclass(frozen=True)
class CochleaParams:
    """Everything that defines the cochlea; the defaults reproduce the SHD front end.

    Attributes:
        sample_rate_hz: audio sample rate the model runs at, Hz. Its stages run at half
            this rate, so spike times lie on a grid of 2/sample_rate_hz seconds.
        rms: level the clip is normalised to before the BM (audio units).
    """

    sample_rate_hz: float = 48_000.0
    rms: float = 0.3
    basilar_membrane: BasilarMembraneParams = field(default_factory=BasilarMembraneParams)
    hair_cell: HairCellParams = field(default_factory=HairCellParams)
    bushy_cell: BushyCellParams = field(default_factory=BushyCellParams)

    @property
    def n_channels(self) -> int:
        return self.basilar_membrane.n_channels

    @property
    def step_rate_hz(self) -> float:
        """Rate of the hair cells and bushy cells: half the audio rate, Hz."""
        return self.sample_rate_hz / 2.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for provenance records."""
        return asdict(self)


@dataclass
class CochleaSpikes:
    """The spikes of one clip in SHD form.

    Attributes:
        times_s: (n_spikes,) spike times, s from the clip start, sorted.
        units: (n_spikes,) channel of each spike, 0 (base, high frequency) to
            n_channels - 1 (apex, low frequency).
        n_channels: number of channels.
        duration_s: clip duration, s.
    """

    times_s: np.ndarray
    units: np.ndarray
    n_channels: int
    duration_s: float

    def counts_per_channel(self) -> np.ndarray:
        """(n_channels,) number of spikes of each channel."""
        return np.bincount(self.units, minlength=self.n_channels)

    def binned(self, bin_s: float) -> np.ndarray:
        """(n_bins, n_channels) spike counts in bins of `bin_s` seconds over the clip."""
        n_bins = max(1, int(np.ceil(self.duration_s / bin_s)))
        idx = np.minimum((self.times_s / bin_s).astype(np.int64), n_bins - 1)
        out = np.zeros((n_bins, self.n_channels), dtype=np.int32)
        np.add.at(out, (idx, self.units), 1)
        return out


def audio_to_spikes(
    audio: np.ndarray,
    sample_rate_hz: float,
    seed: int | tuple[int, ...] | np.random.SeedSequence,
    params: CochleaParams | None = None,
) -> CochleaSpikes:
    """Convert one clip of sound into bushy-cell spike trains.

    Args:
        audio: (n_samples,) mono sound, any scale (it is normalised), at its natural
            length: padding it with silence would attenuate it under the Hann window.
        sample_rate_hz: must equal `params.sample_rate_hz` (48 kHz by default).
        seed: seed of the fibres' randomness (an int, a tuple of ints, or a SeedSequence).
        params: the model; defaults to the SHD front end.

    Raises:
        UserError: empty, silent, non-finite or multi-channel audio, or a wrong rate.
    """
    params = params or CochleaParams()
    samples = audio_mod.check_audio(audio, sample_rate_hz, params.sample_rate_hz)
    stimulus = audio_mod.normalise_and_window(samples, params.rms)
    velocity = basilar_membrane.velocity(stimulus, params.sample_rate_hz, params.basilar_membrane)
    step_rate = params.step_rate_hz
    probability = hair_cell.release_probability(velocity, step_rate, params.hair_cell)
    rng = np.random.default_rng(seed)
    counts = bushy_cell.fibre_spike_counts(probability, step_rate, params.bushy_cell, rng)
    steps, units = bushy_cell.bushy_spikes(counts, step_rate, params.bushy_cell)
    return CochleaSpikes(
        times_s=steps / step_rate,
        units=units.astype(np.int64),
        n_channels=params.n_channels,
        duration_s=samples.size / params.sample_rate_hz,
    )
