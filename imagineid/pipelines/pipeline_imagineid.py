"""`ImagineIDPipeline`: the frozen latent diffusion base steered by the three ImagineID adapters.

    pipe = ImagineIDPipeline.from_pretrained("RUN/pipeline")
    frames = pipe(mesh, identity, emotion, reference=ref, neighbour=prev, blend_mask=mask, generator=g)

Variable mode (no `reference`): the face comes from the identity / emotion tokens and the mesh only, so
each seed imagines a new person. Invariant mode: reference appearance, the mouth-masked neighbour, and
a background (default: the reference's) fused in by the VAE adapter outside the dilated face mask and
then pasted pixel-exactly under the soft mask (`paste=False` shows the adapter's own result).

Invariant items start denoising from the reference's latent noised to `strength` (SDEdit), not from
pure noise: the frame only has to differ from frame 1 where the mesh says so (mostly the mouth), and
the tiny base no longer re-imagines the whole face every frame (`imagineid.evaluation.generator_check`
compares both). `strength=1` restores pure noise.

Classifier-free guidance goes through `guided_noise`, which runs the UNet's text-free start (before the
first cross-attention) once for both halves: the same prediction for fewer UNet FLOPs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, EulerDiscreteScheduler
from diffusers import __version__ as diffusers_version
from diffusers.utils import BaseOutput

from imagineid.models.guided_unet import guided_noise
from imagineid.models.ldm import (
    LDMComponents,
    load_components,
    save_components,
    vae_scale_factor,
)
from imagineid.models.mask_blending_adapter import (
    MaskBlendingAdapter,
    decode_with_blending,
    face_removed,
    paste_background,
)
from imagineid.models.prompt_encoding import encode_prompt
from imagineid.models.spatial_condition_adapter import SpatialConditionAdapter
from imagineid.models.textual_inversion_adapter import TextualInversionAdapter

BASE_PROMPT = "a photo of a person"
DEFAULT_STRENGTH = 0.8  # where invariant frames start: the reference's latent noised this far (1 = pure noise)
ADAPTERS = {
    "textual_inversion": TextualInversionAdapter,
    "spatial_adapter": SpatialConditionAdapter,
    "blending_adapter": MaskBlendingAdapter,
}


# Schedulers whose `step` depends only on (noise_pred, t, sample): the loop may step a subset of rows at
# a time (invariant rows join late). Multistep solvers (DPM-Solver++, UniPC, PNDM) keep per-step history
# for the whole batch and would mix rows.
ROW_SAFE_SCHEDULERS = (DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler)
OUTPUT_TYPES = ("pt", "np", "pil")


@dataclass
class ImagineIDPipelineOutput(BaseOutput):
    frames: (
        torch.Tensor | np.ndarray | list[PIL.Image.Image]
    )  # (B, 3, H, W) in [-1, 1] | (B, H, W, 3) in [0, 1] | B images


def identity_prompt(tokenizer, n_identity: int, n_emotion: int) -> str:
    ids = " ".join(tokenizer.identity_tokens[:n_identity])
    emos = " ".join(tokenizer.emotion_tokens[:n_emotion])
    return f"a photo of a {ids} person with a {emos} expression"


class ImagineIDPipeline(DiffusionPipeline):
    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler,
        textual_inversion: TextualInversionAdapter,
        spatial_adapter: SpatialConditionAdapter,
        blending_adapter: MaskBlendingAdapter,
    ) -> None:
        super().__init__()
        self.register_modules(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            textual_inversion=textual_inversion,
            spatial_adapter=spatial_adapter,
            blending_adapter=blending_adapter,
        )
        # One call is one frame of every clip in the batch: a step bar per call would flood the log of a
        # job that makes thousands; `set_progress_bar_config(disable=False)` shows it.
        self.set_progress_bar_config(disable=True)

    # -- conditioning shared with training -------------------------------------------------------------

    def prompt_embeddings(self, identity: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Identity / emotion features → prompt hidden states (B, L, D) with the pseudo-words spliced in."""
        ti = self.textual_inversion
        tokens = ti(identity, emotion)
        n_id, n_emo = ti.config.n_identity_tokens, ti.config.n_emotion_tokens
        text = identity_prompt(self.tokenizer, n_id, n_emo)
        ids = self.tokenizer([text])["input_ids"].to(identity.device).expand(len(identity), -1)
        replace = {}
        for k, token in enumerate(self.tokenizer.identity_tokens[:n_id]):
            replace[self.tokenizer.convert_tokens_to_ids(token)] = tokens.identity_tokens[:, k]
        for k, token in enumerate(self.tokenizer.emotion_tokens[:n_emo]):
            replace[self.tokenizer.convert_tokens_to_ids(token)] = tokens.emotion_tokens[:, k]
        return encode_prompt(self.text_encoder, ids, replace)

    def base_embeddings(self, batch: int, device: torch.device) -> torch.Tensor:
        ids = self.tokenizer([BASE_PROMPT])["input_ids"].to(device)
        return encode_prompt(self.text_encoder, ids).expand(batch, -1, -1)

    def latent_shape(self, batch: int, size: int) -> tuple[int, int, int, int]:
        """The initial-noise shape (B, 4, h, w) for frames of `size` px."""
        side = size // vae_scale_factor(self.vae)
        return (batch, self.unet.config.in_channels, side, side)

    @staticmethod
    def invariant_start(steps: int, strength: float) -> int:
        """Index of the first of `steps` DDIM steps that invariant items run (variable items run all)."""
        return min(steps - 1, round(steps * (1.0 - strength)))

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → scaled latents (B, 4, h, w): the posterior mean, deterministic."""
        return self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor

    def decode(
        self,
        latents: torch.Tensor,
        background: torch.Tensor | None,
        mask: torch.Tensor | None,
        blend: bool = True,
        paste: bool = True,
    ) -> torch.Tensor:
        """latents (B, 4, h, w) → fp32 frames (B, 3, H, W); with a background and mask, blended then pasted.

        fp32 whatever autocast computed in (the paste promotes, a plain decode would not): every
        branch of a mixed batch gives the same type."""
        latents = latents / self.vae.config.scaling_factor
        if not blend or background is None or mask is None:
            return self.vae.decode(latents).sample.float()
        frames = decode_with_blending(self.vae, self.blending_adapter, latents, face_removed(background, mask), mask)
        return (paste_background(frames, background, mask) if paste else frames).float()

    # -- generation ------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        mesh: torch.Tensor,
        identity: torch.Tensor,
        emotion: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        neighbour: torch.Tensor | None = None,
        blend_mask: torch.Tensor | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        generator: torch.Generator | None = None,
        blend: bool = True,
        identity_tokens: bool = True,
        conditioning_scale: float = 1.0,
        background: torch.Tensor | None = None,
        paste: bool = True,
        latents: torch.Tensor | None = None,
        variable: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        strength: float = DEFAULT_STRENGTH,
        init_latents: torch.Tensor | None = None,
        output_type: str = "pt",
        return_dict: bool = False,
        callback_on_step_end: Callable[[ImagineIDPipeline, int, torch.Tensor, dict], dict] | None = None,
    ) -> torch.Tensor | np.ndarray | list[PIL.Image.Image] | ImagineIDPipelineOutput:
        """Frames (B, 3, H, W) in [-1, 1]. mesh (B, 3, H, W); identity (B, identity_dim); emotion (B, emotion_dim).

        `background` (B, 3, H, W) defaults to the reference; `latents` (B, 4, h, w) replace the seeded
        initial noise (the batched scheduler draws each clip's noise from its own generator).
        `variable` (B,) bool mixes modes in one batch: True items ignore reference / neighbour /
        background (a clip's first frame next to other clips' later frames). `prompt_embeds` (B, L, D)
        replaces step 2 (a clip's identity / emotion prompt is constant, so callers may cache it).
        `strength` in (0, 1]: invariant items skip the first (1 - strength) of the steps and start from
        the noised `init_latents` (B, 4, h, w) (default: `encode_latents(reference)`; callers may cache
        them, frame 1 does not change); variable items always run every step from pure noise.
        `blend`, `paste`, `identity_tokens` and `conditioning_scale` switch parts off for ablations.
        `output_type` "pt" (default: a tensor, as the batcher wants), "np" or "pil"; `return_dict` wraps
        the frames in an `ImagineIDPipelineOutput`. `callback_on_step_end(pipe, i, t, {"latents": ...})`
        runs after every step; the dict it returns may replace "latents".
        """
        # 1. Check inputs
        b, _, h, w = mesh.shape
        if identity.shape[0] != b:
            raise ValueError(f"identity has batch {identity.shape[0]}, mesh has {b}")
        if reference is None and (neighbour is not None or blend_mask is not None):
            raise ValueError(
                "neighbour / blend_mask need a reference (invariant mode); pass none of them for variable mode"
            )
        if variable is not None and variable.shape != (b,):
            raise ValueError(f"variable must be ({b},) bool, got {tuple(variable.shape)}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if not isinstance(self.scheduler, ROW_SAFE_SCHEDULERS):
            raise ValueError(
                f"{type(self.scheduler).__name__} keeps multistep state for the whole batch; this pipeline steps "
                f"row subsets (invariant rows start late): use one of "
                f"{', '.join(k.__name__ for k in ROW_SAFE_SCHEDULERS)}"
            )
        device = mesh.device
        # 2. Encode the prompt (conditional and, for guidance, the plain base prompt)
        if prompt_embeds is not None:
            cond = prompt_embeds
        else:
            cond = self.prompt_embeddings(identity, emotion) if identity_tokens else self.base_embeddings(b, device)
        uncond = self.base_embeddings(b, device) if guidance_scale > 1 else None
        # 3. Spatial condition features (mesh + reference + masked neighbour; dropped for variable items)
        features = self.spatial_adapter(
            mesh, reference, neighbour, drop_mask=variable, conditioning_scale=conditioning_scale
        )
        # 4. Prepare timesteps and latents: pure noise, or the noised reference for invariant items
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = self.latent_shape(b, h)
        if latents is None:
            latents = torch.randn(shape, generator=generator, device="cpu").to(device)
        elif latents.shape != shape:
            raise ValueError(f"latents must be {shape}, got {tuple(latents.shape)}")
        noise = latents.to(device)
        latents = noise * self.scheduler.init_noise_sigma
        start = self.invariant_start(len(timesteps), strength)
        early: slice | torch.Tensor = slice(None)  # the rows that run the first `start` steps
        if reference is not None and start > 0:
            late = torch.ones(b, dtype=torch.bool, device=device) if variable is None else ~variable  # (B,)
            if bool(late.any()):
                clean = self.encode_latents(reference[late]) if init_latents is None else init_latents[late].to(device)
                latents[late] = self.scheduler.add_noise(clean, noise[late], timesteps[start : start + 1])
                early = (~late).nonzero()[:, 0]
        # 5. Denoising loop; before `start` only the early rows (the UNet pops from the residual list:
        #    give it a fresh one every step)
        for i, t in enumerate(self.progress_bar(timesteps)):
            rows = early if i < start else slice(None)
            if isinstance(rows, torch.Tensor) and rows.numel() == 0:
                continue
            x, text = latents[rows], cond[rows]
            residuals = [f[rows] for f in features]
            if guidance_scale > 1:  # the text-free start of the UNet runs once for both halves
                noise_pred = guided_noise(self.unet, x, t, text, uncond[rows], residuals, guidance_scale)
            else:
                noise_pred = self.unet(
                    x, t, encoder_hidden_states=text, down_intrablock_additional_residuals=residuals
                ).sample
            latents[rows] = self.scheduler.step(noise_pred, t, latents[rows]).prev_sample
            if callback_on_step_end is not None:
                latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)
        # 6. Decode, blending the background (default: the reference's) in outside the face mask;
        # 7. the frames in the asked-for output type
        background = reference if background is None else background
        if variable is None or not bool(variable.any()):
            return self._output(
                self.decode(latents, background, blend_mask, blend, paste).clamp(-1, 1), output_type, return_dict
            )
        keep = ~variable
        first = self.decode(latents[variable], None, None)  # variable items: no background to keep
        frames = first.new_empty((b, *first.shape[1:]))  # (B, 3, H, W)
        frames[variable] = first
        if bool(keep.any()):
            frames[keep] = self.decode(
                latents[keep],
                None if background is None else background[keep],
                None if blend_mask is None else blend_mask[keep],
                blend,
                paste,
            )
        return self._output(frames.clamp(-1, 1), output_type, return_dict)

    @staticmethod
    def _output(frames: torch.Tensor, output_type: str, return_dict: bool):
        """frames (B, 3, H, W) in [-1, 1] → the asked-for type (step 7 of `__call__`)."""
        if output_type != "pt":
            array = ((frames + 1) / 2).permute(0, 2, 3, 1).cpu().float().numpy()  # (B, H, W, 3) in [0, 1]
            frames = (
                array
                if output_type == "np"
                else [PIL.Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]
            )
        return ImagineIDPipelineOutput(frames=frames) if return_dict else frames

    # -- persistence: one subfolder per part ---------------------------------------------------------

    def save_pretrained(self, folder: str | Path, **_: object) -> Path:
        folder = Path(folder)
        save_components(LDMComponents(self.unet, self.vae, self.text_encoder, self.tokenizer, self.scheduler), folder)
        for name in ADAPTERS:
            getattr(self, name).save_pretrained(folder / name)
        (folder / "model_index.json").write_text(json.dumps(self.model_index(), indent=2))
        return folder

    def model_index(self) -> dict:
        """diffusers' model_index.json: the pipeline class and, per component, [library, class]."""
        index = {"_class_name": type(self).__name__, "_diffusers_version": diffusers_version}
        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", *ADAPTERS):
            klass = type(getattr(self, name))
            library = klass.__module__.split(".")[0]
            index[name] = [library if library in ("diffusers", "transformers") else klass.__module__, klass.__name__]
        return index

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> ImagineIDPipeline:
        """Load a saved pipeline from local files (safetensors only); `torch_dtype` casts every network,
        `device` moves them. Unknown keyword arguments are an error, never silently dropped."""
        folder = Path(folder)
        base = load_components(folder)
        adapters = {
            name: klass.from_pretrained(folder / name, use_safetensors=True) for name, klass in ADAPTERS.items()
        }
        pipe = cls(base.unet, base.vae, base.text_encoder, base.tokenizer, base.scheduler, **adapters).eval()
        return pipe.to(device=device, dtype=torch_dtype) if (device or torch_dtype) else pipe

    def eval(self) -> ImagineIDPipeline:
        for name in ("unet", "vae", "text_encoder", *ADAPTERS):
            getattr(self, name).eval()
        return self
