"""Synthetic spoken digits from Debian's `espeak-ng`, as stand-in speakers for SHD.

SHD's 20 classes are the digits spoken in English ("zero".."nine", labels 0-9) and German
("null".."neun", labels 10-19). Here a *speaker* is a fixed combination of an espeak-ng
voice variant (timbre, gender), an English accent, a speaking rate and a pitch; the same
variant, rate and pitch speak the German words with the German voice. Repetitions of a
word by one speaker differ by small deterministic deviations of rate and pitch (like a
person never says a word twice alike); the cochlea adds its own fibre noise on top.

espeak-ng writes 22.05 kHz audio; words are resampled to 48 kHz with a polyphase filter
and trimmed of leading and trailing silence, so each keeps its natural length.
"""

import functools
import io
import shutil
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from elmbridge.errors import UserError

WORDS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS_DE = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
KEYS = WORDS_EN + WORDS_DE
"""The 20 SHD words; a sample's label is its index here."""

ESPEAK = "espeak-ng"
DEBIAN_PACKAGE = "espeak-ng"
GERMAN_VOICE = "de"
ENGLISH_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029")
# Human-sounding variants of espeak-ng 1.51 (file names under espeak-ng-data/voices/!v),
# by the gender espeak-ng lists for them. Robots, whispers and effects are left out.
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "belinda", "linda", "steph",
    "anika",
)  # fmt: skip
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "adam", "Alex", "Andy", "benjamin",
    "caleb", "david", "edward", "john", "max", "michel", "paul", "robert", "travis", "victor",
)  # fmt: skip
RATE_WPM = (100, 170)  # words per minute; espeak-ng reads at 175 by default
PITCH = (30, 70)  # espeak-ng scale 0-99, default 50
REPEAT_RATE_JITTER = 0.06  # relative
REPEAT_PITCH_JITTER = 4  # espeak-ng pitch units
OUTPUT_RATE_HZ = 48_000
SILENCE_DB = -40.0  # below the clip's peak
TRIM_MARGIN_S = 0.01


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a fixed voice, variant, rate and pitch.

    Attributes:
        speaker_id: index of the speaker in the data set.
        variant: espeak-ng voice variant (timbre), e.g. "f3".
        gender: "female" or "male", as espeak-ng lists the variant.
        english_voice: espeak-ng voice for the English words, e.g. "en-gb".
        german_voice: espeak-ng voice for the German words.
        rate_wpm: speaking rate, words per minute.
        pitch: espeak-ng pitch (0-99).
    """

    speaker_id: int
    variant: str
    gender: str
    english_voice: str
    rate_wpm: int
    pitch: int
    german_voice: str = GERMAN_VOICE

    def voice_for(self, label: int) -> str:
        """The espeak-ng voice (language) that speaks word `label`."""
        return self.english_voice if label < len(WORDS_EN) else self.german_voice

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_speakers(n_speakers: int, seed: int) -> list[Speaker]:
    """`n_speakers` distinct speakers, a deterministic function of `seed`.

    Genders alternate; variants are drawn without replacement within each gender (reused
    with another accent, rate and pitch once all have been used).
    """
    if n_speakers < 1:
        raise UserError(f"the number of speakers must be at least 1, got {n_speakers}")
    rng = np.random.default_rng([seed, 0x5BEA])
    pools = {
        "male": [MALE_VARIANTS[i] for i in rng.permutation(len(MALE_VARIANTS))],
        "female": [FEMALE_VARIANTS[i] for i in rng.permutation(len(FEMALE_VARIANTS))],
    }
    used = {"male": 0, "female": 0}
    speakers = []
    for i in range(n_speakers):
        gender = "male" if i % 2 == 0 else "female"
        pool = pools[gender]
        variant = pool[used[gender] % len(pool)]
        used[gender] += 1
        speakers.append(
            Speaker(
                speaker_id=i,
                variant=variant,
                gender=gender,
                english_voice=ENGLISH_VOICES[int(rng.integers(len(ENGLISH_VOICES)))],
                rate_wpm=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
            )
        )
    return speakers


def espeak_executable(executable: str = ESPEAK) -> str:
    """Full path of espeak-ng, or a UserError naming the Debian package to install."""
    path = shutil.which(executable)
    if path is None:
        raise UserError(
            f"{executable!r} was not found on PATH; install the Debian package "
            f"'{DEBIAN_PACKAGE}' (apt-get install -y {DEBIAN_PACKAGE}) to synthesise speech"
        )
    return path


@functools.lru_cache(maxsize=4)
def espeak_version(executable: str = ESPEAK) -> str:
    """espeak-ng's version string, e.g. "1.51"."""
    out = subprocess.run(
        [espeak_executable(executable), "--version"], capture_output=True, text=True, check=True
    ).stdout
    words = out.split()
    for i, word in enumerate(words):
        if word.rstrip(":") == "text-to-speech" and i + 1 < len(words):
            return words[i + 1]
    return out.strip()


def espeak_variants(executable: str = ESPEAK) -> set[str]:
    """The voice variants this espeak-ng knows (the names usable after "+")."""
    out = subprocess.run(
        [espeak_executable(executable), "--voices=variant"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {tok[3:] for tok in out.split() if tok.startswith("!v/")}


def synthesize(
    text: str,
    voice: str,
    *,
    variant: str | None = None,
    rate_wpm: int = 175,
    pitch: int = 50,
    executable: str = ESPEAK,
) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng: (samples as float64 in [-1, 1], sample rate in Hz)."""
    import soundfile

    name = voice if variant is None else f"{voice}+{variant}"
    cmd = [espeak_executable(executable), "-v", name, "-s", str(rate_wpm), "-p", str(pitch)]
    proc = subprocess.run([*cmd, "--stdout", "--", text], capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise UserError(
            f"espeak-ng failed to speak {text!r} with voice {name!r} "
            f"(exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
        )
    audio, rate = soundfile.read(io.BytesIO(proc.stdout), dtype="float64")
    return audio, int(rate)


def resample(audio: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """Resample with a polyphase anti-aliasing filter (scipy.signal.resample_poly)."""
    ratio = Fraction(round(to_hz), round(from_hz))
    if ratio == 1:
        return np.asarray(audio, dtype=np.float64)
    return resample_poly(audio, ratio.numerator, ratio.denominator)


def trim_silence(
    audio: np.ndarray,
    sample_rate_hz: float,
    silence_db: float = SILENCE_DB,
    margin_s: float = TRIM_MARGIN_S,
) -> np.ndarray:
    """Cut leading and trailing samples quieter than `silence_db` below the peak.

    Keeps `margin_s` of the quiet part on each side so onsets and releases stay whole.
    """
    audio = np.asarray(audio)
    peak = np.max(np.abs(audio)) if audio.size else 0.0
    if peak == 0:
        raise UserError("the synthesised audio is silent; check the espeak-ng voice")
    loud = np.flatnonzero(np.abs(audio) >= peak * 10 ** (silence_db / 20))
    margin = round(margin_s * sample_rate_hz)
    return audio[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def repeat_settings(speaker: Speaker, label: int, repeat: int, seed: int) -> tuple[int, int]:
    """(rate_wpm, pitch) of one repetition: the speaker's values, slightly perturbed."""
    rng = np.random.default_rng([seed, 0x5BEA, speaker.speaker_id, label, repeat])
    rate = speaker.rate_wpm * (1 + rng.uniform(-REPEAT_RATE_JITTER, REPEAT_RATE_JITTER))
    pitch = speaker.pitch + int(rng.integers(-REPEAT_PITCH_JITTER, REPEAT_PITCH_JITTER + 1))
    return round(rate), int(np.clip(pitch, 0, 99))


def speak_word(
    speaker: Speaker,
    label: int,
    repeat: int,
    seed: int,
    sample_rate_hz: int = OUTPUT_RATE_HZ,
    executable: str = ESPEAK,
) -> np.ndarray:
    """One repetition of SHD word `label` by `speaker`, trimmed, at `sample_rate_hz`.

    Deterministic in (speaker, label, repeat, seed) for a given espeak-ng version.
    """
    if not 0 <= label < len(KEYS):
        raise UserError(f"label must be in 0..{len(KEYS) - 1}, got {label}")
    rate_wpm, pitch = repeat_settings(speaker, label, repeat, seed)
    audio, rate = synthesize(
        KEYS[label],
        speaker.voice_for(label),
        variant=speaker.variant,
        rate_wpm=rate_wpm,
        pitch=pitch,
        executable=executable,
    )
    return trim_silence(resample(audio, rate, sample_rate_hz), sample_rate_hz)
