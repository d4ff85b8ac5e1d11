"""Stage `adapters`: train the textual-inversion, spatial-condition and mask-blending adapters on the
frozen base (stage `ldm`), with teacher-forced conditions from the dataset.

The textual-inversion adapter is told what the trained disentangler hears in each training clip's own
audio (predicted shape, gender and age probabilities, emotion probabilities: `Listener.heard_features`),
not the dataset's labels: generation feeds it exactly these predictions, so it learns to trust them as
far as they are right, and the voice's gender and age reach the generator beyond the geometry.

Per step: a target frame, its mesh, a random same-clip reference and the mouth-masked previous frame;
30 % of samples in variable mode (no reference / neighbour) and 10 % with the plain base prompt, so
classifier-free guidance has an unconditional branch. The diffusion loss weighs the mouth region
`MOUTH_WEIGHT`× more: the mouth is a few percent of the pixels but carries the lip sync, and the
neighbour frame's mouth is masked, so only the mesh can tell the adapter where the lips are.
The blending adapter learns to copy a given background outside the dilated face mask: in training the
background is the target frame itself with the face greyed out (`face_removed`), at inference frame 1's
— so the background of a generated video stays exactly that of its first frame (paper §3.3).

The frozen base is the `ldm` stage's (tiny profile) or, with `--profile sd15 --base-model PATH`, a local
Stable Diffusion 1.5 folder; frames are then as large as the base was built for (512 px for SD 1.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagineid.data.clips import clip_audio, read_mel
from imagineid.data.labels import EMOTIONS
from imagineid.data.store import Store
from imagineid.errors import ImagineIDError, see_docs
from imagineid.listening import heard_identity_dim
from imagineid.media.atomic import atomic_dir
from imagineid.models.ldm import (
    SD15_SECTION,
    LDMComponents,
    image_size,
    load_components,
    load_sd15,
    tiny_adapter_kwargs,
)
from imagineid.models.mask_blending_adapter import (
    MaskBlendingAdapter,
    decode_with_blending,
    face_removed,
)
from imagineid.models.spatial_condition_adapter import SpatialConditionAdapter
from imagineid.models.textual_inversion_adapter import TextualInversionAdapter
from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline
from imagineid.runs.tracking import StageTracker
from imagineid.training.context import StageContext
from imagineid.training.latent_cache import LatentCache, sample_latents
from imagineid.training.ldm import frame_loader, psnr
from imagineid.training.loop import seed_everything
from imagineid.training.voice_bank import VoiceBank

STAGE = "adapters"
VARIABLE_MODE_RATE = 0.3
UNCONDITIONAL_RATE = 0.1
MOUTH_WEIGHT = 4.0


class AdapterBundle(torch.nn.Module):
    """The three trainable adapters as one module, so one optimiser / checkpoint covers them."""

    def __init__(self, textual_inversion, spatial_adapter, blending_adapter) -> None:
        super().__init__()
        self.textual_inversion = textual_inversion
        self.spatial_adapter = spatial_adapter
        self.blending_adapter = blending_adapter


def load_base(ctx: StageContext) -> LDMComponents:
    """The frozen base: the `ldm` stage's (tiny) or the Stable Diffusion 1.5 folder (sd15)."""
    if ctx.config.profile == "sd15":
        if not ctx.config.base_model:
            raise ImagineIDError(f"--profile sd15 needs --base-model PATH ({see_docs(SD15_SECTION)})")
        return load_sd15(ctx.config.base_model).freeze()
    return load_components(ctx.run.stage("ldm")).freeze()


def build_pipeline(ctx: StageContext) -> ImagineIDPipeline:
    base = load_base(ctx)
    token_norm = float(base.text_encoder.get_input_embeddings().weight.norm(dim=-1).mean())
    vae_channels = list(base.vae.config.block_out_channels)
    kwargs = tiny_adapter_kwargs(base.unet, base.vae, in_channels=9)
    torch.manual_seed(ctx.config.seed)
    return ImagineIDPipeline(
        base.unet,
        base.vae,
        base.text_encoder,
        base.tokenizer,
        base.scheduler,
        textual_inversion=TextualInversionAdapter(
            identity_dim=heard_identity_dim(ctx.n_shape),
            emotion_dim=len(EMOTIONS),
            token_dim=base.text_encoder.config.hidden_size,
            token_norm=token_norm,
        ),
        spatial_adapter=SpatialConditionAdapter(
            channels=tuple(kwargs["channels"]),
            num_res_blocks=1,
            downscale_factor=kwargs["downscale_factor"],
            adapter_type=kwargs["adapter_type"],
        ),
        blending_adapter=MaskBlendingAdapter(channels=tuple(reversed(vae_channels))),
    )


def clip_heard_features(
    run: Path, data: Path, clip_ids: list[str], bank: VoiceBank | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """clip_id → (identity, emotion) features the trained disentangler hears in the clip's own audio
    (voice vectors from the run's voice bank where it has the clip, else computed from DATA's waveform)."""
    from imagineid.listening import Listener, Utterance

    listener = Listener.load(run)
    store = Store(data)
    heard = {}
    for clip_id in clip_ids:
        mel = read_mel(store, clip_id)
        if not listener.uses_voice:
            utterance = Utterance(mel, None, None)
        elif bank is not None and bank.path(clip_id).exists():
            utterance = Utterance(mel, bank.get(clip_id).voice[0], None)
        else:
            utterance = listener.prepare(clip_audio(store, clip_id)[0], mel)
        heard[clip_id] = listener.heard_features(utterance)
    return heard


def train_adapters(ctx: StageContext, progress: bool = True) -> dict:
    cfg = ctx.config.stage(STAGE)
    seed_everything(ctx.config.seed + 20)
    pipe = build_pipeline(ctx).to(ctx.device)
    bundle = AdapterBundle(pipe.textual_inversion, pipe.spatial_adapter, pipe.blending_adapter).to(ctx.device)
    base = LDMComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler)
    noise_scheduler, size = base.noise_scheduler(), image_size(base)
    scale = pipe.vae.config.scaling_factor

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        b = len(batch["image"])
        if "posterior" in batch:  # the cached encoder output: no VAE encoder in the step
            z0 = sample_latents(batch["posterior"], scale)  # (B, 4, s, s)
        else:
            with torch.no_grad():
                z0 = pipe.vae.encode(batch["image"]).latent_dist.sample() * scale  # (B, 4, s, s)
        text = pipe.prompt_embeddings(batch["heard_identity"], batch["heard_emotion"])
        plain = torch.rand(b, device=z0.device) < UNCONDITIONAL_RATE
        text = torch.where(plain[:, None, None], pipe.base_embeddings(b, z0.device), text)
        variable = torch.rand(b, device=z0.device) < VARIABLE_MODE_RATE
        features = pipe.spatial_adapter(batch["mesh"], batch["reference"], batch["neighbour"], drop_mask=variable)
        noise = torch.randn_like(z0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), device=z0.device)
        pred = pipe.unet(
            noise_scheduler.add_noise(z0, noise, t),
            t,
            encoder_hidden_states=text,
            down_intrablock_additional_residuals=list(features),
        ).sample
        mouth = F.interpolate(batch["mouth_mask"], size=z0.shape[-2:], mode="area")  # (B, 1, s, s)
        weight = 1.0 + MOUTH_WEIGHT * mouth
        diffusion = (weight * (pred.float() - noise) ** 2).mean() / weight.mean()
        background = face_removed(batch["image"], batch["blend_mask"])
        blended = decode_with_blending(pipe.vae, pipe.blending_adapter, z0 / scale, background, batch["blend_mask"])
        outside = 1.0 - batch["blend_mask"]
        blending = ((blended - batch["image"]).abs() * outside).sum() / (outside.sum() * 3).clamp_min(1.0)
        loss = diffusion + blending
        return loss, {"loss": loss.item(), "diffusion": diffusion.item(), "blending": blending.item()}

    heard = clip_heard_features(ctx.run.root, ctx.data, ctx.split["train"] + ctx.split["val"][:4], ctx.bank)
    latents = None
    if ctx.config.cache_latents:  # rank 0 fills the cache; the other workers read what it wrote
        latents = LatentCache.for_vae(ctx.run, pipe.vae, size)
        if ctx.replica.is_main:
            latents.ensure(Store(ctx.data), ctx.split["train"], progress)
        ctx.replica.barrier()
    loader = frame_loader(
        ctx, ctx.split["train"], cfg.batch_size, ctx.config.seed + 1, image_size=size, heard=heard, latents=latents
    )
    logs = ctx.fit(STAGE, bundle, loader, step, cfg, progress)
    if not ctx.replica.is_main:  # rank 0 saves and validates; the others only trained beside it
        return {}
    for name in ("textual_inversion", "spatial_adapter", "blending_adapter"):
        getattr(pipe, name).save_pretrained(ctx.run.stage(STAGE) / name)
    with atomic_dir(ctx.run.pipeline) as tmp:  # generation never loads a half-saved pipeline
        pipe.eval().save_pretrained(tmp)
    return {**{f"train_{k}": v for k, v in logs.items()}, **validate_adapters(pipe, ctx, heard)}


def invariant_args(batch: dict, steps: int) -> dict:
    """The pipeline's invariant-mode arguments for a batch of FrameConditionDataset items (teacher-forced:
    the true reference, neighbour and mask), as validation and the generator check use them."""
    return dict(
        mesh=batch["mesh"],
        identity=batch["heard_identity"],
        emotion=batch["heard_emotion"],
        reference=batch["reference"],
        neighbour=batch["neighbour"],
        blend_mask=batch["blend_mask"],
        num_inference_steps=steps,
    )


@torch.no_grad()
def validate_adapters(pipe: ImagineIDPipeline, ctx: StageContext, heard: dict, steps: int = 10) -> dict:
    """Invariant-mode generation on held-out frames: background PSNR vs the reference, with and without
    blending, and PSNR of the whole frame vs the true frame."""
    size = image_size(LDMComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler))
    batch = next(iter(frame_loader(ctx, ctx.split["val"][:4], 8, seed=2, image_size=size, heard=heard)))
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    args = invariant_args(batch, steps)
    blended = pipe(**args, generator=torch.Generator().manual_seed(0), paste=False)
    plain = pipe(**args, generator=torch.Generator().manual_seed(0), blend=False, paste=False)
    outside = (batch["blend_mask"] < 0.01).float()
    tracker = StageTracker(ctx.run, STAGE)  # sample frames for TensorBoard: generated above, true below
    tracker.images(ctx.config.stage(STAGE).steps, "validation/invariant_mode", torch.cat([blended, batch["image"]], -2))
    tracker.close()
    return {
        "background_psnr_db": psnr(blended, batch["reference"], outside),
        "background_psnr_no_blending_db": psnr(plain, batch["reference"], outside),
        "frame_psnr_db": psnr(blended, batch["image"]),
    }
