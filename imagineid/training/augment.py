"""Mel augmentation for the utterance-level stages: with few training speakers the encoders otherwise
memorise them. Applied to normalised mel batches on the device, training only."""

from __future__ import annotations

import torch


def augment_mel(mel: torch.Tensor, gain: float = 0.25, freq_mask: int = 8, time_mask: int = 12) -> torch.Tensor:
    """Random level shift per utterance, one frequency band and one time span masked per utterance.

    mel: (B, L, 80) normalised log-mel → same shape. `gain` is in normalised units (≈ ±2 dB at 0.25).
    """
    b, length, bins = mel.shape
    out = mel + (torch.rand(b, 1, 1, device=mel.device) * 2 - 1) * gain
    f0 = torch.randint(0, bins, (b, 1, 1), device=mel.device)
    fw = torch.randint(0, freq_mask + 1, (b, 1, 1), device=mel.device)
    f = torch.arange(bins, device=mel.device)[None, None, :]
    t0 = torch.randint(0, max(length, 1), (b, 1, 1), device=mel.device)
    tw = torch.randint(0, time_mask + 1, (b, 1, 1), device=mel.device)
    t = torch.arange(length, device=mel.device)[None, :, None]
    masked = ((f >= f0) & (f < f0 + fw)) | ((t >= t0) & (t < t0 + tw))
    return out.masked_fill(masked, 0.0)


def flatten_spectrum(mel: torch.Tensor, p: float = 0.3) -> torch.Tensor:
    """With probability p per utterance, replace every frame's spectrum by its mean over the bins.

    mel: (B, L, 80) normalised log-mel → same shape. What is left is the loudness contour, so the
    content stage must also learn mouth motion from it and the amplitude envelope beside the mel, cues
    every voice shares, instead of only the spectral detail of the synthetic voices it trains on.
    """
    drop = (torch.rand(mel.shape[0], 1, 1, device=mel.device) < p).to(mel.dtype)  # (B, 1, 1)
    return mel * (1 - drop) + drop * mel.mean(-1, keepdim=True)
