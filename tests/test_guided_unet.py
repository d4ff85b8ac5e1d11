"""Guidance with the text-free UNet prefix computed once equals the plain duplicated UNet call."""

from __future__ import annotations

import pytest
import torch
from diffusers import T2IAdapter, UNet2DConditionModel

from imagineid.models.guided_unet import guided_noise, splits_at_text
from imagineid.models.ldm import build_tiny, tiny_adapter_kwargs


def plain_guidance(unet, sample, t, cond, uncond, residuals, scale) -> torch.Tensor:
    """The textbook two-halves call, as diffusers' pipelines write it; written out here rather than taken
    from `duplicated_noise`, so the fallback test compares with an independent oracle."""
    unconditional, conditional = unet(
        torch.cat([sample, sample]),
        t,
        encoder_hidden_states=torch.cat([uncond, cond]),
        down_intrablock_additional_residuals=[torch.cat([f, f]) for f in residuals],
    ).sample.chunk(2)
    return unconditional + scale * (conditional - unconditional)


def sd15_layout_unet(**extra) -> UNet2DConditionModel:
    """SD 1.5's block structure (cross-attention from the first block) at tiny widths."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        **extra,
    ).eval()


SD15_ADAPTER = {
    "in_channels": 3,
    "channels": [32, 32, 64, 64],
    "num_res_blocks": 1,
    "downscale_factor": 8,
    "adapter_type": "full_adapter",
}


def inputs(unet: UNet2DConditionModel, adapter_kwargs: dict, batch: int, size: int, vae_factor: int):
    torch.manual_seed(1)
    adapter = T2IAdapter(**adapter_kwargs).eval()
    for p in adapter.parameters():  # random, visible residuals (a fresh adapter starts near zero)
        p.data.normal_(0, 0.2)
    residuals = adapter(torch.randn(batch, 3, size * vae_factor, size * vae_factor))
    d = unet.config.cross_attention_dim
    return (torch.randn(batch, 4, size, size), torch.randn(batch, 16, d), torch.randn(batch, 16, d), residuals)


@pytest.mark.parametrize("layout", ["tiny", "sd15"])
def test_guided_noise_equals_the_duplicated_call(layout: str) -> None:
    if layout == "tiny":  # a plain first block: conv_in, block 0 and one resnet are shared
        tiny = build_tiny()
        unet, kwargs, size, factor = tiny.unet.eval(), tiny_adapter_kwargs(tiny.unet, tiny.vae, 3), 16, 4
    else:  # cross-attention from the first block: conv_in and one resnet are shared
        unet, kwargs, size, factor = sd15_layout_unet(), SD15_ADAPTER, 8, 8
    assert splits_at_text(unet)
    sample, cond, uncond, residuals = inputs(unet, kwargs, 3, size, factor)
    with torch.no_grad():
        expected = plain_guidance(unet, sample, 601, cond, uncond, [f.clone() for f in residuals], 2.0)
        got = guided_noise(unet, sample, torch.tensor(601), cond, uncond, residuals, 2.0)
    assert got.shape == (3, 4, size, size)
    assert expected.abs().mean() > 0.1  # a real prediction, not zeros
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    # the halves really differ, so sharing the prefix could not hide a text mix-up
    with torch.no_grad():
        swapped = guided_noise(unet, sample, 601, uncond, cond, residuals, 2.0)
    assert (swapped - got).abs().max() > 50 * 2e-5  # well above the tolerance


def test_unsupported_unets_take_the_plain_call() -> None:
    unet = sd15_layout_unet(center_input_sample=True)
    assert not splits_at_text(unet)
    sample, cond, uncond, residuals = inputs(unet, SD15_ADAPTER, 2, 8, 8)
    with torch.no_grad():
        expected = plain_guidance(unet, sample, 11, cond, uncond, [f.clone() for f in residuals], 3.0)
        got = guided_noise(unet, sample, 11, cond, uncond, residuals, 3.0)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
