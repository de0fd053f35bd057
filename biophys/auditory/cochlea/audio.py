"""Audio in and out of the cochlea: validation, level normalisation and the onset window."""

import os

import numpy as np

from elmbridge.errors import UserError


def check_audio(audio: np.ndarray, sample_rate_hz: float, expected_rate_hz: float) -> np.ndarray:
    """Return `audio` as a 1-D float64 array, or raise a UserError saying what is wrong.

    Rejects multi-channel, empty, silent and non-finite audio and any sample rate other
    than `expected_rate_hz` (the cochlea's time constants are tied to its sample rate).
    """
    audio = np.asarray(audio)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise UserError(
            f"the cochlea takes mono audio (one 1-D array), got shape {audio.shape}; "
            "mix the channels down first, e.g. audio.mean(axis=1)"
        )
    if audio.size == 0:
        raise UserError("the audio clip is empty (0 samples); check the file or the trimming")
    if not np.issubdtype(audio.dtype, np.number):
        raise UserError(f"audio samples must be numbers, got dtype {audio.dtype}")
    audio = audio.astype(np.float64)
    if not np.all(np.isfinite(audio)):
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        raise UserError(
            f"the audio clip has {bad} NaN or infinite samples out of {audio.size}; "
            "fix the source (a failed resampling or division by zero upstream)"
        )
    if not np.any(audio):
        raise UserError("the audio clip is silent (all samples 0): it cannot be normalised")
    if float(sample_rate_hz) != float(expected_rate_hz):
        raise UserError(
            f"the audio is sampled at {sample_rate_hz:g} Hz but the cochlea runs at "
            f"{expected_rate_hz:g} Hz; resample it first, e.g. "
            f"biophys.auditory.speech.resample(audio, {sample_rate_hz:g}, {expected_rate_hz:g})"
        )
    return audio


def normalise_and_window(audio: np.ndarray, rms: float) -> np.ndarray:
    """Scale to the given RMS level, then taper with a Hann window over the whole clip.

    The window (rising over the first half, falling over the second) removes onset and
    offset clicks; because it spans the clip, clips must not be padded with silence
    before this step or the speech would be attenuated.
    """
    scaled = audio * (rms / np.sqrt(np.mean(audio**2)))
    n = scaled.size
    half = n // 2
    if half:
        rise = np.hanning(2 * half)[:half]
        scaled[:half] *= rise
        scaled[n - half :] *= rise[::-1]
    return scaled


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a mono sound file (WAV, FLAC, ...): (samples as float64, sample rate in Hz)."""
    import soundfile

    try:
        audio, rate = soundfile.read(os.fspath(path), dtype="float64", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise UserError(f"cannot read audio file {path}: {err}") from err
    if audio.shape[1] != 1:
        raise UserError(f"{path} has {audio.shape[1]} channels; the cochlea takes mono audio")
    return audio[:, 0], int(rate)
