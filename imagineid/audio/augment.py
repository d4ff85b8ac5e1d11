"""Waveform augmentation that makes synthetic eSpeak speakers as varied as recorded ones, labels kept.

The disentangler learns voices from an eSpeak NG corpus: every clip is clean, dry, full-band, at one
loudness, and every speaker's pitch and vocal tract sit on eSpeak's few presets. Recorded voices differ
in all of that, so a model trained on the raw corpus learns eSpeak's channel instead of the voice.
Each clip is therefore passed through a randomly drawn chain, in the order a real recording meets it:

    voice:    pitch shift and vocal-tract-length (formant) warp, tempo      (Praat PSOLA, parselmouth)
    room:     reverberation by a shoebox room impulse response               (pyroomacoustics, image source)
    noise:    white / pink / brown / babble-like noise at a drawn SNR
    channel:  8 kHz telephone band or a random low-pass; mp3 / AAC round trip (ffmpeg)
    level:    gain, then a peak limit so nothing clips

    from imagineid.audio.augment import augment_voice, draw_augment, apply_augment
    rng = np.random.default_rng(seed)
    wave2, aug = augment_voice(wave, 16000, rng)          # keep_timing=True: same length, same timing
    json.dumps(dataclasses.asdict(aug))                   # what was done, for the training log

Labels stay true because every voice change is bounded well inside the gaps between the label classes
(see `MAX_PITCH_SEMITONES`, `MAX_FORMANT_DEVIATION`); room, noise and channel change no label at all.
Timing stays true with `keep_timing=True`: `speed` is then 1, the room response is aligned on its
direct path, every filter is zero-phase and the codec round trip is re-aligned by cross-correlation,
so the output has the input's length and its energy envelope lines up with the video frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

from imagineid.audio.features import check_audio
from imagineid.errors import ImagineIDError

# --- label-safe ranges -----------------------------------------------------------------------------

MAX_PITCH_SEMITONES = 2.5
"""Largest |F0 shift|. Adult male speech centres near 100-130 Hz, adult female near 190-230 Hz, a
child's above 250 Hz: the class centres are 6-9 semitones apart, so a shift of at most 2.5 semitones
(a factor 0.87..1.16) moves a typical man or woman within their own range and never across the gap,
while still spreading the few eSpeak pitch presets over the range real speakers cover."""

MAX_FORMANT_DEVIATION = 0.06
"""Largest |formant ratio - 1|. Formants scale inversely with vocal-tract length; women's are ~15-20 %
above men's and a child's ~25-40 % above an adult's, while adults of one sex spread by about +-6 %.
A warp within +-6 % makes a longer or shorter tract of the same kind of speaker, not another kind."""

MAX_SPEED_DEVIATION = 0.15
"""Largest |speed - 1| when timing may change. Speaking rate varies about this much between calm and
hurried speakers of one emotion; PSOLA tempo keeps pitch and formants, so no label moves with it."""

RT60_RANGE = (0.15, 0.6)
"""Reverberation times (s) drawn, from a treated booth to a bare living room. Longer halls smear the
energy envelope over more than a video frame, which would blur the mouth-opening target."""

SNR_RANGE_DB = (10.0, 35.0)
"""Signal-to-noise ratios drawn (speech power over active frames): from a quiet room to a busy cafe.
Much noisier clips would bury the cues (breathiness, pitch contour) a listener judges age and emotion
by, and the label would then claim what the audio no longer carries."""

GAIN_RANGE_DB = (-12.0, 6.0)
"""Output level relative to the input's peak, so loudness does not identify the corpus."""

LOWPASS_RANGE_HZ = (4000.0, 7000.0)
"""Cut-offs of the 'lowpass' band: cheap microphones, Bluetooth headsets and wideband codecs."""

TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
"""The narrowband telephone channel (ITU-T G.712): 8 kHz sampling, 300-3400 Hz pass band."""

CODEC_BITRATES_KBPS = {"mp3": (16, 24, 32), "aac": (16, 24, 32)}
"""Low bitrates, where the codec audibly smears high frequencies (a voice message, a web stream)."""

PEAK_CEILING = 0.98
"""No output sample exceeds this, so writing the clip as 16-bit PCM never clips."""

# Probability that each effect is drawn at strength 1 (multiplied by `strength`). Not every clip gets
# every effect: the model must still see clean, dry, full-band speech like the best recordings.
P_PITCH = 0.8
P_FORMANT = 0.7
P_SPEED = 0.5
P_REVERB = 0.4
P_NOISE = 0.5
P_BAND = 0.3
P_CODEC = 0.25
P_GAIN = 0.8

PITCH_FLOOR_HZ = 60.0  # Praat pitch search range: covers a low man to a high child
PITCH_CEILING_HZ = 600.0
ISM_MAX_ORDER = 12  # image-source order kept exactly; the late tail is drawn (see `_room_response`)
ISM_MIXING_S = 0.05  # after the direct path, where the exact reflections hand over to the drawn tail
CODEC_MAX_LAG_S = 0.25  # codec delay searched when re-aligning (mp3 and AAC delay by tens of ms)


class AugmentError(ImagineIDError):
    """An augmentation step could not be run (e.g. ffmpeg failed on the codec round trip)."""

    kind = "augment_failed"


@dataclass(frozen=True)
class VoiceAugment:
    """One drawn augmentation; `dataclasses.asdict` gives a JSON-ready record of what was done.

    The fields are the recipe a training log needs. The details of one realisation (the room's
    geometry, the noise sample and its colour, the low-pass cut-off, the codec bitrate) are drawn from
    the `rng` passed to `apply_augment`, so one seed still reproduces the whole output.
    """

    pitch_semitones: float  # F0 shift, |x| <= MAX_PITCH_SEMITONES
    formant_ratio: float  # vocal-tract-length warp, |x - 1| <= MAX_FORMANT_DEVIATION (> 1: shorter tract)
    speed: float  # speaking-rate factor: the duration is divided by it; 1.0 keeps the timing
    reverb_rt60: float  # seconds; 0 = dry
    snr_db: float | None  # additive noise at this SNR; None = none
    band: str  # 'full' | 'telephone' | 'lowpass'
    codec: str | None  # None | 'mp3' | 'aac'
    gain_db: float  # output peak relative to the input peak (limited at PEAK_CEILING)

    def __post_init__(self) -> None:
        if abs(self.pitch_semitones) > MAX_PITCH_SEMITONES + 1e-9:
            raise ValueError(f"pitch_semitones {self.pitch_semitones} outside +-{MAX_PITCH_SEMITONES}")
        if abs(self.formant_ratio - 1.0) > MAX_FORMANT_DEVIATION + 1e-9:
            raise ValueError(f"formant_ratio {self.formant_ratio} outside 1 +- {MAX_FORMANT_DEVIATION}")
        if not 0.5 <= self.speed <= 2.0:
            raise ValueError(f"speed must be in [0.5, 2], got {self.speed}")
        if self.reverb_rt60 < 0:
            raise ValueError(f"reverb_rt60 must be >= 0, got {self.reverb_rt60}")
        if self.band not in ("full", "telephone", "lowpass"):
            raise ValueError(f"band must be 'full', 'telephone' or 'lowpass', got {self.band!r}")
        if self.codec not in (None, *CODEC_BITRATES_KBPS):
            raise ValueError(f"codec must be None, 'mp3' or 'aac', got {self.codec!r}")

    @property
    def is_identity(self) -> bool:
        """True when applying it changes nothing (what `strength=0` draws)."""
        return self == IDENTITY


IDENTITY = VoiceAugment(0.0, 1.0, 1.0, 0.0, None, "full", None, 0.0)


# --- drawing ---------------------------------------------------------------------------------------


def draw_augment(rng: np.random.Generator, keep_timing: bool, strength: float = 1.0) -> VoiceAugment:
    """Draw one augmentation; each effect independently, with probability and size scaled by `strength`.

    `keep_timing=True` (the clip is aligned with video frames) fixes `speed` at 1. `strength` in [0, 1]
    lets a trainer ramp augmentation up; 0 draws `IDENTITY`. The number of draws from `rng` does not
    depend on the outcome, so one seed always walks the same stream.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    on = rng.random(8) < strength * np.array([P_PITCH, P_FORMANT, P_SPEED, P_REVERB, P_NOISE, P_BAND, P_CODEC, P_GAIN])
    u = rng.uniform(-1.0, 1.0, size=3)  # pitch, formant, speed
    v = rng.random(5)  # rt60, snr, band kind, codec kind, gain
    s = strength
    pitch = float(u[0] * s * MAX_PITCH_SEMITONES) if on[0] else 0.0
    formant = float(1.0 + u[1] * s * MAX_FORMANT_DEVIATION) if on[1] else 1.0
    speed = float(1.0 + u[2] * s * MAX_SPEED_DEVIATION) if on[2] and not keep_timing else 1.0
    lo, hi = RT60_RANGE
    rt60 = float(lo + v[0] * s * (hi - lo)) if on[3] else 0.0
    snr_lo, snr_hi = SNR_RANGE_DB
    snr = float(snr_hi - v[1] * s * (snr_hi - snr_lo)) if on[4] else None
    band = ("telephone" if v[2] < 0.5 else "lowpass") if on[5] else "full"
    codec = ("mp3" if v[3] < 0.5 else "aac") if on[6] else None
    g_lo, g_hi = GAIN_RANGE_DB
    gain = float(s * (g_lo + v[4] * (g_hi - g_lo))) if on[7] else 0.0
    return VoiceAugment(pitch, formant, speed, rt60, snr, band, codec, gain)


# --- effects ---------------------------------------------------------------------------------------


def _voice(x: np.ndarray, sr: int, aug: VoiceAugment, rng: np.random.Generator) -> np.ndarray:
    """Pitch, formant and tempo of a drawn augmentation, through `change_voice`."""
    return change_voice(
        x, sr, aug.formant_ratio, pitch_semitones=aug.pitch_semitones, speed=aug.speed, seed=int(rng.integers(2**31))
    )


def change_voice(
    x: np.ndarray,
    sr: int,
    formant_ratio: float = 1.0,
    pitch_semitones: float = 0.0,
    new_median_hz: float = 0.0,
    speed: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Pitch, formant and tempo in one Praat 'Change gender' (PSOLA): one analysis, one resynthesis.

    PSOLA moves F0 without touching the spectral envelope, and the formant ratio resamples the
    envelope without touching F0, so the two cues are set independently. The new F0 is either a shift
    of the measured median (`pitch_semitones`) or a target median (`new_median_hz` > 0). Unvoiced input
    (no pitch found) gets only the formant warp and tempo. Praat's overlap-add draws random numbers from
    its own global generator, so it is seeded for the call (and unseeded after): without that the same
    seed would give a different waveform on every run. No label-safety limits here: callers set them.
    """
    import parselmouth
    from parselmouth.praat import call, run

    snd = parselmouth.Sound(np.asarray(x, np.float64), sampling_frequency=sr)
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
    pitch = snd.to_pitch(time_step=0.01, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    new_median = new_median_hz  # Praat: 0 keeps the pitch
    if pitch_semitones != 0.0 and not new_median_hz:
        median = call(pitch, "Get quantile", 0.0, 0.0, 0.5, "Hertz")
        if math.isfinite(median) and median > 0:
            new_median = median * 2.0 ** (pitch_semitones / 12.0)
    try:
        out = call([snd, pitch], "Change gender", formant_ratio, new_median, 1.0, 1.0 / speed)
    finally:
        run("random_initializeSafelyAndUnpredictably ()")
    y = np.asarray(out.values[0], np.float64)
    return _fit_length(y, round(len(x) / speed))


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad the end to exactly `n` samples."""
    if len(y) >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - len(y))])


def _room_response(rt60: float, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Impulse response of a random shoebox room with reverberation time `rt60`, and its direct-path index.

    The image-source method is exact but its cost grows with the cube of the reflection order, and a
    reverberant room needs a very high order. Reflections up to `ISM_MAX_ORDER` are computed
    exactly (they carry the room's size and the source distance), and after `ISM_MIXING_S` they hand
    over to a drawn Gaussian tail that decays at `rt60` from the level the reflections reached: late
    reverberation is diffuse, so a statistical tail is what it physically is.
    """
    import pyroomacoustics as pra

    dim = rng.uniform([3.0, 2.5, 2.4], [9.0, 7.0, 3.8])
    margin = 0.4
    src = rng.uniform(margin, dim - margin)
    for _ in range(20):  # a microphone 0.3-1 m away (a talking head is filmed close), inside the room
        mic = src + rng.normal(size=3) * 0.4
        dist = float(np.linalg.norm(mic - src))
        if np.all(mic > margin) and np.all(mic < dim - margin) and 0.3 <= dist <= 1.0:
            break
    else:
        mic = np.clip(src + np.array([0.5, 0.0, 0.0]), margin, dim - margin)
        dist = float(np.linalg.norm(mic - src))
    absorption, full_order = pra.inverse_sabine(rt60, dim)
    room = pra.ShoeBox(
        dim,
        fs=sr,
        materials=pra.Material(absorption),
        max_order=int(min(full_order, ISM_MAX_ORDER)),
        air_absorption=False,
    )
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    c = room.c if getattr(room, "c", None) else pra.constants.get("c")
    half = pra.constants.get("frac_delay_length") // 2  # the fractional-delay interpolator's half length
    direct = round(dist / c * sr) + half
    direct = int(np.argmax(np.abs(rir[: direct + 8])))  # the direct path's own peak
    lead = min(direct, half)  # keep the peak's whole interpolator
    rir = rir[direct - lead :]

    mix = lead + int(ISM_MIXING_S * sr)
    n = max(len(rir), lead + int(1.2 * rt60 * sr))  # tail to -72 dB
    t = np.maximum(np.arange(n) - lead, 0) / sr  # time after the direct path
    envelope = 10.0 ** (-3.0 * t / rt60)  # amplitude: -60 dB at rt60
    win = slice((lead + mix) // 2, mix)
    early = np.zeros(n)
    early[: min(len(rir), n)] = rir[:n]
    level = math.sqrt(np.mean(early[win] ** 2) / np.mean(envelope[win] ** 2))
    fade = np.clip((np.arange(n) - mix) / (0.01 * sr) + 0.5, 0.0, 1.0)  # 10 ms cross-fade at `mix`
    tail = rng.standard_normal(n) * envelope * level
    return early * (1.0 - fade) + tail * fade, lead


def _reverb(x: np.ndarray, sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a room response and drop its lead before the direct path: the speech is not delayed."""
    h, lead = _room_response(rt60, sr, rng)
    return fftconvolve(x, h)[lead : lead + len(x)]


def _shaped_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise of a drawn colour: white, pink, brown, or babble-like.

    Babble-like is noise with a long-term speech spectrum (peak near 500 Hz, -6 dB/oct above it)
    amplitude-modulated at syllable rates by a few independent envelopes, like several far talkers;
    it is the hardest case because it shares the speech band and rhythm.
    """
    kind = int(rng.integers(4))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    f[0] = f[1] if n > 1 else 1.0
    if kind == 1:  # pink
        spec /= np.sqrt(f)
    elif kind == 2:  # brown, above 20 Hz
        spec /= np.maximum(f, 20.0)
    elif kind == 3:  # speech-shaped
        spec *= (f / 500.0) / (1.0 + (f / 500.0) ** 2)
    y = np.fft.irfft(spec, n)
    if kind == 3:
        t = np.arange(n) / sr
        talkers = [1.0 + np.sin(2 * np.pi * rng.uniform(2.5, 6.0) * t + rng.uniform(0, 2 * np.pi)) for _ in range(4)]
        y = y * (0.5 + np.mean(talkers, axis=0))
    y -= y.mean()
    power = float(np.mean(y**2))
    return y / math.sqrt(power) if power > 0 else y


def _active_power(x: np.ndarray, sr: int) -> float:
    """Mean power over the frames within 30 dB of the loudest (speech, not the pauses between it)."""
    hop = max(1, int(0.02 * sr))
    n = len(x) // hop
    if n == 0:
        return float(np.mean(x**2))
    frames = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    active = frames[frames >= frames.max() * 1e-3]
    return float(np.mean(active))


def _noise(x: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = _active_power(x, sr)
    if power <= 0:
        return x
    return x + _shaped_noise(len(x), sr, rng) * math.sqrt(power / 10.0 ** (snr_db / 10.0))


def _band(x: np.ndarray, sr: int, band: str, rng: np.random.Generator) -> np.ndarray:
    """Band-limit with zero-phase filters (filtered forwards and backwards), so nothing is delayed."""
    if band == "telephone":
        lo, hi = TELEPHONE_BAND_HZ
        y = x
        if sr > TELEPHONE_RATE:
            g = math.gcd(sr, TELEPHONE_RATE)
            y = resample_poly(x, TELEPHONE_RATE // g, sr // g)
        rate = min(sr, TELEPHONE_RATE)
        sos = butter(4, [lo, min(hi, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
        y = sosfiltfilt(sos, y)
        if sr > TELEPHONE_RATE:
            y = resample_poly(y, sr // g, TELEPHONE_RATE // g)
        return _fit_length(y, len(x))
    if band == "lowpass":
        cutoff = min(rng.uniform(*LOWPASS_RANGE_HZ), 0.45 * sr)
        return sosfiltfilt(butter(8, cutoff, fs=sr, output="sos"), x)
    return x


def _codec(x: np.ndarray, sr: int, codec: str, rng: np.random.Generator) -> np.ndarray:
    """Encode and decode through ffmpeg at a low bitrate, then undo the codec's delay.

    Encoders prepend priming samples (and a pipe cannot carry the gapless header that would remove
    them), so the decoded signal is shifted; the lag maximising the cross-correlation with the input
    is removed and the end trimmed or padded, giving back the input's length and timing.
    """
    import ffmpeg

    from imagineid.media.ffmpeg_bin import QUIET, ffmpeg_exe

    kbps = int(rng.choice(CODEC_BITRATES_KBPS[codec]))
    muxer, demuxer, acodec = {"mp3": ("mp3", "mp3", "libmp3lame"), "aac": ("adts", "aac", "aac")}[codec]
    peak = float(np.max(np.abs(x))) or 1.0
    raw = (x / peak).astype("<f4").tobytes()  # the encoders expect [-1, 1]
    enc = (
        ffmpeg.input("pipe:", format="f32le", ar=sr, ac=1)
        .output("pipe:", format=muxer, acodec=acodec, audio_bitrate=f"{kbps}k")
        .global_args(*QUIET)
    )
    dec = (
        ffmpeg.input("pipe:", format=demuxer)
        .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sr)
        .global_args(*QUIET)
    )
    try:
        coded, _ = enc.run(cmd=ffmpeg_exe(), input=raw, capture_stdout=True, capture_stderr=True)
        out, _ = dec.run(cmd=ffmpeg_exe(), input=coded, capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as err:
        detail = (err.stderr or b"").decode("utf-8", errors="replace").strip().splitlines()
        raise AugmentError(f"{codec} round trip failed: {detail[-1] if detail else err}") from err
    y = np.frombuffer(out, np.float32).astype(np.float64) * peak
    return _align(y, x, int(CODEC_MAX_LAG_S * sr))


def _align(y: np.ndarray, ref: np.ndarray, max_lag: int) -> np.ndarray:
    """`y` shifted by the lag in [-max_lag, max_lag] that best matches `ref`, cut to `ref`'s length."""
    n = len(ref)
    corr = fftconvolve(y, ref[::-1])  # corr[k + n - 1] = sum_i y[i + k] ref[i]
    lags = np.arange(-max_lag, max_lag + 1)
    idx = lags + n - 1
    ok = (idx >= 0) & (idx < len(corr))
    lag = int(lags[ok][np.argmax(corr[idx[ok]])])
    if lag >= 0:
        y = y[lag:]
    else:
        y = np.concatenate([np.zeros(-lag), y])
    return _fit_length(y, n)


# --- applying --------------------------------------------------------------------------------------


def apply_augment(samples: np.ndarray, sample_rate: int, aug: VoiceAugment, rng: np.random.Generator) -> np.ndarray:
    """Apply `aug` to mono `samples`; float32, finite, peak <= `PEAK_CEILING`, never silent.

    The length is kept exactly when `aug.speed == 1` and becomes round(len / speed) otherwise. The
    output peak is the input peak times the gain, limited at the ceiling: reverberation and noise
    change the level a lot, and level must stay a free variable, not a trace of what was applied.
    `IDENTITY` returns an unchanged float32 copy, without checks.
    """
    if aug.is_identity:
        return np.array(samples, dtype=np.float32, copy=True)
    check_audio(samples, sample_rate, min_seconds=0.1, silence_dbfs=-120.0)  # finite, mono, not all zero
    x = np.asarray(samples, np.float64)
    in_peak = float(np.max(np.abs(x)))
    y = x
    if aug.pitch_semitones != 0.0 or aug.formant_ratio != 1.0 or aug.speed != 1.0:
        y = _voice(y, sample_rate, aug, rng)
    if aug.reverb_rt60 > 0:
        y = _reverb(y, sample_rate, aug.reverb_rt60, rng)
    if aug.snr_db is not None:
        y = _noise(y, sample_rate, aug.snr_db, rng)
    y = _band(y, sample_rate, aug.band, rng)
    if aug.codec is not None:
        y = _codec(y, sample_rate, aug.codec, rng)
    if not np.all(np.isfinite(y)):
        raise AugmentError(f"augmentation {aug} produced non-finite samples")
    peak = float(np.max(np.abs(y)))
    if peak <= 0:
        raise AugmentError(f"augmentation {aug} silenced the clip")
    target = min(PEAK_CEILING, in_peak * 10.0 ** (aug.gain_db / 20.0))
    return (y * (target / peak)).astype(np.float32)


def augment_voice(
    samples: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    keep_timing: bool = True,
    strength: float = 1.0,
) -> tuple[np.ndarray, VoiceAugment]:
    """Draw an augmentation and apply it; returns (augmented float32 samples, what was drawn)."""
    aug = draw_augment(rng, keep_timing, strength)
    return apply_augment(samples, sample_rate, aug, rng), aug
