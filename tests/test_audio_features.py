"""Audio features: log-mel shape and alignment to video frames, spectral sanity, audio checks."""

from __future__ import annotations

import numpy as np
import pytest

from imagineid.audio import (
    LOG_FLOOR,
    AudioFeatureError,
    InvalidAudioError,
    ShortAudioError,
    SilentAudioError,
    check_audio,
    log_mel,
    mel_envelope,
    mel_filterbank,
    mel_for_frames,
    mel_frames_per_video_frame,
    mel_frequencies,
    mfcc,
    video_frames_for,
)

SR = 16000


def sine(freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * SR))).astype(np.float32)


def test_log_mel_is_100_hz_with_80_bins() -> None:
    mel = log_mel(noise(1.0))
    assert mel.dtype == np.float32 and mel.shape[1] == 80
    assert abs(mel.shape[0] - 100) <= 1
    assert log_mel(noise(2.5)).shape[0] == 251  # 1 + len // 160: frame j centred on j / 100 s


@pytest.mark.parametrize("n_frames", [0, 1, 7, 25, 75, 80])
def test_mel_for_frames_gives_exactly_four_rows_per_video_frame(n_frames: int) -> None:
    wave = noise(3.0)  # 75 video frames long: shorter, equal and longer videos
    mel = mel_for_frames(wave, n_frames)
    assert mel.shape == (4 * n_frames, 80) and mel.dtype == np.float32
    full = log_mel(wave)
    k = min(4 * n_frames, full.shape[0])
    np.testing.assert_array_equal(mel[:k], full[:k])  # same grid as log_mel: row j at j / 100 s
    assert np.all(mel[302:] == np.float32(np.log(LOG_FLOOR)))  # past the audio (and its window): silence


def test_mel_rows_per_frame_follow_fps() -> None:
    assert [mel_frames_per_video_frame(f) for f in (25, 50, 20, 100)] == [4, 2, 5, 1]
    assert mel_for_frames(noise(1.0), 10, fps=50.0).shape == (20, 80)
    with pytest.raises(ValueError, match="fps=30"):
        mel_for_frames(noise(1.0), 10, fps=30.0)
    with pytest.raises(ValueError, match="n_frames"):
        mel_for_frames(noise(1.0), -1)


def test_mel_for_frames_is_aligned_in_time() -> None:
    """A click at video frame 10 (0.4 s) shows in mel rows 40..43, not in frames far from it."""
    wave = np.zeros(SR, np.float32)
    wave[round(0.4 * SR)] = 1.0
    energy = mel_for_frames(wave, 25).mean(axis=1).reshape(25, 4).max(axis=1)  # per video frame
    assert int(np.argmax(energy)) == 10
    assert energy[8] == energy[12] == pytest.approx(np.log(LOG_FLOOR))


def test_sine_peaks_in_the_nearest_mel_bin() -> None:
    centres = mel_frequencies()
    assert centres.shape == (80,) and np.all(np.diff(centres) > 0) and centres[-1] < SR / 2
    for freq in (250.0, 1000.0, 3000.0):
        mel = log_mel(sine(freq))[5:-5]  # steady part
        assert int(np.argmax(mel.mean(axis=0))) == int(np.argmin(np.abs(centres - freq))), freq


def test_every_mel_filter_sees_some_fft_bin() -> None:
    assert np.all((mel_filterbank() > 0).sum(axis=1) >= 1)


def test_louder_input_has_more_log_energy() -> None:
    quiet, loud = log_mel(sine(1000.0, amplitude=0.05)), log_mel(sine(1000.0, amplitude=0.5))
    band = slice(20, 32)  # around 1 kHz, well above the floor in both
    np.testing.assert_allclose(loud[5:-5, band] - quiet[5:-5, band], np.log(10.0), atol=1e-3)
    assert loud.mean() > quiet.mean()


def test_features_are_deterministic() -> None:
    a, b = noise(1.3, seed=3), noise(1.3, seed=3)
    np.testing.assert_array_equal(log_mel(a), log_mel(b))
    np.testing.assert_array_equal(mel_for_frames(a, 30), mel_for_frames(b, 30))
    np.testing.assert_array_equal(mfcc(a), mfcc(b))


def test_mfcc_shape() -> None:
    assert mfcc(noise(1.0)).shape == (101, 13)
    assert mfcc(noise(1.0), n_mfcc=20).shape == (101, 20)


def test_check_audio_accepts_speech_like_input() -> None:
    check_audio(noise(0.5), SR)  # no error
    check_audio(sine(200.0, seconds=0.2, amplitude=0.01), SR)  # -43 dBFS RMS, exactly 0.2 s


def test_silent_audio_is_rejected_with_levels() -> None:
    with pytest.raises(SilentAudioError, match=r"audio is silent \(peak -inf dBFS / RMS -inf dBFS") as err:
        check_audio(np.zeros(SR, np.float32), SR)
    assert err.value.kind == "silent_audio" and isinstance(err.value, AudioFeatureError)
    with pytest.raises(SilentAudioError, match=r"peak -60\.0 dBFS / RMS -63\.0 dBFS"):
        check_audio(sine(440.0, amplitude=0.001), SR)  # hum far below speech level


def test_short_audio_is_rejected() -> None:
    with pytest.raises(ShortAudioError, match=r"audio is too short \(0\.100 s; needs at least 0\.20 s\)") as err:
        check_audio(noise(0.1), SR)
    assert err.value.kind == "audio_too_short"
    with pytest.raises(ShortAudioError, match=r"0\.000 s"):
        check_audio(np.zeros(0, np.float32), SR)
    check_audio(noise(0.1), SR, min_seconds=0.05)


def test_invalid_audio_is_rejected() -> None:
    wave = noise(1.0)
    wave[5] = np.nan
    with pytest.raises(InvalidAudioError, match="1 NaN or infinite samples"):
        check_audio(wave, SR)
    with pytest.raises(ValueError, match="mono"):
        check_audio(np.zeros((SR, 2)), SR)


def test_video_frames_for_audio_only_input() -> None:
    assert video_frames_for(3 * SR) == 75
    assert video_frames_for(SR + 100) == 25


def test_load_log_mel_reads_a_file(tmp_path) -> None:
    from imagineid.audio import load_log_mel
    from imagineid.media import write_audio

    write_audio(tmp_path / "a.wav", noise(1.0), SR)
    assert load_log_mel(tmp_path / "a.wav").shape == (100, 80)  # audio only: 25 frames x 4
    assert load_log_mel(tmp_path / "a.wav", n_frames=30).shape == (120, 80)
    write_audio(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(SilentAudioError):
        load_log_mel(tmp_path / "quiet.wav")


def test_mel_envelope_follows_the_waveform_loudness_whatever_the_recording_level() -> None:
    """A 3 Hz amplitude-modulated vowel-like tone: the envelope's first channel follows the frame RMS of
    the samples, and a 20 dB quieter copy of the same sound gives the same envelope."""
    from imagineid.audio.features import frame_rms

    t = np.arange(2 * SR) / SR
    carrier = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 700, 1200), 1))
    loud = (0.3 * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)) * carrier / 3).astype(np.float32)
    env = mel_envelope(log_mel(loud))  # (200, 2)
    assert env.shape == (len(log_mel(loud)), 2) and env.dtype == np.float32
    rms = frame_rms(loud, 50)  # 25 fps frames
    per_frame = env[:200, 0].reshape(50, 4).mean(axis=1)
    assert np.corrcoef(per_frame, rms)[0, 1] > 0.95
    np.testing.assert_allclose(mel_envelope(log_mel(0.1 * loud)), env, rtol=0.02, atol=0.01)
    assert np.allclose(np.log(np.maximum(env[:, 0], 1e-4)), env[:, 1], atol=1e-5)
