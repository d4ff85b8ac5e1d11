"""Speech for the synthetic corpus: eSpeak NG voices with known gender, age and emotion, plus visemes.

The synthetic corpus needs speech whose factors are ground truth (who speaks, how old, in what mood)
and whose timing is known to the millisecond, so a rendered mouth can move with it. eSpeak NG gives
both: formant synthesis with voice variants (`espeak-ng-data/voices/!v`) and PHONEME events with audio
positions. It runs through ctypes on the `libespeak-ng.so` that `espeakng-loader` ships (docs/architecture.md §7).

    import numpy as np
    from imagineid.synth.visemes import viseme_track
    from imagineid.synth.speech import sample_voice, synthesize, fit_to_duration

    rng = np.random.default_rng(0)
    voice = sample_voice(rng, "female", "adult")
    speech = fit_to_duration(synthesize("Bob bought a big blue map.", voice, "happy"), 3.0)
    mouth = viseme_track(speech.phonemes, 75, fps=25.0, samples=speech.samples)  # (75, 2)

Determinism: the library keeps synthesis state (glottal phase, flutter, echo, noise seed) in process
globals that `espeak_Terminate` does not reset, so the same call would give slightly different samples
depending on what was spoken before. We therefore load a private copy of the library, fix the noise
seed, speak one utterance and unload it again (~6 ms); the same input then gives identical samples in
any process and in any order.
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import dataclasses
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS  # noqa: F401  (re-exported)
from imagineid.errors import ImagineIDError


class SpeechSynthesisError(ImagineIDError):
    """eSpeak NG could not be loaded, initialised, or could not speak the text with this voice."""

    kind = "speech_synthesis"


# --------------------------------------------------------------------------------------------------
# Voices and emotions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """One speaker: an eSpeak variant plus the four prosody knobs `espeak_SetParameter` offers."""

    gender: str  # 'male' | 'female' (ground-truth label; children use female-like variants)
    age_group: str  # 'child' | 'adult' | 'elder'
    variant: str  # file in espeak-ng-data/voices/!v, e.g. 'm3', 'f2', 'croak', 'grandma'
    pitch: int  # espeakPITCH, 0-100; 50 = the variant's own base pitch, each step ~1% F0
    pitch_range: int  # espeakRANGE, 0-100; 0 = monotone, 50 = normal intonation
    rate: int  # espeakRATE, words per minute, 80-450 (175 is eSpeak's normal)
    volume: int  # espeakVOLUME, 0-200; 100 = normal, above ~150 eSpeak starts to compress
    word_gap: int = 0  # espeakWORDGAP, extra pause between words in units of 10 ms
    language: str = "en-us"  # eSpeak language; phoneme names in VISEMES are en-us mnemonics
    formant_ratio: float = 1.0  # vocal-tract scaling after synthesis (> 1: shorter tract, as a child's)
    f0_median_hz: float = 0.0  # target neutral median F0 after synthesis (0: eSpeak's own)

    @property
    def espeak_name(self) -> str:
        """The name espeak_SetVoiceByName takes: language plus variant."""
        return f"{self.language}+{self.variant}"


# Variant files that exist in espeakng-loader's data (voices/!v). Chosen by listening to what they do:
# m*/f* are plain adult voices; croak / grandpa / grandma add 'flutter 20' (an unsteady, aged F0).
_VARIANTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("male", "adult"): ("m1", "m2", "m3", "m4", "m6", "m7"),
    ("female", "adult"): ("f1", "f2", "f3", "f4", "f5"),
    ("male", "child"): ("m1", "m2", "m3", "m6"),  # boys: male timbre at the top of its pitch range
    ("female", "child"): ("f1", "f2", "f4", "f5"),
    ("male", "elder"): ("croak", "grandpa", "m1"),
    ("female", "elder"): ("grandma", "f1", "f4"),
}

# Uniform ranges per (gender, age): pitch, range, rate, in eSpeak's units. Adult men sit near 110 Hz
# and women near 200 Hz, as recorded speakers do (eSpeak's female variants at their own pitch speak
# near 235 Hz, above nearly every real woman; tests/test_speech.py checks the levels). Elderly men are
# a little higher than younger ones (men's F0 rises with age; the croak / grandpa variants start low,
# so their knob sits higher), elderly women a little lower than younger women: age is heard in voice
# quality (the flutter variants), range and rate more than in pitch level. Children's eSpeak pitch is
# then replaced by `_CHILD_VOICE`'s.
_PROSODY: dict[tuple[str, str], dict[str, tuple[int, int]]] = {
    ("male", "adult"): {"pitch": (35, 58), "range": (40, 65), "rate": (150, 185)},
    ("female", "adult"): {"pitch": (28, 50), "range": (50, 75), "rate": (155, 190)},
    ("male", "child"): {"pitch": (90, 99), "range": (55, 80), "rate": (180, 215)},
    ("female", "child"): {"pitch": (86, 98), "range": (55, 80), "rate": (180, 215)},
    ("male", "elder"): {"pitch": (50, 72), "range": (30, 50), "rate": (120, 145)},
    ("female", "elder"): {"pitch": (24, 44), "range": (35, 55), "rate": (125, 150)},
}


# Children as real children sound: eSpeak's presets top out near 170 Hz for boys and keep an adult
# vocal tract, which made a synthetic boy sound like a grown woman. Before puberty both sexes speak
# around 230-300 Hz with formants 15-25 % above an adult man's; the post-synthesis PSOLA step sets
# both (boys keep their male variant's timbre, slightly lower than girls').
_CHILD_VOICE: dict[str, dict[str, tuple[float, float]]] = {
    "male": {"f0": (225.0, 265.0), "formant": (1.15, 1.22)},
    "female": {"f0": (245.0, 295.0), "formant": (1.08, 1.15)},
}


def sample_voice(rng: np.random.Generator, gender: str, age_group: str) -> Voice:
    """A plausible random speaker of this gender and age; the generator makes a corpus reproducible."""
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    if age_group not in AGE_GROUPS:
        raise ValueError(f"age_group must be one of {AGE_GROUPS}, got {age_group!r}")
    variants = _VARIANTS[(gender, age_group)]
    prosody = _PROSODY[(gender, age_group)]

    def draw(key: str) -> int:
        lo, hi = prosody[key]
        return int(rng.integers(lo, hi + 1))

    voice = Voice(
        gender=gender,
        age_group=age_group,
        variant=variants[int(rng.integers(len(variants)))],
        pitch=draw("pitch"),
        pitch_range=draw("range"),
        rate=draw("rate"),
        volume=int(rng.integers(90, 111)),
    )
    if age_group == "child":
        child = _CHILD_VOICE[gender]
        voice = dataclasses.replace(
            voice,
            f0_median_hz=round(float(rng.uniform(*child["f0"])), 1),
            formant_ratio=round(float(rng.uniform(*child["formant"])), 3),
        )
    return voice


@dataclass(frozen=True)
class _Prosody:
    """How an emotion shifts a voice: additive pitch/range/volume/gap, multiplicative rate."""

    pitch: int = 0
    pitch_range: int = 0
    rate: float = 1.0
    volume: int = 0
    word_gap: int = 0


# Acted-emotion prosody as reported for MEAD-like corpora (exaggerated, as acted corpora are):
# happy = higher, livelier, faster;
# sad = lower, flat, slow, quiet, with pauses; angry = loud, fast-ish, wide excursions.
_EMOTION_PROSODY: dict[str, _Prosody] = {
    "neutral": _Prosody(),
    "happy": _Prosody(pitch=16, pitch_range=35, rate=1.15, volume=20),
    "sad": _Prosody(pitch=-10, pitch_range=-35, rate=0.75, volume=-40, word_gap=4),
    "angry": _Prosody(pitch=2, pitch_range=15, rate=1.05, volume=90),
}


def apply_emotion(voice: Voice, emotion: str) -> Voice:
    """The voice as it sounds in this emotion (clamped to the ranges eSpeak accepts)."""
    if emotion not in _EMOTION_PROSODY:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
    p = _EMOTION_PROSODY[emotion]
    return dataclasses.replace(
        voice,
        pitch=int(np.clip(voice.pitch + p.pitch, 0, 100)),
        pitch_range=int(np.clip(voice.pitch_range + p.pitch_range, 0, 100)),
        rate=int(np.clip(round(voice.rate * p.rate), 80, 450)),
        volume=int(np.clip(voice.volume + p.volume, 0, 200)),
        word_gap=max(0, voice.word_gap + p.word_gap),
    )


# --------------------------------------------------------------------------------------------------
# Speech containers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phoneme:
    """One eSpeak phoneme (en-us mnemonic, stress marks removed) and when it sounds, in seconds."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Speech:
    """Mono speech with its phoneme timing; `samples` is float32 in [-1, 1]."""

    samples: np.ndarray  # (N,) float32
    sample_rate: int
    phonemes: list[Phoneme]
    text: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


# --------------------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# --------------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000  # without it a missing data folder calls exit() inside the library
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7
_RAND_SEED = 20240301  # fixes eSpeak's breath/noise generator


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of the utterance
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_LOCK = threading.Lock()  # the library is process-global state: one utterance at a time
_PRIVATE_LIB: str | None = None


def _espeak_paths() -> tuple[str, str]:
    """(library, data folder) shipped by espeakng-loader."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise SpeechSynthesisError(f"eSpeak NG is not installed: pip install espeakng-loader ({exc})") from exc
    lib_path = espeakng_loader.get_library_path()
    try:
        data_path = espeakng_loader.get_data_path()
    except RuntimeError as exc:
        raise SpeechSynthesisError(f"eSpeak NG data folder is missing: {exc}") from exc
    if not os.path.isfile(lib_path):
        raise SpeechSynthesisError(f"eSpeak NG library not found at {lib_path}")
    return lib_path, data_path


def _private_library() -> str:
    """A copy of libespeak-ng.so that only this module opens, so unloading it really resets it.

    If another package had the shared copy open, dlclose would not unload it and state would leak.
    Falls back on the shared copy where no temp folder is writable.
    """
    global _PRIVATE_LIB
    if _PRIVATE_LIB is None or not os.path.isfile(_PRIVATE_LIB):
        lib_path, _ = _espeak_paths()
        try:
            folder = tempfile.mkdtemp(prefix="imagineid-espeak-")
            _PRIVATE_LIB = shutil.copy(lib_path, os.path.join(folder, "libespeak-ng-imagineid.so"))
            atexit.register(shutil.rmtree, folder, True)
        except OSError:
            _PRIVATE_LIB = lib_path
    return _PRIVATE_LIB


def available_variants() -> tuple[str, ...]:
    """Voice variants in the bundled data; eSpeak silently ignores an unknown one, so we check."""
    _, data_path = _espeak_paths()
    folder = os.path.join(data_path, "voices", "!v")
    return tuple(sorted(os.listdir(folder))) if os.path.isdir(folder) else ()


def _declare(lib: ctypes.CDLL) -> None:
    """Argument types, so ctypes converts (and checks) every call."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip


@contextlib.contextmanager
def _fresh_library() -> Iterator[tuple[ctypes.CDLL, int]]:
    """(library, sample rate), loaded and initialised now and unloaded on exit; hold `_LOCK`."""
    _, data_path = _espeak_paths()
    lib_path = _private_library()
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as exc:
        raise SpeechSynthesisError(f"cannot load eSpeak NG library {lib_path}: {exc}") from exc
    try:
        _declare(lib)
        options = _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), options)
        if rate <= 0:
            raise SpeechSynthesisError(f"eSpeak NG failed to initialise with data {data_path} (returned {rate})")
        yield lib, rate
    finally:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)


def _configure(lib: ctypes.CDLL, voice: Voice) -> None:
    """Voice, noise seed and prosody; parameters after the voice, which would reset them."""
    if voice.variant not in available_variants():
        raise SpeechSynthesisError(f"eSpeak NG has no voice variant {voice.variant!r} (see espeak-ng-data/voices/!v)")
    if lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
        raise SpeechSynthesisError(f"eSpeak NG has no voice {voice.espeak_name!r}")
    lib.espeak_ng_SetRandSeed(_RAND_SEED)
    for param, value in (
        (_PARAM_RATE, voice.rate),
        (_PARAM_VOLUME, voice.volume),
        (_PARAM_PITCH, voice.pitch),
        (_PARAM_RANGE, voice.pitch_range),
        (_PARAM_WORDGAP, voice.word_gap),
    ):
        lib.espeak_SetParameter(param, int(value), 0)


def _speak(text: str, voice: Voice) -> tuple[np.ndarray, int, list[tuple[str, int]]]:
    """Raw eSpeak output: int16 samples, their rate and (phoneme, ms) events, from a fresh library."""
    chunks: list[np.ndarray] = []
    events: list[tuple[str, int]] = []

    def on_audio(wav, n, event_list) -> int:  # ctypes pointers
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while event_list[i].type != _EVENT_LIST_TERMINATED:
            ev = event_list[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                events.append((name, int(ev.audio_position)))
            i += 1
        return 0

    callback = _SynthCallback(on_audio)  # kept alive until the library is unloaded
    encoded = text.encode("utf-8")
    with _LOCK, _fresh_library() as (lib, rate):
        lib.espeak_SetSynthCallback(callback)
        _configure(lib, voice)
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, 1, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise SpeechSynthesisError(f"eSpeak NG failed to speak {text[:40]!r} (status {status})")
    if not chunks:
        raise SpeechSynthesisError(f"eSpeak NG produced no audio for {text[:40]!r}")
    return np.concatenate(chunks), rate, events


def clean_phoneme_name(raw: str) -> str:
    """eSpeak prefixes stressed phonemes with ' (primary) or , (secondary); the mouth does not care."""
    return raw.lstrip("',%=") or raw


def _phonemes(events: list[tuple[str, int]], duration_s: float) -> list[Phoneme]:
    """Events → intervals: each phoneme lasts until the next one starts (the last until the audio ends)."""
    starts = [(clean_phoneme_name(name), min(ms / 1000.0, duration_s)) for name, ms in events if name]
    out: list[Phoneme] = []
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else duration_s
        if end > start:
            out.append(Phoneme(name, start, end))
    return out


def synthesize(text: str, voice: Voice, emotion: str = "neutral", sample_rate: int = 16000) -> Speech:
    """Speak `text` with `voice` in `emotion`; deterministic, ~500x real time."""
    if not text.strip():
        raise ValueError("text is empty")
    raw, native_rate, events = _speak(text, apply_emotion(voice, emotion))
    samples = raw.astype(np.float32) / 32768.0
    if sample_rate != native_rate:  # 22050 -> 16000 is up 320, down 441
        g = math.gcd(sample_rate, native_rate)
        samples = resample_poly(samples, sample_rate // g, native_rate // g).astype(np.float32)
    if voice.formant_ratio != 1.0 or voice.f0_median_hz:
        from imagineid.audio.augment import change_voice

        # the emotion's pitch offset (eSpeak: ~1 % F0 per step) carries over to the target median
        target = voice.f0_median_hz * 1.01 ** _EMOTION_PROSODY[emotion].pitch if voice.f0_median_hz else 0.0
        samples = change_voice(samples, sample_rate, voice.formant_ratio, new_median_hz=target).astype(np.float32)
    samples = np.clip(samples, -1.0, 1.0)
    return Speech(samples, sample_rate, _phonemes(events, len(samples) / sample_rate), text)


def fit_to_duration(speech: Speech, seconds: float, lead_s: float = 0.2, fade_s: float = 0.02) -> Speech:
    """Exactly `seconds` long: up to `lead_s` of leading silence, then speech, then silence or a cut.

    A video clip has a fixed frame count; leading silence lets the face start at rest. A cut tail
    gets a short fade so it does not click; phonemes past the end are dropped, the last one clipped.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    sr = speech.sample_rate
    n_out = round(seconds * sr)
    n_in = len(speech.samples)
    lead = round(min(lead_s * sr, max(0, n_out - n_in)))
    out = np.zeros(n_out, np.float32)
    n_keep = min(n_in, n_out - lead)
    out[lead : lead + n_keep] = speech.samples[:n_keep]
    if n_keep < n_in:  # trimmed: fade the tail out
        n_fade = min(n_keep, int(fade_s * sr))
        out[lead + n_keep - n_fade : lead + n_keep] *= np.linspace(1.0, 0.0, n_fade, dtype=np.float32)
    shift, end = lead / sr, n_out / sr
    phonemes = [
        Phoneme(p.name, p.start_s + shift, min(p.end_s + shift, end))
        for p in speech.phonemes
        if p.start_s + shift < end
    ]
    return Speech(out, sr, phonemes, speech.text)
