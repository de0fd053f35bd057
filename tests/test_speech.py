"""Synthetic speech from espeak-ng: determinism, format, and clear errors."""

import os
import shutil

import numpy as np
import pytest

from biophys.auditory import speech
from elmbridge.errors import UserError

# CI installs espeak-ng (.ci/run); there a missing espeak-ng is a failure, not a skip.
needs_espeak = pytest.mark.skipif(
    shutil.which(speech.ESPEAK) is None and os.environ.get("CI") != "true",
    reason="espeak-ng is not installed (apt-get install -y espeak-ng)",
)


def test_resample_keeps_frequency_and_amplitude():
    rate_in, rate_out, freq = 22_050, 48_000, 1000.0
    t_in = np.arange(int(0.5 * rate_in)) / rate_in
    out = speech.resample(0.5 * np.sin(2 * np.pi * freq * t_in), rate_in, rate_out)
    assert out.size == int(np.ceil(t_in.size * rate_out / rate_in))
    t_out = np.arange(out.size) / rate_out
    middle = slice(out.size // 4, 3 * out.size // 4)  # away from the filter's edges
    np.testing.assert_allclose(
        out[middle], 0.5 * np.sin(2 * np.pi * freq * t_out[middle]), atol=2e-3
    )


def test_trim_silence_keeps_the_loud_part_with_margin():
    rate = 48_000
    x = np.zeros(rate)
    x[10_000:20_000] = 0.5
    out = speech.trim_silence(x, rate, margin_s=0.01)
    assert out.size == 10_000 + 2 * 480
    with pytest.raises(UserError, match="silent"):
        speech.trim_silence(np.zeros(100), rate)


def test_speakers_are_deterministic_and_distinct():
    a, b = speech.make_speakers(30, seed=3), speech.make_speakers(30, seed=3)
    assert a == b and a != speech.make_speakers(30, seed=4)
    assert len({(s.variant, s.english_voice, s.rate_wpm, s.pitch) for s in a}) == 30
    assert {s.gender for s in a} == {"female", "male"}
    with pytest.raises(UserError):
        speech.make_speakers(0, seed=0)


def test_missing_espeak_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="Debian package 'espeak-ng'"):
        speech.espeak_executable()
    speaker = speech.make_speakers(1, seed=0)[0]
    with pytest.raises(UserError, match="apt-get install -y espeak-ng"):
        speech.speak_word(speaker, 3, 0, seed=0)


@needs_espeak
def test_all_listed_variants_exist_in_espeak():
    known = speech.espeak_variants()
    missing = [v for v in speech.FEMALE_VARIANTS + speech.MALE_VARIANTS if v not in known]
    assert not missing


@needs_espeak
def test_spoken_word_is_48k_trimmed_and_reproducible():
    spk = speech.make_speakers(2, seed=0)
    one = speech.speak_word(spk[0], 5, 0, seed=0)
    assert one.ndim == 1 and 0.15 < one.size / 48_000 < 1.5
    np.testing.assert_array_equal(one, speech.speak_word(spk[0], 5, 0, seed=0))
    assert not np.array_equal(one, speech.speak_word(spk[0], 5, 1, seed=0))  # a repeat
    assert not np.array_equal(one, speech.speak_word(spk[1], 5, 0, seed=0))  # a speaker
    peak = np.abs(one).max()
    edge = int(0.005 * 48_000)  # inside the 10 ms margin: quiet
    assert np.abs(one[:edge]).max() < 0.05 * peak and np.abs(one[-edge:]).max() < 0.05 * peak
    german = speech.speak_word(spk[0], 15, 0, seed=0)  # "fünf"
    assert german.size > 0 and not np.array_equal(german[: one.size], one[: german.size])
    assert speech.espeak_version()[0].isdigit()
