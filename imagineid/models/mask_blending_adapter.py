"""Mask-guided blending adapter of the imagining stage (docs/architecture.md §1): the background stays exactly put.

Inside the frozen VAE, the decoder's features of the generated frame are fused with the encoder's
features of the background frame under a dilated face mask. Fusion happens in the last
`len(channels)` decoder up blocks, on the features *before* their upsampler, where each level has the
same resolution and channel count as the pre-downsample features of the mirrored encoder down block
(the VAE is symmetric). For the tiny test VAE (block_out_channels (32, 64, 64), 64 px, 16×16 latents):

    decoder up block 0: (B, 64, 16, 16)  ↔  encoder down block 2
    decoder up block 1: (B, 64, 32, 32)  ↔  encoder down block 1
    decoder up block 2: (B, 32, 64, 64)  ↔  encoder down block 0

so channels=(64, 64, 32). For SD's VAE (128, 256, 512, 512) at 512 px the levels are
(512 @ 64, 512 @ 128, 256 @ 256, 128 @ 512); e.g. channels=(256, 128) fuses the two highest.

At each level: fused = dec + (1 - m) · zero_conv(SiLU(conv3x3([dec, enc]))), m the face mask resized
to the level (area interpolation, then a `feather`×`feather` box blur softens the seam). The last conv
is zero-initialised, so an untrained adapter reproduces `vae.decode` exactly and training only learns
how to pull the background in; inside the face (m = 1) the decoder is never touched.

    images = decode_with_blending(vae, adapter, latents, background, mask)  # (B, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders import AutoencoderKL
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class _FuseLevel(nn.Module):
    """One resolution: (decoder, encoder) features (B, C, h, w) each → a zero-initialised residual."""

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, 2 * channels, eps=1e-6)
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)
        self.zero_conv = nn.Conv2d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def forward(self, dec: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        x = self.norm(torch.cat([dec, enc], dim=1))  # (B, 2C, h, w)
        return self.zero_conv(F.silu(self.conv(x)))  # (B, C, h, w)


class MaskBlendingAdapter(ModelMixin, ConfigMixin):
    """Fuses VAE-encoder background features into the VAE decoder outside a dilated face mask."""

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, ...] = (64, 64, 32),
        norm_groups: int = 32,
        feather: int = 3,
    ):
        super().__init__()
        if feather < 1 or feather % 2 == 0:
            raise ValueError(f"feather must be a positive odd kernel size, got {feather}")
        self.levels = nn.ModuleList([_FuseLevel(c, norm_groups) for c in channels])

    def resize_mask(self, mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """mask (B, 1, H, W) in [0, 1] → (B, 1, *size), soft at the boundary."""
        m = F.interpolate(mask, size=size, mode="area") if mask.shape[-2:] != size else mask
        k = self.config.feather
        if k > 1:
            m = F.avg_pool2d(m, k, stride=1, padding=k // 2, count_include_pad=False)
        return m

    def forward(
        self,
        decoder_features: list[torch.Tensor],
        encoder_features: list[torch.Tensor],
        mask: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Lists (low → high resolution) of (B, C_i, H_i, W_i), mask (B, 1, H, W) → fused decoder features."""
        if len(decoder_features) != len(self.levels) or len(encoder_features) != len(self.levels):
            raise ValueError(
                f"expected {len(self.levels)} levels, got {len(decoder_features)} decoder "
                f"and {len(encoder_features)} encoder"
            )
        return [self.fuse(i, d, e, mask) for i, (d, e) in enumerate(zip(decoder_features, encoder_features))]

    def fuse(self, level: int, dec: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One level: dec, enc (B, C, h, w), mask (B, 1, H, W) → dec + (1 - m) · residual."""
        if dec.shape != enc.shape:
            raise ValueError(
                f"level {level}: decoder {tuple(dec.shape)} and encoder {tuple(enc.shape)} features differ"
            )
        m = self.resize_mask(mask.to(dec.dtype), tuple(dec.shape[-2:]))  # (B, 1, h, w)
        return dec + (1.0 - m) * self.levels[level](dec, enc)


def face_removed(images: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """images (B, 3, H, W), mask (B, 1, H, W) in [0, 1] → the background alone, face greyed to `fill`.

    What the blending adapter sees as background, in training (the target frame) and at inference
    (frame 1): without the face, it cannot copy a face from it.
    """
    m = (mask > 0.01).to(images.dtype)
    return images * (1.0 - m) + fill * m


def paste_background(frames: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel composite under the soft face mask: the decoded face inside, `background` exactly outside."""
    m = mask.to(frames.dtype)
    return frames * m + background * (1.0 - m)


def _block_body(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A VAE (Down|Up)(Encoder|Decoder)Block2D without its resampler, as its own forward runs it (temb None)."""
    attentions = getattr(block, "attentions", None)
    for i, resnet in enumerate(block.resnets):
        x = resnet(x, temb=None)
        if attentions is not None:
            x = attentions[i](x)
    return x


def encoder_features(vae: AutoencoderKL, images: torch.Tensor) -> list[torch.Tensor]:
    """images (B, 3, H, W) in [-1, 1] → pre-downsample features of every encoder down block, high → low res."""
    enc = vae.encoder
    x = enc.conv_in(images)  # (B, C0, H, W)
    feats = []
    for block in enc.down_blocks:
        x = _block_body(block, x)
        feats.append(x)  # (B, C_i, H / 2^i, W / 2^i)
        if block.downsamplers is not None:
            for down in block.downsamplers:
                x = down(x)
    return feats


def decode_with_blending(
    vae: AutoencoderKL,
    adapter: MaskBlendingAdapter | None,
    latents: torch.Tensor,
    background: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`vae.decode(latents).sample` with the adapter fusing `background` outside `mask`.

    latents (B, 4, h, w) already divided by vae.config.scaling_factor (as for vae.decode);
    background (B, 3, H, W) in [-1, 1]; mask (B, 1, H, W) in [0, 1], 1 = face. → (B, 3, H, W).
    With adapter None this replicates AutoencoderKL._decode + Decoder.forward (group norm, no tiling).
    """
    dec = vae.decoder
    n_up = len(dec.up_blocks)
    first_fused = n_up
    enc_feats: list[torch.Tensor] = []
    if adapter is not None:
        if background is None or mask is None:
            raise ValueError("decode_with_blending needs background and mask when an adapter is given")
        n_levels = len(adapter.levels)
        if n_levels > n_up:
            raise ValueError(f"adapter has {n_levels} levels but the VAE decoder has {n_up} up blocks")
        first_fused = n_up - n_levels
        # 1. Encode the background; decoder up block i mirrors encoder down block n_up - 1 - i
        enc_feats = encoder_features(vae, background.to(latents.dtype))[::-1]  # low → high resolution

    # 2. Decode, as AutoencoderKL._decode and Decoder.forward do
    z = vae.post_quant_conv(latents) if vae.post_quant_conv is not None else latents
    x = dec.conv_in(z)  # (B, C_last, h, w)
    x = dec.mid_block(x, None)
    for i, block in enumerate(dec.up_blocks):
        x = _block_body(block, x)
        if i >= first_fused:  # 3. Fuse the background before this level's upsampler
            x = adapter.fuse(i - first_fused, x, enc_feats[i], mask)
        if block.upsamplers is not None:
            for up in block.upsamplers:
                x = up(x)
    x = dec.conv_act(dec.conv_norm_out(x))
    return dec.conv_out(x)  # (B, 3, H, W)
