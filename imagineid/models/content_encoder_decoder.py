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
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from imagineid.models.temporal_blocks import FrameEncoder, TemporalBlock, check_frame_mel, dilations


@dataclass
class ContentOutput(BaseOutput):
    features: torch.Tensor  # (B, T, hidden) per-frame content features, shape-free (input to stage 3)
    mouth: torch.Tensor  # (B, T, n_mouth) mouth-only expression coefficients


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
        self.frame_encoder = FrameEncoder(n_mels, hidden, mel_per_frame, n_envelope)
        self.blocks = nn.ModuleList(TemporalBlock(hidden, d, dropout) for d in dilations(context))
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
