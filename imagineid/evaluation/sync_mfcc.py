"""The MFCC SyncNet was trained on: python_speech_features' `mfcc` with its defaults, ported.

syncnet_python (and so Wav2Lip's LSE-C / LSE-D) feeds SyncNet `python_speech_features.mfcc(audio, 16000)`
of the int16 samples: 13 coefficients at 100 Hz from 25 ms rectangular windows, 26 mel filters, NFFT 512,
pre-emphasis 0.97, lifter 22, c0 replaced by the log frame energy. The int16 scale matters (the log
energy shifts with it), so `sync_mfcc` takes int16-scaled samples. It differs from
`imagineid.audio.features.mfcc` (80 mel bins, the project's log-mel front end) on purpose: SyncNet's
weights expect exactly this one.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000
RATE = 100  # MFCC frames per second (10 ms step)
N_MFCC = 13
_WIN, _STEP, _NFFT, _NFILT, _PREEMPH, _LIFTER = 400, 160, 512, 26, 0.97, 22  # samples at 16 kHz


def _hz2mel(hz: np.ndarray) -> np.ndarray:
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


def filterbank(nfilt: int = _NFILT, nfft: int = _NFFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters on FFT bins (nfilt, nfft // 2 + 1), with python_speech_features' bin rounding."""
    points = np.linspace(_hz2mel(0.0), _hz2mel(sample_rate / 2), nfilt + 2)
    edges = np.floor((nfft + 1) * _mel2hz(points) / sample_rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def sync_mfcc(samples: np.ndarray) -> np.ndarray:
    """int16-scaled mono samples at 16 kHz → (T, 13) MFCC, T = 1 + ceil((n − 400) / 160)."""
    from scipy.fft import dct

    signal = np.asarray(samples, np.float64).reshape(-1)
    signal = np.append(signal[0], signal[1:] - _PREEMPH * signal[:-1])
    n = len(signal)
    count = 1 if n <= _WIN else 1 + int(math.ceil((n - _WIN) / _STEP))
    padded = np.concatenate([signal, np.zeros((count - 1) * _STEP + _WIN - n)])
    frames = padded[np.arange(_WIN)[None, :] + _STEP * np.arange(count)[:, None]]  # (T, 400)
    power = np.abs(np.fft.rfft(frames, _NFFT)) ** 2 / _NFFT  # (T, 257)
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    bands = power @ filterbank().T  # (T, 26)
    bands = np.where(bands == 0, np.finfo(float).eps, bands)
    cep = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :N_MFCC]
    cep *= 1 + (_LIFTER / 2.0) * np.sin(np.pi * np.arange(N_MFCC) / _LIFTER)
    cep[:, 0] = np.log(energy)
    return cep


def pcm16_scale(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] → int16 values as ffmpeg's pcm_s16le writes them (what syncnet_python reads)."""
    return np.clip(np.round(np.asarray(samples, np.float64) * 32768.0), -32768, 32767)
