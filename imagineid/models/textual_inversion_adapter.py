"""Textual inversion adapter of the imagining stage (docs/architecture.md §1): who and in which mood, as words.

Two small MLPs map the disentangler's identity and emotion embeddings to pseudo-word token embeddings.
They replace the placeholder tokens of a prompt such as "a photo of <id> person, <emo> expression"
before the frozen text encoder, so identity and emotion reach the UNet through cross-attention.

    adapter = TextualInversionAdapter(identity_dim=64, emotion_dim=32, token_dim=64)
    out = adapter(identity, emotion)  # identity (B, 64), emotion (B, 32) or None → neutral
    out.identity_tokens  # (B, 2, 64)
    out.emotion_tokens   # (B, 1, 64)

Every token is LayerNorm-ed (no affine) and scaled so its L2 norm is exactly `token_norm`: learned
pseudo-words then sit at the scale of the real word embeddings around them. Set `token_norm` to the
text encoder's mean word-embedding norm, `text_encoder.get_input_embeddings().weight.norm(dim=-1).mean()`;
the default 0.4 is about that of CLIP ViT-L/14 (Stable Diffusion 1.x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class TextualInversionOutput(BaseOutput):
    identity_tokens: torch.Tensor  # (B, n_identity_tokens, token_dim)
    emotion_tokens: torch.Tensor  # (B, n_emotion_tokens, token_dim)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.SiLU(),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Linear(hidden, out_dim),
    )


class TextualInversionAdapter(ModelMixin, ConfigMixin):
    """Identity / emotion embeddings → pseudo-word token embeddings of norm `token_norm`."""

    @register_to_config
    def __init__(
        self,
        identity_dim: int = 64,
        emotion_dim: int = 32,
        token_dim: int = 64,
        n_identity_tokens: int = 2,
        n_emotion_tokens: int = 1,
        hidden: int = 128,
        token_norm: float = 0.4,
    ):
        super().__init__()
        self.identity_mlp = _mlp(identity_dim, hidden, n_identity_tokens * token_dim)
        self.emotion_mlp = _mlp(emotion_dim, hidden, n_emotion_tokens * token_dim)
        self.neutral_emotion = nn.Parameter(torch.randn(n_emotion_tokens, token_dim))  # used when emotion is None

    def _to_tokens(self, x: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """(B, n·D) → (B, n, D) tokens, each LayerNorm-ed then scaled to L2 norm token_norm."""
        d = self.config.token_dim
        x = F.layer_norm(x.reshape(x.shape[0], n_tokens, d), (d,))  # (B, n, D), norm ≈ sqrt(D)
        return x * (self.config.token_norm / math.sqrt(d))

    def forward(self, identity: torch.Tensor, emotion: torch.Tensor | None = None) -> TextualInversionOutput:
        cfg = self.config
        if identity.ndim != 2 or identity.shape[1] != cfg.identity_dim:
            raise ValueError(f"identity must be (B, {cfg.identity_dim}), got {tuple(identity.shape)}")
        batch = identity.shape[0]
        identity_tokens = self._to_tokens(self.identity_mlp(identity), cfg.n_identity_tokens)  # (B, n_id, D)
        if emotion is None:
            neutral = self.neutral_emotion.reshape(1, -1).expand(batch, -1)  # (B, n_emo·D)
            emotion_tokens = self._to_tokens(neutral, cfg.n_emotion_tokens)
        else:
            if emotion.shape != (batch, cfg.emotion_dim):
                raise ValueError(f"emotion must be ({batch}, {cfg.emotion_dim}), got {tuple(emotion.shape)}")
            emotion_tokens = self._to_tokens(self.emotion_mlp(emotion), cfg.n_emotion_tokens)  # (B, n_emo, D)
        return TextualInversionOutput(identity_tokens=identity_tokens, emotion_tokens=emotion_tokens)
