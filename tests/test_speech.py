"""eSpeak NG speech for the synthetic corpus: real synthesis, measured on its output."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from imagineid.audio.features import frame_rms
from imagineid.audio.pitch import median_f0
from imagineid.errors import ImagineIDError
from imagineid.synth.sentences import SENTENCES, pick_sentence
from imagineid.synth.speech import (
    EMOTIONS,
    Phoneme,
    Speech,
    SpeechSynthesisError,
    Voice,
    apply_emotion,
    fit_to_duration,
    sample_voice,
    synthesize,
)
from imagineid.synth.visemes import VISEMES, viseme_for, viseme_track

TEXT = "Bob bought a big blue map for my mom."
ADULT_F = Voice("female", "adult", "f2", pitch=55, pitch_range=60, rate=170, volume=100)
ADULT_M = Voice("male", "adult", "m3", pitch=45, pitch_range=55, rate=170, volume=100)


@pytest.fixture(scope="module")
def neutral() -> Speech:
    return synthesize(TEXT, ADULT_F, "neutral")


def _group_f0(gender: str, age: str, n: int = 6, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    voices = [sample_voice(rng, gender, age) for _ in range(n)]
    return [median_f0(synthesize(SENTENCES[i], v).samples, 16000) for i, v in enumerate(voices)]


# --- synthesis -----------------------------------------------------------------------------------


def test_same_call_gives_identical_samples_even_after_other_speech(neutral: Speech) -> None:
    synthesize("Something else entirely, said by another voice.", ADULT_M, "angry")  # would leak state
    again = synthesize(TEXT, ADULT_F, "neutral")
    np.testing.assert_array_equal(again.samples, neutral.samples)
    assert again.phonemes == neutral.phonemes


def test_samples_are_float32_mono_at_16k_with_sensible_duration(neutral: Speech) -> None:
    assert neutral.sample_rate == 16000
    assert neutral.samples.dtype == np.float32 and neutral.samples.ndim == 1
    assert np.abs(neutral.samples).max() <= 1.0
    assert 1.2 < neutral.duration_s < 4.0  # 9 words at 170 wpm
    assert frame_rms(neutral.samples, int(neutral.duration_s * 25)).max() > 0.05  # audible


def test_resampling_keeps_the_duration() -> None:
    native = synthesize(TEXT, ADULT_F, "neutral", sample_rate=22050)
    at_16k = synthesize(TEXT, ADULT_F, "neutral")
    assert native.sample_rate == 22050
    assert abs(native.duration_s - at_16k.duration_s) < 1e-3


def test_phonemes_are_ordered_and_inside_the_audio(neutral: Speech) -> None:
    ps = neutral.phonemes
    assert len(ps) > 20
    assert all(0.0 <= p.start_s < p.end_s <= neutral.duration_s + 1e-9 for p in ps)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in itertools.pairwise(ps))
    names = [p.name for p in ps]
    assert names.count("b") >= 3 and names.count("m") >= 3  # Bob, bought, big, blue / map, my, mom
    assert not any(n.startswith(("'", ",")) for n in names)  # stress marks stripped


def test_unknown_variant_and_language_are_clear_errors() -> None:
    with pytest.raises(SpeechSynthesisError, match="variant"):
        synthesize(TEXT, dataclasses.replace(ADULT_F, variant="no-such-variant"))
    with pytest.raises(SpeechSynthesisError) as info:
        synthesize(TEXT, dataclasses.replace(ADULT_F, language="zz"))
    assert isinstance(info.value, ImagineIDError) and info.value.kind == "speech_synthesis"
    assert synthesize("Still works.", ADULT_F).duration_s > 0.3  # a failure does not poison the library


# --- voices: gender, age, emotion ----------------------------------------------------------------


def test_sample_voice_is_reproducible_and_labelled() -> None:
    a = sample_voice(np.random.default_rng(3), "female", "elder")
    b = sample_voice(np.random.default_rng(3), "female", "elder")
    assert a == b and a.gender == "female" and a.age_group == "elder"
    with pytest.raises(ValueError, match="gender"):
        sample_voice(np.random.default_rng(0), "robot", "adult")


def test_median_f0_recovers_a_known_pitch() -> None:
    t = np.arange(16000) / 16000
    for f0 in (95.0, 210.0, 320.0):
        pulse_train = np.sign(np.sin(2 * np.pi * f0 * t)) * 0.3 + 0.05 * np.sin(2 * np.pi * 3 * f0 * t)
        assert median_f0(pulse_train, 16000) == pytest.approx(f0, rel=0.02)
    assert np.isnan(median_f0(np.zeros(16000), 16000))


def test_men_and_women_differ_by_more_than_50_hz_and_children_are_higher() -> None:
    male = _group_f0("male", "adult") + _group_f0("male", "elder", n=3)
    female = _group_f0("female", "adult") + _group_f0("female", "elder", n=3)
    girls, boys = _group_f0("female", "child", n=3), _group_f0("male", "child", n=3)
    assert np.median(female) - np.median(male) >= 50.0
    assert max(male) < min(female)  # per speaker, not only on average
    assert np.median(girls) > np.median(female) + 30.0
    assert np.median(boys) > np.median(male) + 100.0  # before puberty both sexes speak high
    assert min(boys + girls) > 215.0


def test_children_have_shorter_vocal_tracts() -> None:
    from imagineid.audio.voice_stats import voice_stats

    rng = np.random.default_rng(4)
    boy, man = sample_voice(rng, "male", "child"), sample_voice(rng, "male", "adult")
    assert boy.formant_ratio > 1.1 and man.formant_ratio == 1.0
    f_boy = voice_stats(synthesize(TEXT, boy).samples).formants_hz
    f_man = voice_stats(
        synthesize(TEXT, dataclasses.replace(boy, age_group="adult", formant_ratio=1.0, f0_median_hz=0.0)).samples
    ).formants_hz
    assert f_boy[1] > 1.05 * f_man[1]  # F2 rises with the shorter tract


def test_emotions_change_prosody_measurably() -> None:
    clips = {e: synthesize(TEXT, ADULT_M, e) for e in EMOTIONS}

    def loudness(s: Speech) -> float:
        rms = frame_rms(s.samples, int(s.duration_s * 25))
        return float(np.percentile(rms, 90))

    f0 = {e: median_f0(s.samples, 16000) for e, s in clips.items()}
    assert clips["sad"].duration_s > 1.2 * clips["neutral"].duration_s > 1.2 * clips["happy"].duration_s
    assert loudness(clips["angry"]) > 1.5 * loudness(clips["neutral"]) > 1.5 * loudness(clips["sad"])
    assert f0["happy"] > f0["neutral"] > f0["sad"]


def test_apply_emotion_clamps_to_espeak_ranges() -> None:
    loud = dataclasses.replace(ADULT_M, volume=190, pitch=98, pitch_range=95)
    angry = apply_emotion(loud, "angry")
    assert angry.volume <= 200 and angry.pitch <= 100 and angry.pitch_range <= 100
    assert apply_emotion(ADULT_M, "neutral") == ADULT_M
    with pytest.raises(ValueError, match="emotion"):
        apply_emotion(ADULT_M, "bored")


# --- fitting to a clip ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1.0, 3.0, 4.04])
def test_fit_to_duration_is_exact_and_shifts_phonemes(neutral: Speech, seconds: float) -> None:
    fitted = fit_to_duration(neutral, seconds)
    assert len(fitted.samples) == round(seconds * 16000)
    assert all(0.0 <= p.start_s < p.end_s <= seconds + 1e-9 for p in fitted.phonemes)
    if seconds > neutral.duration_s:
        lead = fitted.phonemes[0].start_s - neutral.phonemes[0].start_s
        assert lead == pytest.approx(0.2)
        assert np.all(fitted.samples[: int(0.19 * 16000)] == 0.0)
        assert len(fitted.phonemes) == len(neutral.phonemes)
    else:
        assert len(fitted.phonemes) < len(neutral.phonemes)
        assert abs(fitted.samples[-1]) < 1e-3  # faded, no click


# --- visemes -------------------------------------------------------------------------------------


def test_bilabials_close_open_vowels_open_rounded_vowels_narrow() -> None:
    for closed in ("p", "b", "m", "_", "_:"):
        assert viseme_for(closed)[0] == 0.0
    assert viseme_for("'A:")[0] > 0.8 and viseme_for("a")[0] > 0.8
    assert viseme_for("u:")[1] < 0.3 and viseme_for("oU")[1] < 0.3 and viseme_for("w")[1] < 0.3
    assert viseme_for("i:")[1] > 0.7
    assert viseme_for("Q9")[0] == pytest.approx(0.22)  # unknown consonant-ish: moderate
    assert 0.4 < viseme_for("aI3")[0] <= 1.0  # unknown vowel-ish: fairly open
    assert all(0.0 <= o <= 1.0 and 0.0 <= w <= 1.0 for o, w in VISEMES.values())


def test_viseme_track_shape_and_closed_mouth_in_silence(neutral: Speech) -> None:
    fitted = fit_to_duration(neutral, 3.0)
    track = viseme_track(fitted.phonemes, 75, 25.0, fitted.samples)
    assert track.shape == (75, 2) and track.dtype == np.float32
    rms = frame_rms(fitted.samples, 75)
    silent = rms < 1e-4
    assert silent[:4].all() and silent.sum() >= 4  # 0.2 s lead + trailing pad
    assert np.all(track[silent, 0] == 0.0)
    assert track[:, 0].max() > 0.5


def test_viseme_track_without_audio_closes_on_bilabials() -> None:
    ps = [Phoneme("_", 0.0, 0.2), Phoneme("a", 0.2, 0.6), Phoneme("m", 0.6, 1.0), Phoneme("A:", 1.0, 1.4)]
    track = viseme_track(ps, 40, 25.0)  # 1.6 s
    assert track[2, 0] < 0.05  # pause
    assert track[10, 0] > 0.8  # middle of 'a'
    assert track[20, 0] < 0.1  # middle of 'm', lips shut
    assert track[37, 0] < track[30, 0]  # after the phonemes: closed again


def test_mouth_opening_follows_speech_energy_over_a_small_corpus() -> None:
    rng = np.random.default_rng(7)
    openings, energies, per_clip = [], [], []
    for i in range(8):
        voice = sample_voice(rng, ("male", "female")[i % 2], ("adult", "child", "elder")[i % 3])
        speech = fit_to_duration(synthesize(pick_sentence(rng), voice, EMOTIONS[i % 4]), 3.2)
        opening = viseme_track(speech.phonemes, 80, 25.0, speech.samples)[:, 0]
        energy = frame_rms(speech.samples, 80)
        openings.append(opening)
        energies.append(energy)
        per_clip.append(np.corrcoef(opening, energy)[0, 1])
    pooled = np.corrcoef(np.concatenate(openings), np.concatenate(energies))[0, 1]
    assert pooled >= 0.6, pooled
    assert min(per_clip) >= 0.5, per_clip


def test_sentence_bank_is_varied_and_short() -> None:
    assert len(SENTENCES) >= 60 and len(set(SENTENCES)) == len(SENTENCES)
    assert all(4 <= len(s.split()) <= 10 for s in SENTENCES)
    assert sum(any(w[0].lower() in "pbm" for w in s.split()) for s in SENTENCES) >= 20
    rng = np.random.default_rng(0)
    assert len({pick_sentence(rng) for _ in range(200)}) > 40
