"""Spatial condition adapter of the imagining stage (docs/architecture.md §1): where the face is and how it moves.

A T2I-Adapter (diffusers `T2IAdapter`) over the channel concatenation of
  mesh        (B, 3, H, W)   the 3DMM mesh rendered from the audio-predicted coefficients,
  reference   (B, 3, H, W)   a reference frame of the clip (appearance, background),
  neighbours  (B, 3·N, H, W) N neighbouring frames with the mouth masked out (`mask_mouth`),
all in [-1, 1]. Its multi-scale features are added to the frozen UNet's encoder:

    adapter = SpatialConditionAdapter(channels=(32, 64, 64), downscale_factor=4)
    feats = adapter(mesh, reference, neighbours, drop_mask=variable_mode)
    unet(latents, t, text, down_intrablock_additional_residuals=list(feats))  # the UNet pops from it

With "full_adapter", feature k has channels[k] channels at (H, W) / (downscale_factor · 2^k): with a
factor-4 VAE and downscale_factor=4 they match each SD 1.5-style down block's resolution (64 px → 16,
8, 4). "full_adapter_xl" (SDXL layout, a plain first down block) gives the first two features at
(H, W) / downscale_factor and the third at half that (downscale_factor=8: 8, 8, 4), as the tiny UNet
wants (`ldm.tiny_adapter_kwargs`). `channels` must equal the UNet's `block_out_channels`.
`drop_mask` (B,) True zeroes the reference and neighbour channels: the *variable* mode of the first
frame (no reference yet) and the classifier-free-guidance dropout of those conditions.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.adapter import T2IAdapter
from diffusers.models.modeling_utils import ModelMixin


def mask_mouth(frames: torch.Tensor, mouth_mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """frames (B, 3, H, W) in [-1, 1], mouth_mask (B, 1, H, W) in [0, 1] → mouth filled with grey `fill`."""
    if mouth_mask.shape[0] != frames.shape[0] or mouth_mask.shape[-2:] != frames.shape[-2:] or mouth_mask.shape[1] != 1:
        raise ValueError(
            f"mouth_mask must be ({frames.shape[0]}, 1, *{tuple(frames.shape[-2:])}), got {tuple(mouth_mask.shape)}"
        )
    m = mouth_mask.to(frames.dtype)
    return frames * (1.0 - m) + fill * m


class SpatialConditionAdapter(ModelMixin, ConfigMixin):
    """mesh + reference + mouth-masked neighbours → T2I-Adapter features for the UNet encoder."""

    @register_to_config
    def __init__(
        self,
        n_neighbours: int = 1,
        channels: tuple[int, ...] = (32, 64, 64),
        num_res_blocks: int = 2,
        downscale_factor: int = 4,
        adapter_type: str = "full_adapter",
    ):
        super().__init__()
        channels = list(channels)
        if adapter_type in ("full_adapter", "full_adapter_xl"):
            if adapter_type == "full_adapter_xl" and len(channels) != 3:
                raise ValueError(f"full_adapter_xl builds 3 levels here, got channels={channels}")
            t2i_channels = channels
        elif adapter_type == "light_adapter":
            # LightAdapter appends one more down block with channels[-1]: pass all but the last level.
            if len(channels) < 2 or channels[-1] != channels[-2]:
                raise ValueError(f"light_adapter needs channels[-1] == channels[-2], got channels={channels}")
            t2i_channels = channels[:-1]
        else:
            raise ValueError(
                f"adapter_type must be 'full_adapter', 'full_adapter_xl' or 'light_adapter', got {adapter_type!r}"
            )
        self.in_channels = 3 * (2 + n_neighbours)  # mesh + reference + N neighbours
        self.adapter = T2IAdapter(
            in_channels=self.in_channels,
            channels=t2i_channels,
            num_res_blocks=num_res_blocks,
            downscale_factor=downscale_factor,
            adapter_type=adapter_type,
        )

    @property
    def total_downscale_factor(self) -> int:
        """Input side / smallest feature side; H and W must be multiples of it."""
        return self.adapter.total_downscale_factor

    def build_condition(
        self,
        mesh: torch.Tensor,
        reference: torch.Tensor | None = None,
        neighbours: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The adapter input (B, 3 + 3 + 3N, H, W); missing or dropped reference/neighbours are zeros."""
        b, _, h, w = mesh.shape
        n = self.config.n_neighbours
        if mesh.shape[1] != 3:
            raise ValueError(f"mesh must be (B, 3, H, W), got {tuple(mesh.shape)}")
        if reference is None:
            reference = mesh.new_zeros(b, 3, h, w)
        if neighbours is None:
            neighbours = mesh.new_zeros(b, 3 * n, h, w)
        if reference.shape != (b, 3, h, w) or neighbours.shape != (b, 3 * n, h, w):
            raise ValueError(
                f"expected reference {(b, 3, h, w)} and neighbours {(b, 3 * n, h, w)}, "
                f"got {tuple(reference.shape)} and {tuple(neighbours.shape)}"
            )
        context = torch.cat([reference, neighbours], dim=1)  # (B, 3 + 3N, H, W)
        if drop_mask is not None:
            if drop_mask.shape != (b,):
                raise ValueError(f"drop_mask must be ({b},), got {tuple(drop_mask.shape)}")
            context = context * (~drop_mask.bool()).to(context.dtype).view(b, 1, 1, 1)
        return torch.cat([mesh, context], dim=1)  # (B, 3 + 3 + 3N, H, W)

    def forward(
        self,
        mesh: torch.Tensor,
        reference: torch.Tensor | None = None,
        neighbours: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> list[torch.Tensor]:
        """→ [(B, channels[k], H / (d·2^k), W / (d·2^k))] for k = 0..len(channels)-1, times conditioning_scale."""
        x = self.build_condition(mesh, reference, neighbours, drop_mask)
        f = self.total_downscale_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"H and W must be multiples of total_downscale_factor={f}, got {tuple(x.shape[-2:])}")
        return [feat * conditioning_scale for feat in self.adapter(x)]
