"""The voice front end: Praat measurements, the pretrained speaker encoder, utterance normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from imagineid.audio.features import SAMPLE_RATE, SpeakerEncoderUnavailableError, from_pcm16, log_mel, to_pcm16
from imagineid.audio.speaker_encoder import SpeakerEncoder, cached_speaker_encoder, partial_starts, trim_long_silences
from imagineid.audio.voice_features import VOICE_DIM, voice_features
from imagineid.audio.voice_stats import voice_stats
from imagineid.data.speech import sample_voice, synthesize
from imagineid.training.data import MelStats


def glottal_vowel(f0: float, seconds: float = 1.5, formants=(700.0, 1200.0, 2600.0)) -> np.ndarray:
    """A pulse train at f0 through three formant resonators: a steady synthetic vowel."""
    n = int(seconds * SAMPLE_RATE)
    x = np.zeros(n)
    x[(np.arange(0, seconds, 1.0 / f0) * SAMPLE_RATE).astype(int)] = 1.0
    for f in formants:
        r = np.exp(-np.pi * 80.0 / SAMPLE_RATE)
        theta = 2 * np.pi * f / SAMPLE_RATE
        x = lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_f0_of_a_glottal_pulse_vowel(f0: float) -> None:
    stats = voice_stats(glottal_vowel(f0))
    assert abs(stats.f0_median_hz - f0) < 2.0
    assert stats.voiced_fraction > 0.8
    assert stats.f0_range_semitones < 0.5  # a steady vowel has no intonation
    assert 550 < stats.formants_hz[0] < 850  # F1 of the resonator at 700 Hz


def test_silence_measures_nothing_voiced() -> None:
    noise = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
    stats = voice_stats(noise)
    assert np.isnan(stats.f0_median_hz) and stats.voiced_fraction < 0.2
    assert np.all(np.isfinite(stats.vector())) and stats.to_dict()["f0_median_hz"] is None


def test_deeper_voice_measures_lower() -> None:
    rng = np.random.default_rng(1)
    man = synthesize("A quiet evening by the lake.", sample_voice(rng, "male", "adult")).samples
    woman = synthesize("A quiet evening by the lake.", sample_voice(rng, "female", "adult")).samples
    assert voice_stats(man).f0_median_hz < 150 < voice_stats(woman).f0_median_hz


def test_dvectors_of_one_speaker_are_closer_than_of_two() -> None:
    rng = np.random.default_rng(2)
    a, b = sample_voice(rng, "male", "adult"), sample_voice(rng, "female", "adult")
    a1 = synthesize("The morning train was late again today.", a).samples
    a2 = synthesize("Bring me the red book from the table, please.", a).samples
    b1 = synthesize("The morning train was late again today.", b).samples
    encoder = cached_speaker_encoder()
    e_a1, e_a2, e_b1 = (encoder.embed_utterance(x) for x in (a1, a2, b1))
    assert e_a1.shape == (256,) and abs(np.linalg.norm(e_a1) - 1) < 1e-5
    same, other = float(e_a1 @ e_a2), float(e_a1 @ e_b1)
    assert same > other + 0.05, (same, other)


def test_voice_vector_layout() -> None:
    vector, stats = voice_features(glottal_vowel(150.0, 2.0))
    assert vector.shape == (VOICE_DIM,) and vector.dtype == np.float32 and np.all(np.isfinite(vector))
    assert abs(stats.f0_median_hz - 150.0) < 2.0


def test_partials_cover_the_utterance() -> None:
    assert partial_starts(100) == [0]  # shorter than one partial: one, zero-padded
    starts = partial_starts(500)
    assert starts[0] == 0 and starts[-1] + 160 >= 500 * 0.75 and np.all(np.diff(starts) == 160)


def test_long_pauses_are_trimmed_short_ones_kept() -> None:
    tone = glottal_vowel(150.0, 0.5)
    gap_long, gap_short = np.zeros(SAMPLE_RATE), np.zeros(int(0.1 * SAMPLE_RATE))
    trimmed = trim_long_silences(np.concatenate([tone, gap_long, tone, gap_short, tone]).astype(np.float32))
    assert 1.5 * SAMPLE_RATE < len(trimmed) < 2.3 * SAMPLE_RATE


def test_malformed_weights_are_named(tmp_path) -> None:
    bad = tmp_path / "pretrained.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SpeakerEncoderUnavailableError, match="pretrained.pt"):
        SpeakerEncoder.from_file(bad)
    with pytest.raises(SpeakerEncoderUnavailableError, match="not found"):
        SpeakerEncoder.from_file(tmp_path / "missing.pt")


def test_utterance_normalisation_ignores_gain_and_channel_tilt() -> None:
    speech = synthesize("Every word counts when the line is bad.", sample_voice(np.random.default_rng(3), "male", "adult"))
    mel = log_mel(speech.samples)
    stats = MelStats(np.zeros(80, np.float32), np.ones(80, np.float32), mode="utterance")
    tilt = np.linspace(-1.0, 1.0, 80, dtype=np.float32)  # a microphone's spectral tilt: constant per bin in log-mel
    assert np.allclose(stats.normalize(mel + 2.0 + tilt), stats.normalize(mel), atol=1e-4)
    global_stats = MelStats(np.zeros(80, np.float32), np.ones(80, np.float32), mode="global")
    assert not np.allclose(global_stats.normalize(mel + 2.0), global_stats.normalize(mel))


def test_pcm16_round_trip() -> None:
    x = np.linspace(-1.2, 1.2, 101, dtype=np.float32)
    y = from_pcm16(to_pcm16(x).tobytes())
    assert y.dtype == np.float32 and np.abs(y - np.clip(x, -1, 1)).max() < 1e-4
