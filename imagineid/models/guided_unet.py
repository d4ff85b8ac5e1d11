"""Classifier-free guidance with the text-free start of the UNet computed once per sample.

Guidance runs the UNet on the same latents twice, once with the plain base prompt and once with the
identity / emotion prompt, and the T2I-Adapter residuals are the same in both halves. The halves
differ only through `encoder_hidden_states`, which nothing reads before the first cross-attention:
the time embedding, `conv_in`, every plain down block before it and that block's first resnet see
identical inputs twice. `guided_noise` computes that prefix on B rows, then duplicates the hidden
state and runs the rest of diffusers' `UNet2DConditionModel.forward` on 2B rows: the same result,
less work. In the tiny UNet (docs/architecture.md §4) the prefix is a noticeable share of a sample's
FLOPs (`benchmarks/guided_unet.py` counts and times it); in SD 1.5 (cross-attention from the first
block) only `conv_in` and one resnet.

UNets with features the split does not reproduce (class / added embeddings, centred inputs, a timestep
condition, other down block types) take the plain duplicated call, so the function is always safe.

    noise = guided_noise(unet, latents, t, cond, uncond, residuals, guidance_scale=2.0)  # (B, 4, h, w)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D, DownBlock2D


def guided_noise(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor | int,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    residuals: Sequence[torch.Tensor],
    guidance_scale: float,
) -> torch.Tensor:
    """uncond + scale · (cond − uncond) noise predictions → (B, C, h, w).

    sample (B, C, h, w); cond / uncond (B, L, D); residuals: the adapter's per-down-block features (B, …).
    """
    if not splits_at_text(unet):
        return duplicated_noise(unet, sample, timestep, cond, uncond, residuals, guidance_scale)
    unconditional, conditional = _split_forward(unet, sample, timestep, uncond, cond, list(residuals)).chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


def duplicated_noise(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor | int,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    residuals: Sequence[torch.Tensor],
    guidance_scale: float,
) -> torch.Tensor:
    """The textbook guided call, both halves through the whole UNet → (B, C, h, w)."""
    unconditional, conditional = unet(
        torch.cat([sample, sample]),
        timestep,
        encoder_hidden_states=torch.cat([uncond, cond]),
        down_intrablock_additional_residuals=[torch.cat([f, f]) for f in residuals],
    ).sample.chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


def splits_at_text(unet: UNet2DConditionModel) -> bool:
    """Whether `_split_forward` reproduces this UNet's forward exactly."""
    c = unet.config
    plain_embedding = (
        c.class_embed_type is None
        and c.num_class_embeds is None
        and c.addition_embed_type is None
        and c.time_cond_proj_dim is None
        and c.encoder_hid_dim is None
        and not c.center_input_sample
    )
    blocks = all(type(b) in (DownBlock2D, CrossAttnDownBlock2D) for b in unet.down_blocks)
    return plain_embedding and blocks and any(isinstance(b, CrossAttnDownBlock2D) for b in unet.down_blocks)


def _split_forward(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor | int,
    uncond: torch.Tensor,
    cond: torch.Tensor,
    residuals: list[torch.Tensor],
) -> torch.Tensor:
    """diffusers' forward (T2I-Adapter residuals, no masks) with the text-free prefix on B rows → (2B, C, h, w)."""
    double = lambda x: torch.cat([x, x])  # noqa: E731 - (B, …) → (2B, …): unconditional rows, then conditional
    # 1. Time embedding (one timestep for every row) and conv_in, once per sample
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))  # (B, E)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    hidden = unet.conv_in(sample)  # (B, C0, h, w)
    skips: tuple[torch.Tensor, ...] = (hidden,)
    # 2. Plain down blocks before the first cross-attention, then that block's first resnet, once per sample
    blocks = list(unet.down_blocks)
    while not isinstance(blocks[0], CrossAttnDownBlock2D):
        hidden, states = blocks.pop(0)(hidden_states=hidden, temb=emb)
        if residuals:
            hidden += residuals.pop(0)  # in place, as diffusers does: the last skip state is this tensor
        skips += states
    first = blocks.pop(0)
    hidden = first.resnets[0](hidden, emb)
    # 3. From the first cross-attention on, both halves: (2B, …)
    hidden, emb, skips = double(hidden), double(emb), tuple(double(s) for s in skips)
    text = torch.cat([uncond, cond])  # (2B, L, D)
    residuals = [double(r) for r in residuals]
    hidden, states = _cross_attn_down(first, hidden, emb, text, residuals.pop(0) if residuals else None)
    skips += states
    for block in blocks:
        if isinstance(block, CrossAttnDownBlock2D):
            hidden, states = block(
                hidden_states=hidden,
                temb=emb,
                encoder_hidden_states=text,
                **({"additional_residuals": residuals.pop(0)} if residuals else {}),
            )
        else:
            hidden, states = block(hidden_states=hidden, temb=emb)
            if residuals:
                hidden += residuals.pop(0)
        skips += states
    # 4. Mid block (T2I-Adapter-XL adds a last residual after it)
    if unet.mid_block is not None:
        if getattr(unet.mid_block, "has_cross_attention", False):
            hidden = unet.mid_block(hidden, emb, encoder_hidden_states=text)
        else:
            hidden = unet.mid_block(hidden, emb)
        if residuals and hidden.shape == residuals[0].shape:
            hidden += residuals.pop(0)
    # 5. Up blocks, each taking its skips from the end
    forward_size = any(dim % 2**unet.num_upsamplers for dim in sample.shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if forward_size and i < len(unet.up_blocks) - 1 else None
        if getattr(block, "has_cross_attention", False):
            hidden = block(
                hidden_states=hidden,
                temb=emb,
                res_hidden_states_tuple=res,
                encoder_hidden_states=text,
                upsample_size=size,
            )
        else:
            hidden = block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
    # 6. Output
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)


def _cross_attn_down(
    block: CrossAttnDownBlock2D,
    hidden: torch.Tensor,
    emb: torch.Tensor,
    text: torch.Tensor,
    residual: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """`CrossAttnDownBlock2D.forward` whose first resnet already ran on `hidden`."""
    states: tuple[torch.Tensor, ...] = ()
    for i, (resnet, attn) in enumerate(zip(block.resnets, block.attentions)):
        if i > 0:
            hidden = resnet(hidden, emb)
        hidden = attn(hidden, encoder_hidden_states=text, return_dict=False)[0]
        if i == len(block.resnets) - 1 and residual is not None:
            hidden = hidden + residual
        states += (hidden,)
    for downsampler in block.downsamplers or []:
        hidden = downsampler(hidden)
    if block.downsamplers is not None:
        states += (hidden,)
    return hidden, states
