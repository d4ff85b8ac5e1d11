"""Building blocks the disentangler's encoders share: per-video-frame mel features, residual temporal
convolutions, and masked mean / std pooling over time."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dilations(context: int) -> list[int]:
    """Dilations of kernel-3 convs whose receptive fields add up to ±context frames: 4 → [1, 2, 1]."""
    out, left, d = [], context, 1
    while left > 0:
        out.append(min(d, left))
        left -= out[-1]
        d *= 2
    return out


class TemporalBlock(nn.Module):
    """Pre-norm residual conv over time, kernel 3, 'same' padding: (B, T, C) → (B, T, C)."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv(self.norm(x).transpose(1, 2))).transpose(1, 2)  # (B, T, C)
        return x + self.dropout(h)


class FrameEncoder(nn.Module):
    """Log-mel (B, mel_per_frame·T, n_mels) → per-video-frame features (B, T, hidden)."""

    def __init__(self, n_mels: int, hidden: int, mel_per_frame: int, n_extra: int = 0) -> None:
        super().__init__()
        self.mel_per_frame = mel_per_frame
        # each video frame sees its own mel frames and half a frame either side; all bins are channels
        self.pad = (mel_per_frame // 2, mel_per_frame - mel_per_frame // 2)
        self.conv = nn.Conv1d(n_mels + n_extra, hidden, 2 * mel_per_frame, stride=mel_per_frame)
        self.mix = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.pad(mel.transpose(1, 2), self.pad)  # (B, n_mels, 4T + 4)
        x = F.gelu(self.conv(x).transpose(1, 2))  # (B, T, hidden)
        return F.gelu(self.norm(self.mix(x)))


def check_frame_mel(mel: torch.Tensor, n_mels: int, mel_per_frame: int, name: str) -> int:
    """Validate mel (B, mel_per_frame·T, n_mels) and return T ≥ 1."""
    if mel.ndim != 3 or mel.shape[2] != n_mels:
        raise ValueError(f"{name}: mel must be (B, {mel_per_frame}T, {n_mels}), got shape {tuple(mel.shape)}")
    if mel.shape[1] < mel_per_frame or mel.shape[1] % mel_per_frame:
        raise ValueError(
            f"{name}: mel length {mel.shape[1]} must be a positive multiple of mel_per_frame={mel_per_frame}"
        )
    return mel.shape[1] // mel_per_frame


def masked_stats(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean and std over time of x (B, C, L) where mask (B, L) is True → (B, 2C)."""
    if mask is None:
        mean = x.mean(dim=2)
        var = x.var(dim=2, unbiased=False)
    else:
        m = mask.to(x.dtype).unsqueeze(1)  # (B, 1, L)
        count = m.sum(dim=2).clamp(min=1.0)  # (B, 1)
        mean = (x * m).sum(dim=2) / count
        var = (((x - mean.unsqueeze(2)) ** 2) * m).sum(dim=2) / count
    return torch.cat([mean, torch.sqrt(var + 1e-5)], dim=1)
