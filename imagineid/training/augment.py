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
