"""Audio features at video-frame resolution: log-mel (100 Hz, 80 bins), MFCC, input checks.

Every audio-driven stage (identity, content, emotion encoders; `listen`; `generate`) reads the same
features, so they are defined once here (docs/architecture.md §3: log-mel (T, 80) at 100 Hz, 4 mel frames per video
frame at 25 fps).

    from imagineid.audio import check_audio, mel_for_frames
    check_audio(wave, 16000)                  # raises SilentAudioError / ShortAudioError / InvalidAudioError
    mel = mel_for_frames(wave, n_frames=75)   # (300, 80) float32; rows 4i..4i+3 belong to video frame i

Conventions (HiFi-GAN style): a periodic Hann window of 25 ms zero-padded to a 512-point FFT, hop 10 ms,
`center` framing (zero padding), so mel frame j is centred on time j/100 s; magnitude (not power)
spectrum; Slaney mel scale with Slaney area normalisation over 0..sample_rate/2 (librosa's default
filterbank); natural log with a floor of 1e-5. Everything is plain numpy in float64, then float32:
the same samples give the same bits on every machine.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import dct

from imagineid.errors import ImagineIDError

# The data contract's rates, defined here once: audio at SAMPLE_RATE, log-mels at MEL_RATE with N_MELS
# bins, video at FPS, so MELS_PER_FRAME mel rows per video frame.
SAMPLE_RATE = 16000  # Hz; every feature in the data contract is computed at this rate
MEL_RATE = 100  # mel frames per second (hop 10 ms)
N_MELS = 80  # mel bins
FPS = 25  # video frames per second
MELS_PER_FRAME = MEL_RATE // FPS  # 4
LOG_FLOOR = 1e-5  # log(max(x, LOG_FLOOR)); log(1e-5) = -11.51 is the value of digital silence
MIN_SECONDS = 0.2  # shorter audio carries too little to hear identity or emotion from
SILENCE_DBFS = -60.0  # whole-clip RMS below this (dB re full scale 1.0) counts as silent
_BLOCK = 2048  # STFT frames per block in log_mel (~8 MB of float64 at n_fft 512)


class AudioFeatureError(ImagineIDError):
    """The audio cannot give usable features (silent, too short, or not numbers)."""

    kind = "audio_feature"


class SilentAudioError(AudioFeatureError):
    kind = "silent_audio"


class ShortAudioError(AudioFeatureError):
    kind = "audio_too_short"


class InvalidAudioError(AudioFeatureError):
    kind = "invalid_audio"


class SpeakerEncoderUnavailableError(ImagineIDError):
    """The speaker encoder's weights (`imagineid.audio.speaker_encoder`) are missing or malformed."""

    kind = "missing_backend"


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape (N,), got shape {x.shape}")
    return x


def audio_levels(samples: np.ndarray) -> tuple[float, float]:
    """(peak, RMS) in dBFS (full scale = 1.0); -inf for digital silence or empty input."""
    x = _mono(samples)
    if x.size == 0:
        return -math.inf, -math.inf
    peak = float(np.max(np.abs(x)))
    rms = float(np.sqrt(np.mean(x**2)))
    with np.errstate(divide="ignore"):
        return float(20.0 * np.log10(peak)), float(20.0 * np.log10(rms))


def check_audio(
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = MIN_SECONDS,
    silence_dbfs: float = SILENCE_DBFS,
) -> None:
    """Raise an `AudioFeatureError` subclass when the audio cannot drive a face; return None when it can.

    Order: non-finite samples (`InvalidAudioError`), shorter than `min_seconds` (`ShortAudioError`),
    whole-clip RMS below `silence_dbfs` (`SilentAudioError`).
    """
    x = _mono(samples)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InvalidAudioError(f"audio has {bad} NaN or infinite samples of {x.size}")
    seconds = x.size / sample_rate
    if seconds < min_seconds:
        raise ShortAudioError(f"audio is too short ({seconds:.3f} s; needs at least {min_seconds:.2f} s)")
    peak_db, rms_db = audio_levels(x)
    if not rms_db >= silence_dbfs:
        raise SilentAudioError(
            f"audio is silent (peak {peak_db:.1f} dBFS / RMS {rms_db:.1f} dBFS; "
            f"needs RMS above {silence_dbfs:.0f} dBFS)"
        )


# --------------------------------------------------------------------------------------------------
# Log-mel and MFCC
# --------------------------------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3.0, 1000.0, math.log(6.4) / 27.0
    mel = hz / f_sp
    log_part = hz >= min_log_hz
    mel[log_part] = min_log_hz / f_sp + np.log(hz[log_part] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3.0, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    hz = mel * f_sp
    log_part = mel >= min_log_mel
    hz[log_part] = min_log_hz * np.exp(logstep * (mel[log_part] - min_log_mel))
    return hz


def _mel_edges(n_mels: int, sample_rate: int) -> np.ndarray:
    """n_mels + 2 band edges in Hz, equally spaced in mel over 0..sample_rate/2."""
    top = _hz_to_mel(np.array([sample_rate / 2.0]))[0]
    return _mel_to_hz(np.linspace(0.0, top, n_mels + 2))


def mel_frequencies(n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequency in Hz of each mel bin, (n_mels,) float64, increasing."""
    return _mel_edges(n_mels, sample_rate)[1:-1]


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE, n_fft: int = 512) -> np.ndarray:
    """Triangular Slaney-normalised filters, (n_mels, n_fft // 2 + 1) float64 (read-only, cached)."""
    edges = _mel_edges(n_mels, sample_rate)  # (n_mels + 2,)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (F,)
    lower = (freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]  # rising edge
    upper = (edges[2:, None] - freqs[None, :]) / np.diff(edges)[1:, None]  # falling edge
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, F)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    weights.setflags(write=False)
    return weights


def _samples_per(seconds: float, sample_rate: int, what: str) -> int:
    n = seconds * sample_rate
    if n <= 0 or abs(n - round(n)) > 1e-6:
        raise ValueError(f"{what} of {seconds} s is not a whole number of samples at {sample_rate} Hz")
    return round(n)


def log_mel(
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    n_mels: int = N_MELS,
    hop_s: float = 1.0 / MEL_RATE,
    win_s: float = 0.025,
) -> np.ndarray:
    """Log-mel spectrogram, (1 + len(samples) // hop, n_mels) float32; row j is centred on time j * hop_s.

    Input: mono float samples in [-1, 1]. 1.0 s at 16 kHz gives 101 rows (frames at 0.00 .. 1.00 s).
    """
    x = _mono(samples)
    hop = _samples_per(hop_s, sample_rate, "hop")
    win = _samples_per(win_s, sample_rate, "window")
    n_fft = 1 << (win - 1).bit_length()  # 400 → 512
    left = (n_fft - win) // 2
    window = np.zeros(n_fft)
    window[left : left + win] = np.hanning(win + 1)[:-1]  # periodic Hann, centred in the FFT frame
    padded = np.pad(x, n_fft // 2)  # centre framing with zeros: frame j is centred on sample j * hop
    frames = sliding_window_view(padded, n_fft)[::hop]  # (T, n_fft), a view: no copy yet
    bank = mel_filterbank(n_mels, sample_rate, n_fft).T  # (n_fft // 2 + 1, n_mels)
    out = np.empty((len(frames), n_mels), np.float32)
    for start in range(0, len(frames), _BLOCK):  # blocks keep memory flat for hour-long audio
        magnitude = np.abs(np.fft.rfft(frames[start : start + _BLOCK] * window, axis=1))  # (B, n_fft // 2 + 1)
        out[start : start + _BLOCK] = np.log(np.maximum(magnitude @ bank, LOG_FLOOR))  # (B, n_mels)
    return out


ENVELOPE_CHANNELS = 2  # mel_envelope's channels: amplitude relative to the utterance's loud frames, and its log


def mel_envelope(mel: np.ndarray) -> np.ndarray:
    """The amplitude envelope of a raw log-mel, relative to the utterance: (N, 80) → (N, 2) float32.

    Per mel frame the summed mel magnitude, divided by its 90th percentile over the utterance, and the
    log of that ratio. It follows the speech waveform's loudness whoever speaks and whatever the
    recording level, which is what carries mouth opening from synthetic to recorded speech: a stage
    that reads only spectral detail learns the synthesiser's spectra.
    """
    amplitude = np.exp(mel.astype(np.float64)).sum(axis=1) if len(mel) else np.zeros(0)  # (N,)
    ref = float(np.percentile(amplitude, 90)) if len(amplitude) else 1.0
    ratio = amplitude / max(ref, 1e-8)
    return np.stack([np.minimum(ratio, 4.0), np.log(np.maximum(ratio, 1e-4))], axis=1).astype(np.float32)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] → int16 PCM (clipped): half the bytes of float32, lossless for decoded audio."""
    return np.round(np.clip(_mono(samples), -1.0, 1.0) * 32767.0).astype(np.int16)


def from_pcm16(data: bytes | np.ndarray) -> np.ndarray:
    """int16 PCM (bytes or array) → float32 samples in [-1, 1]."""
    pcm = (
        np.frombuffer(data, np.int16)
        if isinstance(data, (bytes, bytearray, memoryview))
        else np.asarray(data, np.int16)
    )
    return pcm.astype(np.float32) / 32767.0


def mel_frames_per_video_frame(fps: float) -> int:
    """round(100 / fps); ValueError unless that is exact (25 fps → 4, 50 → 2, 20 → 5; not 30)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    per = MEL_RATE / fps
    if abs(per - round(per)) > 1e-6 or round(per) < 1:
        raise ValueError(
            f"fps={fps} gives {per:.4g} mel frames per video frame; the {MEL_RATE} Hz mel grid needs "
            f"{MEL_RATE}/fps to be a whole number (fps 25, 20, 50, 100, ...) — resample the video first"
        )
    return round(per)


def mel_for_frames(samples: np.ndarray, n_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel aligned to a video: (k * n_frames, 80) float32 with k = 100 / fps (4 at 25 fps).

    Rows k*i .. k*i + k-1 belong to video frame i (mel frame j is centred on j / 100 s). Audio shorter
    than the video is padded with silence (rows equal log(1e-5) once past the end), longer audio is cut.
    `sample_rate` must be a multiple of 100 (16 kHz in the data contract).
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    per = mel_frames_per_video_frame(fps)
    rows = per * int(n_frames)
    x = _mono(samples)
    need = rows * _samples_per(1.0 / MEL_RATE, sample_rate, "hop")  # log_mel then gives rows + 1 rows
    context = sample_rate // 10  # 100 ms past the last row: more than half a window, so cutting is exact
    x = np.pad(x, (0, need - x.size)) if x.size < need else x[: need + context]
    return log_mel(x, sample_rate)[:rows]


def mfcc(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mfcc: int = 13, n_mels: int = N_MELS) -> np.ndarray:
    """MFCCs (DCT-II, orthonormal, of the log-mel), (T, n_mfcc) float32, same frames as `log_mel`."""
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"n_mfcc must be in 1..{n_mels}, got {n_mfcc}")
    return dct(log_mel(samples, sample_rate, n_mels).astype(np.float64), type=2, norm="ortho", axis=1)[
        :, :n_mfcc
    ].astype(np.float32)


def video_frames_for(n_samples: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> int:
    """How many video frames an audio-only input drives: round(seconds * fps)."""
    return round(n_samples * fps / sample_rate)


def load_log_mel(
    path: str | os.PathLike[str],
    n_frames: int | None = None,
    fps: float = 25.0,
    min_seconds: float = MIN_SECONDS,
) -> np.ndarray:
    """Decode a file's audio (16 kHz mono), check it, and return `mel_for_frames` for `n_frames`.

    `n_frames=None` (audio-only input) uses `video_frames_for` the audio's length. Raises the media
    errors of `imagineid.media.load_audio` and the `AudioFeatureError`s of `check_audio`.
    """
    from imagineid.media import load_audio  # ffmpeg machinery only when a file is read

    samples = load_audio(path, SAMPLE_RATE)
    check_audio(samples, SAMPLE_RATE, min_seconds)
    if n_frames is None:
        n_frames = video_frames_for(samples.size, fps)
    return mel_for_frames(samples, n_frames, fps)


def frame_rms(samples: np.ndarray, n_frames: int, fps: float = 25.0, sample_rate: int = 16000) -> np.ndarray:
    """RMS of the audio under each video frame, window [i/fps, (i+1)/fps); zero past the audio end."""
    hop = sample_rate / fps
    x = np.asarray(samples, np.float64)
    out = np.zeros(n_frames, np.float64)
    for i in range(n_frames):
        seg = x[round(i * hop) : round((i + 1) * hop)]
        out[i] = np.sqrt(np.mean(seg**2)) if len(seg) else 0.0
    return out
