"""Stage 2 of the progressive audio disentangler (docs/architecture.md §1): what is being said → mouth motion.

Identity is frozen. The encoder turns log-mel (4 mel frames per 25 fps video frame), and with
`n_envelope` > 0 the utterance-relative amplitude envelope beside it (`audio.features.mel_envelope`: a
cue recorded speech shares with synthetic speech), into one feature per video frame, then non-causal
dilated temporal convolutions see about ±`context` frames of audio
around each frame. The stage-1 shape coefficients modulate those features (FiLM) before a per-frame MLP
decodes the mouth-only 3DMM coefficients.

    model = ContentEncoderDecoder()
    out = model(mel, shape, envelope)  # mel (B, 4T, 80), shape (B, 10), envelope (B, 4T, 2)
    # → out.features (B, T, 128), out.mouth (B, T, 6)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class ContentOutput(BaseOutput):
    features: torch.Tensor  # (B, T, hidden) per-frame content features, shape-free (input to stage 3)
    mouth: torch.Tensor  # (B, T, n_mouth) mouth-only expression coefficients


def _dilations(context: int) -> list[int]:
    """Dilations of kernel-3 convs whose receptive fields add up to ±context frames: 4 → [1, 2, 1]."""
    out, left, d = [], context, 1
    while left > 0:
        out.append(min(d, left))
        left -= out[-1]
        d *= 2
    return out


class _TemporalBlock(nn.Module):
    """Pre-norm residual conv over time, kernel 3, 'same' padding: (B, T, C) → (B, T, C)."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv(self.norm(x).transpose(1, 2))).transpose(1, 2)  # (B, T, C)
        return x + self.dropout(h)


class _FrameEncoder(nn.Module):
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


class ContentEncoderDecoder(ModelMixin, ConfigMixin):
    """Audio window around each frame + stage-1 shape → mouth-only coefficients (stage 2)."""

    @register_to_config
    def __init__(
        self,
        n_mels: int = 80,
        hidden: int = 128,
        n_shape: int = 10,
        n_mouth: int = 6,
        mel_per_frame: int = 4,
        context: int = 4,
        dropout: float = 0.1,
        n_envelope: int = 0,
    ) -> None:
        super().__init__()
        self.frame_encoder = _FrameEncoder(n_mels, hidden, mel_per_frame, n_envelope)
        self.blocks = nn.ModuleList(_TemporalBlock(hidden, d, dropout) for d in _dilations(context))
        self.norm_out = nn.LayerNorm(hidden)
        self.film = nn.Linear(n_shape, 2 * hidden)  # shape → (scale, shift)
        self.decoder = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_mouth)
        )

    def forward(self, mel: torch.Tensor, shape: torch.Tensor, envelope: torch.Tensor | None = None) -> ContentOutput:
        """mel (B, mel_per_frame·T, n_mels) normalised log-mel; shape (B, n_shape) (frozen stage-1 output);
        envelope (B, mel_per_frame·T, n_envelope), required when the model was built with n_envelope > 0."""
        check_frame_mel(mel, self.config.n_mels, self.config.mel_per_frame, "ContentEncoderDecoder")
        if shape.shape != (mel.shape[0], self.config.n_shape):
            raise ValueError(
                f"shape must be (B, n_shape) = ({mel.shape[0]}, {self.config.n_shape}), got {tuple(shape.shape)}"
            )
        n_env = self.config.n_envelope
        if n_env:
            if envelope is None or envelope.shape != (*mel.shape[:2], n_env):
                got = None if envelope is None else tuple(envelope.shape)
                raise ValueError(
                    f"envelope must be (B, L, n_envelope) = ({mel.shape[0]}, {mel.shape[1]}, {n_env}), got {got}"
                )
            mel = torch.cat([mel, envelope.to(mel.dtype)], dim=-1)  # (B, 4T, n_mels + n_envelope)
        x = self.frame_encoder(mel)  # (B, T, hidden)
        for block in self.blocks:
            x = block(x)  # (B, T, hidden), sees ±context frames in all
        features = self.norm_out(x)  # (B, T, hidden)
        scale, shift = self.film(shape).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, hidden) each
        fused = features * (1 + scale) + shift
        return ContentOutput(features=features, mouth=self.decoder(fused))  # mouth (B, T, n_mouth)
