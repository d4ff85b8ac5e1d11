"""Trainable modules (diffusers `ModelMixin` + `ConfigMixin`: `save_pretrained` / `from_pretrained`).

Listening (the progressive audio disentangler of docs/architecture.md §1), one file per stage: `IdentityEncoder`,
`ContentEncoderDecoder`, `EmotionEncoderDecoder`. Imagining: the latent-diffusion base (`ldm.py`: tiny
profile built from configs, or a local Stable Diffusion 1.5 folder) and its three adapters:
`TextualInversionAdapter`, `SpatialConditionAdapter`, `MaskBlendingAdapter`.
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
from imagineid.models.ldm import (
    LDMComponents,
    build_tiny,
    load_components,
    load_sd15,
    save_components,
)
from imagineid.models.mask_blending_adapter import (
    MaskBlendingAdapter,
    decode_with_blending,
)
from imagineid.models.prompt_encoding import encode_prompt
from imagineid.models.spatial_condition_adapter import (
    SpatialConditionAdapter,
    mask_mouth,
)
from imagineid.models.textual_inversion_adapter import (
    TextualInversionAdapter,
    TextualInversionOutput,
)
from imagineid.models.word_tokenizer import WordTokenizer

__all__ = [
    "ContentEncoderDecoder",
    "ContentOutput",
    "EmotionEncoderDecoder",
    "EmotionOutput",
    "IdentityEncoder",
    "IdentityOutput",
    "LDMComponents",
    "MaskBlendingAdapter",
    "SpatialConditionAdapter",
    "TextualInversionAdapter",
    "TextualInversionOutput",
    "WordTokenizer",
    "build_tiny",
    "decode_with_blending",
    "encode_prompt",
    "load_components",
    "load_sd15",
    "mask_mouth",
    "save_components",
]
