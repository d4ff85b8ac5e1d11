"""F0 of an utterance by YIN: a robust median pitch for checks and voice statistics."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# --------------------------------------------------------------------------------------------------
# F0
# --------------------------------------------------------------------------------------------------


def median_f0(
    samples: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 500.0, threshold: float = 0.15
) -> float:
    """Median fundamental frequency (Hz) over voiced frames, by YIN; NaN when nothing is voiced.

    YIN's cumulative-mean-normalised difference picks the first dip below `threshold`, which avoids
    the octave-down errors a plain autocorrelation peak makes on formant-rich synthetic vowels.
    """
    x = np.asarray(samples, np.float64)
    win = int(0.025 * sample_rate)
    max_lag = int(np.ceil(sample_rate / fmin))
    min_lag = max(2, int(np.floor(sample_rate / fmax)))
    hop = int(0.01 * sample_rate)
    if len(x) < win + max_lag + 1:
        return float("nan")
    frames = sliding_window_view(x, win + max_lag + 1)[::hop]  # (F, W + L + 1)
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt(np.mean(frames[:, :win] ** 2, axis=1))
    loud = energy > 0.1 * np.percentile(energy, 95)
    frames = frames[loud]
    if len(frames) == 0:
        return float("nan")

    d = _yin_difference(frames, win, max_lag)  # (F, L + 1)
    cum = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * np.arange(1, max_lag + 1) / np.maximum(cum, 1e-12)

    f0s = []
    for row in cmnd:
        lag = _first_dip(row, min_lag, threshold)
        if lag is not None:
            f0s.append(sample_rate / lag)
    return float(np.median(f0s)) if f0s else float("nan")


def _yin_difference(frames: np.ndarray, win: int, max_lag: int) -> np.ndarray:
    """d(tau) = sum_j (x_j - x_{j+tau})^2 over j < win, for tau = 0..max_lag, by FFT."""
    n_fft = 1 << int(np.ceil(np.log2(frames.shape[1] + win)))
    head = np.fft.rfft(frames[:, :win], n_fft)
    full = np.fft.rfft(frames, n_fft)
    corr = np.fft.irfft(np.conj(head) * full, n_fft)[:, : max_lag + 1]  # r(tau)
    sq = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    tau = np.arange(max_lag + 1)
    e_tau = sq[:, tau + win] - sq[:, tau]  # energy of x[tau : tau + win]
    return np.maximum(sq[:, [win]] + e_tau - 2.0 * corr, 0.0)


def _first_dip(cmnd: np.ndarray, min_lag: int, threshold: float) -> float | None:
    """Lag of the first local minimum under `threshold`, refined by a parabola; None if unvoiced."""
    below = np.nonzero(cmnd[min_lag:-1] < threshold)[0]
    if len(below) == 0:
        return None
    i = int(below[0]) + min_lag
    while i + 1 < len(cmnd) - 1 and cmnd[i + 1] < cmnd[i]:
        i += 1
    a, b, c = cmnd[i - 1], cmnd[i], cmnd[i + 1]
    denom = a - 2 * b + c
    return i + (0.5 * (a - c) / denom if denom > 0 else 0.0)
