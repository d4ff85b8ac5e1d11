"""Trainable modules (diffusers `ModelMixin` + `ConfigMixin`: `save_pretrained` / `from_pretrained`).

The listening side, the progressive audio disentangler of DESIGN §1, one file per stage:
`IdentityEncoder` (stage 1), `ContentEncoderDecoder` (stage 2), `EmotionEncoderDecoder` (stage 3).
"""

from imagineid.models.content_encoder_decoder import (
    ContentEncoderDecoder,
    ContentOutput,
)
from imagineid.models.emotion_encoder_decoder import (
    EmotionEncoderDecoder,
    EmotionOutput,
)
from imagineid.models.identity_encoder import IdentityEncoder, IdentityOutput

__all__ = [
    "ContentEncoderDecoder",
    "ContentOutput",
    "EmotionEncoderDecoder",
    "EmotionOutput",
    "IdentityEncoder",
    "IdentityOutput",
]
