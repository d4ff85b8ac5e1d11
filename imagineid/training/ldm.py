"""Stage `ldm` (tiny profile): pretrain the latent-diffusion base on the dataset's face crops.

1. the VAE learns to reconstruct crops (L1 + MSE + a small KL), then its latent scale is set to 1/std;
2. with the VAE frozen, the UNet learns to denoise latents conditioned on a generic prompt.
Afterwards the base is frozen for good: the `adapters` stage only trains the three adapters.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imagineid.data.store import Store
from imagineid.models.ldm import LDMComponents, build_tiny, save_components
from imagineid.models.prompt_encoding import encode_prompt
from imagineid.training.context import StageContext
from imagineid.training.frame_data import (
    FrameConditionDataset,
    FrameStream,
    clip_rows,
    decoded_bytes,
    stream_segment,
)
from imagineid.training.latent_cache import LatentCache
from imagineid.training.loop import seed_everything

STAGE = "ldm"
BASE_PROMPT = "a photo of a person"


def frame_loader(
    ctx: StageContext,
    clip_ids: list[str],
    batch_size: int,
    seed: int,
    image_size: int | None = None,
    heard: dict | None = None,
    latents: LatentCache | None = None,
) -> torch.utils.data.DataLoader:
    """Frames at `image_size` px (default: the config's, the tiny profile's size): every clip decoded into
    memory when they fit in `frame_memory_mb`, else streamed through a buffer that fits the same budget
    (`FrameStream`, segments shortened at large sizes), decoded by `loader_workers` DataLoader processes
    beside the training step."""
    size = image_size or ctx.config.image_size
    frames = sum(r["n_frames"] for r in clip_rows(Store(ctx.data), clip_ids))
    workers = ctx.config.loader_workers
    options = {"num_workers": workers, "persistent_workers": workers > 0}
    if decoded_bytes(frames, size) <= ctx.config.frame_memory_mb * 2**20:
        dataset = FrameConditionDataset(
            ctx.data, clip_ids, ctx.morphable, size, seed=seed, heard=heard, latents=latents
        )
        generator = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator, **options
        )
    segment = stream_segment(size, ctx.config.frame_memory_mb)
    stream = FrameStream(
        ctx.data, clip_ids, ctx.morphable, size, seed=seed, heard=heard, segment=segment, latents=latents
    )
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, drop_last=True, **options)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [-1, 1] (optionally only where mask > 0.5)."""
    err = ((a - b) / 2) ** 2
    if mask is not None:
        keep = (mask > 0.5).expand_as(err)
        err = err[keep]
    mse = float(err.mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def prompt_embeddings(components: LDMComponents, prompt: str, device: torch.device) -> torch.Tensor:
    ids = components.tokenizer([prompt])["input_ids"].to(device)
    with torch.no_grad():
        return encode_prompt(components.text_encoder, ids)  # (1, L, D)


def train_ldm(ctx: StageContext, progress: bool = True) -> dict:
    cfg = ctx.config.stage(STAGE)
    seed_everything(ctx.config.seed + 10)
    components = build_tiny(ctx.config.image_size, seed=ctx.config.seed)
    device = ctx.device
    loader = frame_loader(ctx, ctx.split["train"], cfg.batch_size, ctx.config.seed)

    # 1. VAE
    vae = components.vae.to(device)

    def vae_step(batch: dict) -> tuple[torch.Tensor, dict]:
        image = batch["image"]  # (B, 3, S, S)
        posterior = vae.encode(image).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.l1_loss(recon, image) + F.mse_loss(recon, image)
        loss = rec + 1e-6 * posterior.kl().mean()
        return loss, {"vae_loss": loss.item()}

    vae_logs = ctx.fit(f"{STAGE}/vae", vae, loader, vae_step, cfg, progress)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(b["image"].to(device)).latent_dist.mean for _, b in zip(range(8), loader)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))

    # 2. UNet on frozen VAE latents, generic prompt
    unet = components.unet.to(device)
    components.text_encoder.to(device).eval().requires_grad_(False)
    text = prompt_embeddings(components, BASE_PROMPT, device)
    noise_scheduler = components.noise_scheduler()
    scale = vae.config.scaling_factor

    def unet_step(batch: dict) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            z0 = vae.encode(batch["image"]).latent_dist.sample() * scale  # (B, 4, s, s)
        noise = torch.randn_like(z0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(z0),), device=z0.device)
        pred = unet(
            noise_scheduler.add_noise(z0, noise, t), t, encoder_hidden_states=text.expand(len(z0), -1, -1)
        ).sample
        loss = F.mse_loss(pred.float(), noise)
        return loss, {"unet_loss": loss.item()}

    unet_logs = ctx.fit(f"{STAGE}/unet", unet, loader, unet_step, cfg, progress)
    if not ctx.replica.is_main:  # rank 0 saves and validates; the others only trained beside it
        return {}
    components.freeze()
    save_components(components, ctx.run.stage(STAGE))
    return {**{f"train_{k}": v for k, v in {**vae_logs, **unet_logs}.items()}, **validate_ldm(components, ctx)}


@torch.no_grad()
def validate_ldm(components: LDMComponents, ctx: StageContext) -> dict:
    """VAE reconstruction PSNR on held-out speakers' frames."""
    loader = frame_loader(ctx, ctx.split["val"][:4], 16, seed=1)
    batch = next(iter(loader))
    image = batch["image"].to(ctx.device)
    recon = components.vae.decode(components.vae.encode(image).latent_dist.mean).sample
    return {"vae_psnr_db": psnr(recon, image)}
