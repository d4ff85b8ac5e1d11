"""Stage 3 of the progressive audio disentangler (docs/architecture.md §1): how it is said → full expression.

Identity and content are frozen. The emotion encoder reads the utterance's prosody (pitch level and
range, speaking rate, loudness): per-frame conv features pooled with mean + std over the whole clip,
together with the raw log-mel statistics, so absolute levels are kept — nothing normalises a clip's
energy away. It gives an L2-normalised emotion embedding and emotion logits. The decoder fuses, per
frame, the frozen content features, the frozen identity features, the emotion embedding and the frame's
own prosody features, runs dilated temporal convs and predicts the full expression coefficients.

    model = EmotionEncoderDecoder()
    out = model(mel, identity.features, content.features)  # (B, 4T, 80), (B, 128), (B, T, 128)
    out.embedding (B, 32), out.emotion_logits (B, 4), out.expression (B, T, 12)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from imagineid.models.temporal_blocks import FrameEncoder, TemporalBlock, check_frame_mel, dilations, masked_stats


@dataclass
class EmotionOutput(BaseOutput):
    embedding: torch.Tensor  # (B, emotion_dim) L2-normalised emotion embedding
    emotion_logits: torch.Tensor  # (B, n_emotions)
    expression: torch.Tensor  # (B, T, n_expression) full expression coefficients


class EmotionEncoderDecoder(ModelMixin, ConfigMixin):
    """Utterance prosody + frozen identity and content features → emotion and full expression (stage 3)."""

    @register_to_config
    def __init__(
        self,
        n_mels: int = 80,
        hidden: int = 128,
        identity_dim: int = 128,
        content_dim: int = 128,
        emotion_dim: int = 32,
        n_expression: int = 12,
        n_emotions: int = 4,
        mel_per_frame: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # Encoder: frame-rate prosody features → utterance statistics → emotion
        self.frame_encoder = FrameEncoder(n_mels, hidden, mel_per_frame)
        self.frame_block = TemporalBlock(hidden, 2, dropout)
        self.pool_mlp = nn.Sequential(
            nn.Linear(2 * hidden + 2 * n_mels + identity_dim, hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.embed_head = nn.Linear(hidden, emotion_dim)
        self.emotion_head = nn.Linear(hidden, n_emotions)
        # Decoder: per-frame fusion → temporal convs → expression
        self.fuse = nn.Linear(content_dim + identity_dim + emotion_dim + hidden, hidden)
        self.blocks = nn.ModuleList(TemporalBlock(hidden, d, dropout) for d in dilations(4))
        self.norm_out = nn.LayerNorm(hidden)
        self.expression_head = nn.Linear(hidden, n_expression)

    def forward(
        self,
        mel: torch.Tensor,
        identity: torch.Tensor,
        content: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> EmotionOutput:
        """mel (B, mel_per_frame·T, n_mels); identity (B, identity_dim); content (B, T, content_dim);
        mask (B, T) bool, True on valid video frames, restricts the utterance pooling (None = all)."""
        cfg = self.config
        t = check_frame_mel(mel, cfg.n_mels, cfg.mel_per_frame, "EmotionEncoderDecoder")
        b = mel.shape[0]
        if identity.shape != (b, cfg.identity_dim):
            raise ValueError(
                f"identity must be (B, identity_dim) = ({b}, {cfg.identity_dim}), got {tuple(identity.shape)}"
            )
        if content.shape != (b, t, cfg.content_dim):
            raise ValueError(
                f"content must be (B, T, content_dim) = ({b}, {t}, {cfg.content_dim}), got {tuple(content.shape)}"
            )
        if mask is not None and mask.shape != (b, t):
            raise ValueError(f"mask must be (B, T) = ({b}, {t}), got {tuple(mask.shape)}")

        # 1. Encode the utterance's prosody
        frames = self.frame_block(self.frame_encoder(mel))  # (B, T, hidden)
        mel_mask = None if mask is None else mask.repeat_interleave(cfg.mel_per_frame, dim=1)  # (B, 4T)
        stats = torch.cat(
            [
                masked_stats(frames.transpose(1, 2), mask),  # (B, 2 hidden)
                masked_stats(mel.transpose(1, 2), mel_mask),  # (B, 2 n_mels): absolute levels kept
                identity,  # (B, identity_dim): the speaker's baseline, so prosody reads relative to it
            ],
            dim=1,
        )
        h = self.pool_mlp(stats)  # (B, hidden)
        embedding = F.normalize(self.embed_head(h), dim=-1)  # (B, emotion_dim)

        # 2. Decode per-frame expression from content + identity + emotion + the frame's prosody
        fused = torch.cat(
            [
                content,
                identity.unsqueeze(1).expand(b, t, -1),
                embedding.unsqueeze(1).expand(b, t, -1),
                frames,
            ],
            dim=-1,
        )  # (B, T, content_dim + identity_dim + emotion_dim + hidden)
        x = F.gelu(self.fuse(fused))  # (B, T, hidden)
        for block in self.blocks:
            x = block(x)
        expression = self.expression_head(self.norm_out(x))  # (B, T, n_expression)
        return EmotionOutput(embedding=embedding, emotion_logits=self.emotion_head(h), expression=expression)
