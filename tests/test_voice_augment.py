"""Voice augmentation: measured on real outputs of a synthetic voiced signal with a syllable rhythm."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy.signal import correlate, lfilter

from imagineid.audio.augment import (
    CODEC_BITRATES_KBPS,
    IDENTITY,
    MAX_FORMANT_DEVIATION,
    MAX_PITCH_SEMITONES,
    MAX_SPEED_DEVIATION,
    PEAK_CEILING,
    VoiceAugment,
    apply_augment,
    augment_voice,
    draw_augment,
)
from imagineid.audio.features import InvalidAudioError, frame_rms
from imagineid.audio.pitch import median_f0
from imagineid.synth.speech import Voice, synthesize

SR = 16000
FPS = 25.0  # 40 ms frames, the video frame the envelope must stay aligned with


def voiced(f0: float, seconds: float = 3.0, formants: tuple[float, ...] = (700.0, 1220.0, 2600.0)) -> np.ndarray:
    """Glottal pulses at `f0` (slight vibrato) through formant resonators, in syllables with pauses."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    phase = np.cumsum(f0 * (1.0 + 0.02 * np.sin(2 * np.pi * 5.0 * t)) / SR)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    source = np.diff(lfilter([1.0], [1.0, -1.8, 0.81], pulses), prepend=0.0)  # glottal roll-off, lip radiation
    x = np.zeros(n)
    for k, fc in enumerate(formants):  # parallel resonators, as in a formant synthesiser
        r = np.exp(-np.pi * 90.0 / SR)
        x += 0.5**k * lfilter([1.0 - r, 0.0, r - 1.0], [1.0, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], source)
    rng = np.random.default_rng(7)
    env = np.zeros(n)
    start = int(0.2 * SR)
    while start < n - int(0.3 * SR):  # syllables of 120-300 ms, pauses of 60-250 ms
        length = int(rng.uniform(0.12, 0.30) * SR)
        env[start : start + length] = np.hanning(length) * rng.uniform(0.5, 1.0)
        start += length + int(rng.uniform(0.06, 0.25) * SR)
    x = x * env
    return (0.7 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def male() -> np.ndarray:
    return voiced(110.0)


@pytest.fixture(scope="module")
def female() -> np.ndarray:
    return voiced(210.0, formants=(850.0, 1500.0, 2950.0))


def best_envelope_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 3) -> int:
    """Lag (frames) of y against x that maximises the correlation of their frame RMS; > 0: y is late."""
    n = int(len(x) / SR * FPS)
    ex, ey = frame_rms(x, n, FPS, SR), frame_rms(y, n, FPS, SR)
    corr = {
        lag: np.corrcoef(ex[: n - lag], ey[lag:])[0, 1] if lag >= 0 else np.corrcoef(ex[-lag:], ey[: n + lag])[0, 1]
        for lag in range(-max_lag, max_lag + 1)
    }
    return max(corr, key=corr.get)


def sample_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 400) -> int:
    """Lag (samples) of y against x by cross-correlation; > 0: y is late."""
    corr = correlate(np.asarray(y, np.float64), np.asarray(x, np.float64)[max_lag:-max_lag], mode="valid", method="fft")
    return int(np.argmax(corr)) - max_lag


def only(**kw: object) -> VoiceAugment:
    return dataclasses.replace(IDENTITY, **kw)


# --- voice ---------------------------------------------------------------------------------------


def test_two_semitones_up_raises_median_f0_by_12_percent_and_keeps_duration(male: np.ndarray) -> None:
    y = apply_augment(male, SR, only(pitch_semitones=2.0), np.random.default_rng(0))
    assert y.shape == male.shape and y.dtype == np.float32
    ratio = median_f0(y, SR) / median_f0(male, SR)
    assert ratio == pytest.approx(2 ** (2 / 12), abs=0.015)  # 1.122
    assert best_envelope_lag(male, y) == 0


def test_formant_warp_moves_formants_not_pitch(male: np.ndarray) -> None:
    import parselmouth

    def f2(x: np.ndarray) -> float:
        formant = parselmouth.Sound(x.astype(np.float64), SR).to_formant_burg(
            max_number_of_formants=4, maximum_formant=4500
        )
        values = [formant.get_value_at_time(2, t) for t in formant.ts()]
        return float(np.nanmedian(values))

    y = apply_augment(male, SR, only(formant_ratio=1.06), np.random.default_rng(0))
    assert median_f0(y, SR) == pytest.approx(median_f0(male, SR), rel=0.02)
    assert f2(y) / f2(male) == pytest.approx(1.06, abs=0.025)


@pytest.mark.parametrize("keep_timing", [True, False])
def test_any_drawn_augment_keeps_the_gender_heard_in_f0(
    male: np.ndarray, female: np.ndarray, keep_timing: bool
) -> None:
    rng = np.random.default_rng(16)
    for _ in range(15):
        y_m, aug_m = augment_voice(male, SR, rng, keep_timing=keep_timing)
        y_f, aug_f = augment_voice(female, SR, rng, keep_timing=keep_timing)
        assert median_f0(y_m, SR) < 150.0, aug_m
        assert median_f0(y_f, SR) > 170.0, aug_f


def test_espeak_voices_keep_their_gender_under_augmentation() -> None:
    text = "Bob bought a big blue map for my mom."
    man = synthesize(text, Voice("male", "adult", "m3", pitch=45, pitch_range=55, rate=170, volume=100)).samples
    woman = synthesize(text, Voice("female", "adult", "f2", pitch=55, pitch_range=60, rate=170, volume=100)).samples
    rng = np.random.default_rng(4)
    for _ in range(8):
        y_m, aug_m = augment_voice(man, SR, rng)
        y_f, aug_f = augment_voice(woman, SR, rng)
        assert median_f0(y_m, SR) < 150.0, aug_m
        assert median_f0(y_f, SR) > 170.0, aug_f


def test_speed_changes_length_by_the_factor_and_keeps_pitch(male: np.ndarray) -> None:
    for speed in (0.87, 1.13):
        y = apply_augment(male, SR, only(speed=speed), np.random.default_rng(0))
        assert len(y) == round(len(male) / speed)
        assert median_f0(y, SR) == pytest.approx(median_f0(male, SR), rel=0.03)
    drawn = [draw_augment(np.random.default_rng(s), keep_timing=False).speed for s in range(200)]
    assert all(abs(s - 1.0) <= MAX_SPEED_DEVIATION for s in drawn) and len(set(drawn)) > 50


# --- timing ----------------------------------------------------------------------------------------


def test_keep_timing_keeps_length_exactly_and_the_envelope_at_lag_zero(male: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        y, aug = augment_voice(male, SR, rng, keep_timing=True)
        assert aug.speed == 1.0
        assert y.shape == male.shape
        assert best_envelope_lag(male, y) == 0, aug


@pytest.mark.parametrize("codec", sorted(CODEC_BITRATES_KBPS))
def test_codec_round_trip_is_realigned_to_the_sample(male: np.ndarray, codec: str) -> None:
    y = apply_augment(male, SR, only(codec=codec), np.random.default_rng(0))
    assert y.shape == male.shape
    assert abs(sample_lag(male, y)) <= 1
    assert np.corrcoef(male, y)[0, 1] > 0.9  # coded, yet the same waveform at the same time
    assert not np.array_equal(y, male)


def test_reverb_keeps_the_direct_path_at_lag_zero_and_adds_a_tail(male: np.ndarray) -> None:
    # noise bursts: their cross-correlation with the reverberant copy traces the room response itself
    x = (np.random.default_rng(1).standard_normal(len(male)) * (np.abs(male) > 0)).astype(np.float32)
    for seed in range(4):
        y = apply_augment(x, SR, only(reverb_rt60=0.5), np.random.default_rng(seed))
        corr = correlate(
            y.astype(np.float64), x[400:-400].astype(np.float64), mode="valid", method="fft"
        )  # lags -400..400
        assert np.abs(corr[:360]).max() < 0.05 * corr[400]  # nothing before the direct path's interpolator
        assert np.argmax(np.abs(corr[:401])) in (399, 400)  # the direct path is at lag 0 (to a sample)
    y = apply_augment(male, SR, only(reverb_rt60=0.5), np.random.default_rng(0))
    quiet = male == 0  # the pauses between syllables fill with reverberation
    assert np.sqrt(np.mean(y[quiet] ** 2)) > 0.01 * np.sqrt(np.mean(y**2))


# --- channel and level -----------------------------------------------------------------------------


def test_noise_is_added_at_the_drawn_snr(male: np.ndarray) -> None:
    y = apply_augment(male, SR, only(snr_db=12.0), np.random.default_rng(0)).astype(np.float64)
    x = male.astype(np.float64)
    a = float(np.dot(y, x) / np.dot(x, x))  # y = a x + noise, output was rescaled
    noise = y - a * x
    hop = int(0.02 * SR)
    frames = np.mean((a * x[: len(x) // hop * hop]).reshape(-1, hop) ** 2, axis=1)
    active = frames[frames >= frames.max() * 1e-3].mean()
    assert 10 * np.log10(active / np.mean(noise**2)) == pytest.approx(12.0, abs=1.0)


def test_telephone_band_removes_what_a_phone_line_cannot_carry(male: np.ndarray) -> None:
    y = apply_augment(male, SR, only(band="telephone"), np.random.default_rng(0))
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    in_band = spec[(f > 400) & (f < 3300)].sum()
    assert spec[f > 4200].sum() < 1e-4 * in_band
    assert spec[f < 150].sum() < 1e-2 * in_band
    assert y.shape == male.shape and best_envelope_lag(male, y) == 0


def test_lowpass_cuts_between_4_and_7_khz(male: np.ndarray) -> None:
    y = apply_augment(male, SR, only(band="lowpass"), np.random.default_rng(0))
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    spec_in = np.abs(np.fft.rfft(male)) ** 2
    high = f > 7500
    assert spec[high].sum() / spec.sum() < 1e-3 * spec_in[high].sum() / spec_in.sum()
    speech = (f > 100) & (f < 3500)
    assert spec[speech].sum() / spec.sum() > 0.98 * spec_in[speech].sum() / spec_in.sum()


def test_output_is_finite_limited_and_never_silent(male: np.ndarray) -> None:
    loud = male / np.abs(male).max() * 0.97
    everything = VoiceAugment(2.5, 0.94, 1.0, 0.6, 10.0, "telephone", "mp3", 6.0)
    for x, aug in ((loud, everything), (male * 0.001, only(gain_db=-12.0)), (male, only(gain_db=-6.0))):
        y = apply_augment(x, SR, aug, np.random.default_rng(1))
        assert np.all(np.isfinite(y)) and y.dtype == np.float32
        assert np.abs(y).max() <= PEAK_CEILING + 1e-6
        rms_in = np.sqrt(np.mean(x.astype(np.float64) ** 2))
        assert np.sqrt(np.mean(y**2)) > 0.05 * rms_in * 10 ** (min(aug.gain_db, 0.0) / 20)
    y = apply_augment(male, SR, only(gain_db=-6.0), np.random.default_rng(1))
    assert np.abs(y).max() == pytest.approx(np.abs(male).max() * 10 ** (-6 / 20), rel=1e-4)


# --- drawing, identity, determinism ----------------------------------------------------------------


def test_drawn_augments_stay_in_their_label_safe_ranges_and_serialise() -> None:
    rng = np.random.default_rng(0)
    drawn = [draw_augment(rng, keep_timing=True) for _ in range(400)]
    for aug in drawn:
        assert abs(aug.pitch_semitones) <= MAX_PITCH_SEMITONES
        assert abs(aug.formant_ratio - 1.0) <= MAX_FORMANT_DEVIATION
        assert aug.speed == 1.0
        assert json.loads(json.dumps(dataclasses.asdict(aug))) == dataclasses.asdict(aug)
    # each effect independently: sometimes on, sometimes off
    for on in (
        [a.pitch_semitones != 0 for a in drawn],
        [a.reverb_rt60 > 0 for a in drawn],
        [a.snr_db is not None for a in drawn],
        [a.band != "full" for a in drawn],
        [a.codec is not None for a in drawn],
    ):
        assert 0.1 < np.mean(on) < 0.9
    assert {a.band for a in drawn} == {"full", "telephone", "lowpass"}
    assert {a.codec for a in drawn} == {None, "mp3", "aac"}
    weak = [draw_augment(rng, keep_timing=True, strength=0.3) for _ in range(400)]
    assert max(abs(a.pitch_semitones) for a in weak) <= 0.3 * MAX_PITCH_SEMITONES
    assert np.mean([a.codec is not None for a in weak]) < np.mean([a.codec is not None for a in drawn])


def test_strength_zero_returns_the_input_unchanged(male: np.ndarray) -> None:
    y, aug = augment_voice(male, SR, np.random.default_rng(5), strength=0.0)
    assert aug == IDENTITY
    np.testing.assert_array_equal(y, male)
    assert y is not male


def test_same_seed_gives_the_same_output(male: np.ndarray) -> None:
    for seed in (0, 1, 2):
        a, aug_a = augment_voice(male, SR, np.random.default_rng(seed))
        b, aug_b = augment_voice(male, SR, np.random.default_rng(seed))
        assert aug_a == aug_b
        np.testing.assert_array_equal(a, b)
    everything = VoiceAugment(-1.5, 1.04, 1.0, 0.4, 15.0, "lowpass", "aac", -3.0)
    a = apply_augment(male, SR, everything, np.random.default_rng(9))
    b = apply_augment(male, SR, everything, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, apply_augment(male, SR, everything, np.random.default_rng(10)))


def test_bad_input_and_out_of_range_augments_are_refused(male: np.ndarray) -> None:
    bad = male.copy()
    bad[100] = np.nan
    with pytest.raises(InvalidAudioError):
        apply_augment(bad, SR, only(gain_db=1.0), np.random.default_rng(0))
    with pytest.raises(ValueError):
        only(pitch_semitones=4.0)  # would turn a man's voice into a boy's
    with pytest.raises(ValueError):
        only(formant_ratio=1.2)  # a woman's vocal tract from a man's
    with pytest.raises(ValueError):
        draw_augment(np.random.default_rng(0), keep_timing=True, strength=1.5)
