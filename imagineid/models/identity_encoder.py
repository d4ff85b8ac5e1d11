"""Stage 1 of the progressive audio disentangler (docs/architecture.md §1): who is speaking.

An utterance-level encoder over log-mel: strided 1-D convolutions over time with the 80 mel bins as
input channels (pitch is kept at full resolution), masked mean + std statistics pooling, an MLP, and
heads for a contrastive identity embedding, the 3DMM shape coefficients, gender and age group.

With `n_voice > 0` it also reads the voice front end's utterance vector (a pretrained d-vector plus
measured pitch, voice quality and formants, `imagineid.audio.voice_features`). Gender is then read
from `gender_features` alone and age from `age_features`, indices of physical measurements (F0 level;
F0 and formants): they mean the same on recorded speech as on the synthetic corpus, while the mel
branch has only met the corpus' synthesiser and a 256-d d-vector lets a head tell a few training
speakers apart instead of learning the cue. The
embedding and the shape read the mel branch and the whole voice vector; in training the mel branch is
dropped for `mel_dropout` of the utterances so neither head depends on it alone.

    encoder = IdentityEncoder(n_voice=268, gender_features=[256, 257, 258],
                              age_features=[256, 257, 258, 263, 264, 265, 266, 267])
    out = encoder(mel, mask, voice)  # mel (B, L, 80) normalised log-mel at 100 Hz, mask (B, L), voice (B, 268)
    out.embedding, out.shape, out.gender_logits.softmax(-1)

Utterances are pooled by `temporal_blocks.masked_stats`, as the emotion encoder pools prosody.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from imagineid.models.temporal_blocks import masked_stats


@dataclass
class IdentityOutput(BaseOutput):
    embedding: torch.Tensor  # (B, embed_dim) L2-normalised identity semantics
    features: torch.Tensor  # (B, hidden) pooled identity features (frozen input to later stages)
    shape: torch.Tensor  # (B, n_shape) 3DMM shape coefficients
    gender_logits: torch.Tensor  # (B, n_genders)
    age_logits: torch.Tensor  # (B, n_ages)
    prosody: torch.Tensor | None = None  # (B, n_voice - 256) standardised voice measurements (voice branch only)

    def for_emotion(self, identity_dim: int | None = None) -> torch.Tensor:
        """What the emotion stage is told about the speaker: the pooled features and, with a voice
        branch, the measured prosody (F0 level and range, voicing, voice quality): happy, sad and angry
        speech differ in exactly these, relative to the speaker. (B, hidden [+ n_stats]). An emotion
        stage trained without prosody (`identity_dim` = hidden) gets the features alone."""
        if self.prosody is None or identity_dim == self.features.shape[-1]:
            return self.features
        return torch.cat([self.features, self.prosody], dim=-1)


class _ChannelNorm(nn.Module):
    """LayerNorm over channels of a (B, C, L) tensor, per time step: it never mixes time (padding-safe)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _check_mel(mel: torch.Tensor, n_mels: int, name: str) -> None:
    if mel.ndim != 3 or mel.shape[2] != n_mels:
        raise ValueError(f"{name}: mel must be (B, L, {n_mels}), got shape {tuple(mel.shape)}")
    if mel.shape[1] < 1:
        raise ValueError(f"{name}: mel has no frames")


class _UtteranceEncoder(nn.Module):
    """Strided convs over time → masked stats pooling of the conv features and of the raw mel → MLP.

    The raw-mel statistics keep absolute levels (pitch band, loudness, spectral tilt) that per-step
    normalisation inside the conv stack could blur. (B, L, n_mels) → (B, out_dim).
    """

    def __init__(self, n_mels: int, hidden: int, out_dim: int, strides: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.strides = strides
        layers = []
        channels = n_mels
        for i, stride in enumerate(strides):
            kernel = 2 * stride - 1 if i == 0 else 3  # odd kernel, 'same' padding: ceil(L / stride) steps
            layers.append(
                nn.ModuleDict(
                    {
                        "conv": nn.Conv1d(channels, hidden, kernel, stride=stride, padding=kernel // 2),
                        "norm": _ChannelNorm(hidden),
                    }
                )
            )
            channels = hidden
        self.layers = nn.ModuleList(layers)
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden + 2 * n_mels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = mel.transpose(1, 2)  # (B, n_mels, L)
        raw = masked_stats(x, mask)  # (B, 2 n_mels)
        for layer, stride in zip(self.layers, self.strides):
            if mask is not None:
                x = x * mask.unsqueeze(1).to(x.dtype)  # padding contributes nothing to the next conv
            x = F.gelu(layer["norm"](layer["conv"](x)))  # (B, hidden, ceil(L / stride))
            if mask is not None:
                mask = mask[:, ::stride]  # (B, ceil(L / stride)): the length of an odd-kernel 'same' conv
        pooled = masked_stats(x, mask)  # (B, 2 hidden)
        return self.mlp(torch.cat([pooled, raw], dim=1))  # (B, out_dim)


class IdentityEncoder(ModelMixin, ConfigMixin):
    """Utterance-level voice → identity embedding, 3DMM shape, gender and age (stage 1)."""

    @register_to_config
    def __init__(
        self,
        n_mels: int = 80,
        hidden: int = 128,
        embed_dim: int = 64,
        n_shape: int = 10,
        n_genders: int = 2,
        n_ages: int = 3,
        dropout: float = 0.1,
        n_voice: int = 0,
        mel_dropout: float = 0.5,
        gender_features: tuple[int, ...] | list[int] | None = None,
        age_features: tuple[int, ...] | list[int] | None = None,
        n_prosody: int = 12,
    ) -> None:
        super().__init__()
        self.encoder = _UtteranceEncoder(n_mels, hidden, hidden, strides=(4, 2, 1), dropout=dropout)
        if n_voice:
            # standardisation of the voice vector, set from the training set (`set_voice_stats`)
            self.register_buffer("voice_mean", torch.zeros(n_voice))
            self.register_buffer("voice_std", torch.ones(n_voice))
            self.voice = nn.Sequential(
                nn.Dropout(0.2), nn.Linear(n_voice, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
            )
            self.gender_index = list(gender_features if gender_features is not None else range(n_voice))
            self.age_index = list(age_features if age_features is not None else range(n_voice))
            self.voice_gender = nn.Sequential(
                nn.Linear(len(self.gender_index), 16), nn.GELU(), nn.Linear(16, n_genders)
            )
            self.voice_age = nn.Sequential(
                nn.Linear(len(self.age_index), 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, n_ages)
            )
        self.trunk = nn.Sequential(nn.GELU(), nn.Dropout(dropout))
        self.embed_head = nn.Linear(hidden, embed_dim)
        self.shape_head = nn.Linear(hidden, n_shape)
        self.gender_head = nn.Linear(hidden, n_genders)
        self.age_head = nn.Linear(hidden, n_ages)

    def set_voice_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise the voice vector with the training set's per-dimension mean and std."""
        self.voice_mean.copy_(mean)
        self.voice_std.copy_(std.clamp_min(1e-3))

    def forward(
        self, mel: torch.Tensor, mask: torch.Tensor | None = None, voice: torch.Tensor | None = None
    ) -> IdentityOutput:
        """mel (B, L, n_mels) normalised log-mel; mask (B, L) bool, True on valid frames (None = all);
        voice (B, n_voice) the voice front end's vectors (required when the model has a voice branch)."""
        _check_mel(mel, self.config.n_mels, "IdentityEncoder")
        if mask is not None and mask.shape != mel.shape[:2]:
            raise ValueError(f"mask must be (B, L) = {tuple(mel.shape[:2])}, got {tuple(mask.shape)}")
        features = self.encoder(mel, mask)  # (B, hidden)
        attributes = None
        if self.config.n_voice:
            if voice is None or voice.shape != (mel.shape[0], self.config.n_voice):
                got = None if voice is None else tuple(voice.shape)
                raise ValueError(
                    f"IdentityEncoder: voice must be (B, n_voice) = ({mel.shape[0]}, {self.config.n_voice}), got {got}"
                )
            standard = (voice.to(features.dtype) - self.voice_mean) / self.voice_std  # (B, n_voice)
            v = self.voice(standard)  # (B, hidden)
            attributes = torch.cat(
                [
                    self.voice_gender(standard[:, self.gender_index]),  # (B, n_genders)
                    self.voice_age(standard[:, self.age_index]),
                ],
                dim=1,
            )  # (B, n_ages)
            if self.training:
                keep = torch.rand(len(features), 1, device=features.device) >= self.config.mel_dropout
                features = features * keep.to(features.dtype)
            features = features + v
        h = self.trunk(features)
        n_genders = self.config.n_genders
        return IdentityOutput(
            embedding=F.normalize(self.embed_head(h), dim=-1),  # (B, embed_dim)
            features=features,
            shape=self.shape_head(h),  # (B, n_shape)
            gender_logits=self.gender_head(h) if attributes is None else attributes[:, :n_genders],  # (B, n_genders)
            age_logits=self.age_head(h) if attributes is None else attributes[:, n_genders:],  # (B, n_ages)
            prosody=None if attributes is None else standard[:, self.config.n_voice - self.config.n_prosody :],
        )
