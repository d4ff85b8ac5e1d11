"""The three imagining adapters (docs/architecture.md §1) on tiny diffusers components: shapes, save/load, wiring."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from imagineid.models.mask_blending_adapter import (
    MaskBlendingAdapter,
    decode_with_blending,
    encoder_features,
)
from imagineid.models.spatial_condition_adapter import (
    SpatialConditionAdapter,
    mask_mouth,
)
from imagineid.models.textual_inversion_adapter import TextualInversionAdapter


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
    ).eval()


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
    ).eval()


def face_mask(b: int = 2, size: int = 64) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    m[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    return m


def assert_round_trip(model, tmp_path, *inputs):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = type(model).from_pretrained(tmp_path).eval()
    model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        a, b = model(*inputs), loaded(*inputs)
    a = a if isinstance(a, list) else a.to_tuple()
    b = b if isinstance(b, list) else b.to_tuple()
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# Textual inversion


def test_textual_inversion_shapes_norm_and_neutral():
    torch.manual_seed(0)
    adapter = TextualInversionAdapter(token_norm=0.4)
    identity, emotion = torch.randn(3, 64), torch.randn(3, 32)
    out = adapter(identity, emotion)
    assert out.identity_tokens.shape == (3, 2, 64)
    assert out.emotion_tokens.shape == (3, 1, 64)
    torch.testing.assert_close(out.identity_tokens.norm(dim=-1), torch.full((3, 2), 0.4), atol=1e-3, rtol=0)
    neutral = adapter(identity).emotion_tokens
    assert neutral.shape == (3, 1, 64)
    assert torch.equal(neutral[0], neutral[2])  # one learned token, the same for every sample
    with pytest.raises(ValueError):
        adapter(torch.randn(3, 10))


def test_textual_inversion_round_trip(tmp_path):
    torch.manual_seed(0)
    adapter = TextualInversionAdapter(identity_dim=16, emotion_dim=8, token_dim=32, hidden=32)
    assert_round_trip(adapter, tmp_path, torch.randn(2, 16), torch.randn(2, 8))


# Spatial condition


@pytest.mark.parametrize("adapter_type", ["full_adapter", "light_adapter"])
def test_spatial_features_match_tiny_unet(adapter_type):
    torch.manual_seed(0)
    adapter = SpatialConditionAdapter(adapter_type=adapter_type).eval()
    mesh, ref, nb = (torch.rand(2, 3, 64, 64) * 2 - 1 for _ in range(3))
    with torch.no_grad():
        feats = adapter(mesh, ref, nb)
    assert [tuple(f.shape) for f in feats] == [
        (2, 32, 16, 16),
        (2, 64, 8, 8),
        (2, 64, 4, 4),
    ]

    unet = tiny_unet()
    latents, text = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 64)
    with torch.no_grad():
        plain = unet(latents, 10, text).sample
        zero = unet(
            latents,
            10,
            text,
            down_intrablock_additional_residuals=[torch.zeros_like(f) for f in feats],
        ).sample
        cond = unet(latents, 10, text, down_intrablock_additional_residuals=list(feats)).sample
    assert cond.shape == plain.shape
    torch.testing.assert_close(zero, plain, atol=1e-5, rtol=0)
    assert (cond - plain).abs().max() > 1e-3


def test_spatial_scale_drop_mask_and_round_trip(tmp_path):
    torch.manual_seed(0)
    adapter = SpatialConditionAdapter(n_neighbours=2, num_res_blocks=1).eval()
    mesh, ref, nb = (
        torch.rand(3, 3, 64, 64),
        torch.rand(3, 3, 64, 64),
        torch.rand(3, 6, 64, 64),
    )
    drop = torch.tensor([True, False, True])
    with torch.no_grad():
        dropped = adapter(mesh, ref, nb, drop_mask=drop)
        ref0, nb0 = ref.clone(), nb.clone()
        ref0[drop], nb0[drop] = 0.0, 0.0
        zeroed = adapter(mesh, ref0, nb0)
        none = adapter(mesh)  # variable mode: no reference nor neighbours at all
        full = adapter(mesh, ref, nb)
        half = adapter(mesh, ref, nb, conditioning_scale=0.5)
    for d, z, n, f, h in zip(dropped, zeroed, none, full, half):
        assert torch.equal(d, z)
        torch.testing.assert_close(d[0], n[0])
        assert torch.equal(d[1], f[1])  # kept sample untouched
        assert not torch.allclose(d[0], f[0])
        torch.testing.assert_close(h, 0.5 * f)
    with pytest.raises(ValueError):
        adapter(mesh, ref, nb[:, :3])
    assert_round_trip(adapter, tmp_path, mesh, ref, nb)


def test_mask_mouth_changes_only_the_mouth():
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    mouth = torch.zeros(2, 1, 32, 32)
    mouth[..., 20:28, 10:22] = 1.0
    out = mask_mouth(frames, mouth)
    outside = (mouth == 0).expand_as(frames)
    assert torch.equal(out[outside], frames[outside])
    assert torch.all(out[~outside] == 0.0)


# Mask-guided blending


def test_blending_levels_and_equivalence_when_disabled():
    vae = tiny_vae()
    torch.manual_seed(0)
    adapter = MaskBlendingAdapter(channels=(64, 64, 32))
    latents, background = torch.randn(2, 4, 16, 16), torch.rand(2, 3, 64, 64) * 2 - 1
    feats = encoder_features(vae, background)
    assert [tuple(f.shape) for f in feats] == [
        (2, 32, 64, 64),
        (2, 64, 32, 32),
        (2, 64, 16, 16),
    ]
    with torch.no_grad():
        reference = vae.decode(latents).sample
        disabled = decode_with_blending(vae, None, latents)
        untrained = decode_with_blending(vae, adapter, latents, background, face_mask())  # zero-init = no-op
        fused = adapter([f.flip(0) for f in feats[::-1]], feats[::-1], face_mask())
    assert disabled.shape == (2, 3, 64, 64)
    assert (disabled - reference).abs().max() < 1e-4
    assert (untrained - reference).abs().max() < 1e-4
    assert [tuple(f.shape) for f in fused] == [
        (2, 64, 16, 16),
        (2, 64, 32, 32),
        (2, 32, 64, 64),
    ]


def test_blending_trains_adapter_only_and_pulls_background_in(tmp_path):
    vae = tiny_vae()
    vae.requires_grad_(False)
    torch.manual_seed(0)
    adapter = MaskBlendingAdapter(channels=(64, 32))  # the two highest resolutions only
    latents, background, mask = (
        torch.randn(2, 4, 16, 16),
        torch.rand(2, 3, 64, 64) * 2 - 1,
        face_mask(),
    )
    optimiser = torch.optim.Adam(adapter.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        images = decode_with_blending(vae, adapter, latents, background, mask)
        loss = (((images - background) * (1 - mask)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimiser.step()
    assert all(p.grad is None for p in vae.parameters())
    assert all(p.grad is not None for p in adapter.parameters())
    assert losses[-1] < 0.9 * losses[0]
    # inside the (feathered) face mask the fused features are the decoder's own; in pixels the face can still
    # shift a little, because the decoder's GroupNorms after the fusion pool statistics over the whole image
    dec, enc = torch.randn(2, 32, 64, 64), torch.randn(2, 32, 64, 64)
    with torch.no_grad():
        fused = adapter.fuse(1, dec, enc, mask)
    assert torch.equal(fused[..., 18:46, 18:46], dec[..., 18:46, 18:46])
    assert not torch.allclose(fused[..., :8, :8], dec[..., :8, :8])
    assert_round_trip(
        adapter,
        tmp_path,
        [torch.randn(1, 64, 32, 32), torch.randn(1, 32, 64, 64)],
        [torch.randn(1, 64, 32, 32), torch.randn(1, 32, 64, 64)],
        face_mask(1),
    )
