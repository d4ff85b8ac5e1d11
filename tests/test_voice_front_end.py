"""The voice front end: Praat measurements, the pretrained speaker encoder, utterance normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from imagineid.audio.features import (
    SAMPLE_RATE,
    SpeakerEncoderUnavailableError,
    from_pcm16,
    log_mel,
    to_pcm16,
)
from imagineid.audio.speaker_encoder import (
    SpeakerEncoder,
    cached_speaker_encoder,
    partial_starts,
    trim_long_silences,
)
from imagineid.audio.voice_features import VOICE_DIM, voice_features
from imagineid.audio.voice_stats import voice_stats
from imagineid.data.clips import MelStats
from imagineid.synth.speech import sample_voice, synthesize


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
    speech = synthesize(
        "Every word counts when the line is bad.", sample_voice(np.random.default_rng(3), "male", "adult")
    )
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


def test_voice_bank_variants_resume_and_refuse_other_settings(preprocessed, tmp_path) -> None:
    from imagineid.data.clips import clip_audio
    from imagineid.data.store import Store
    from imagineid.errors import ImagineIDError
    from imagineid.training.voice_bank import VoiceBank

    ids = sorted(Store(preprocessed).done_ids("clips"))[:2]
    bank = VoiceBank.build(preprocessed, tmp_path / "bank", ids[:1], ids[1:], variants=3, progress=False)
    train, val = bank.get(ids[0]), bank.get(ids[1])
    samples, n_frames = clip_audio(Store(preprocessed), ids[0])
    assert train.mel.shape == (3, 4 * n_frames, 80) and train.voice.shape == (3, VOICE_DIM)
    assert val.mel.shape[0] == 1 and val.augments[0]["pitch_semitones"] == 0.0  # validation: own audio only
    assert train.augments[0] == val.augments[0] and train.augments[1] != train.augments[0]
    assert not np.allclose(train.mel[0], train.mel[1])  # an augmented copy hears differently...
    assert np.abs(train.voice[1] - train.voice[0]).max() > 1e-3
    own = log_mel(samples)[: 4 * n_frames]
    assert np.abs(train.mel[0] - own).max() < 0.05  # ...and variant 0 is the clip's own audio (float16)
    before = bank.path(ids[0]).stat().st_mtime_ns
    VoiceBank.build(preprocessed, tmp_path / "bank", ids[:1], ids[1:], variants=3, progress=False)
    assert bank.path(ids[0]).stat().st_mtime_ns == before  # a rerun keeps what is there
    with pytest.raises(ImagineIDError, match="voice bank built with"):
        VoiceBank.build(preprocessed, tmp_path / "bank", ids[:1], ids[1:], variants=4, progress=False)


def test_gender_and_age_read_only_the_measured_statistics() -> None:
    import torch

    from imagineid.audio.voice_features import STATS
    from imagineid.audio.voice_stats import F0_STATS, PHYSICAL_STATS
    from imagineid.models import IdentityEncoder

    model = IdentityEncoder(
        n_voice=VOICE_DIM,
        gender_features=[STATS.start + i for i in F0_STATS],
        age_features=[STATS.start + i for i in PHYSICAL_STATS],
    ).eval()
    mel, voice = torch.randn(2, 200, 80), torch.randn(2, VOICE_DIM)
    with pytest.raises(ValueError, match="voice must be"):
        model(mel)
    other = voice.clone()
    other[:, :256] = torch.randn(2, 256)  # another d-vector, the same measurements
    a, b = model(mel, voice=voice), model(mel, voice=other)
    assert torch.allclose(a.gender_logits, b.gender_logits) and torch.allclose(a.age_logits, b.age_logits)
    jitter = voice.clone()
    jitter[:, STATS.start + 5] += 3.0  # jitter follows the synthesiser and the codec: not an attribute input
    assert torch.allclose(model(mel, voice=jitter).gender_logits, a.gender_logits)
    f0, formant = voice.clone(), voice.clone()
    f0[:, STATS.start] += 3.0
    formant[:, STATS.start + 8] += 3.0  # F2: vocal-tract size informs age, not gender
    assert not torch.allclose(model(mel, voice=f0).gender_logits, a.gender_logits)
    assert torch.allclose(model(mel, voice=formant).gender_logits, a.gender_logits)
    assert not torch.allclose(model(mel, voice=formant).age_logits, a.age_logits)
    assert not torch.allclose(a.shape, b.shape)  # the shape does read the d-vector
