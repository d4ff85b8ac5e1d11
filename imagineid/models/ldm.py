"""The frozen latent-diffusion base of the frame generator (docs/architecture.md §1 "Imagining", §4 "LDM" row).

Two profiles give the same `LDMComponents` (unet, vae, text_encoder, tokenizer, scheduler):

- paper scale: `load_sd15(folder)` — a local Stable Diffusion 1.5 folder in the diffusers layout, its
  CLIPTokenizer extended by the textual-inversion pseudo-words (`clip_tokenizer.py`); frames are
  `image_size(components)` px: the UNet's sample size × the VAE factor (64 × 8 = 512 for SD 1.5);
- offline: `build_tiny(image_size=64)` — a small UNet / VAE / CLIP text encoder from configs and the
  shipped `WordTokenizer`; pretrained on the corpus (stage 0), then stored with `save_components` and
  reloaded frozen with `load_components`.

Tiny geometry at 64 px (VAE factor 4 → 16×16×4 latents). As in SDXL, the UNet has no attention at its
highest resolution: down blocks (Down, CrossAttnDown, CrossAttnDown; channels 32, 64, 64; attention
over 8×8 and 4×4 tokens, 2 heads of dim 32). Self-attention over 256 tokens with 8 heads of dim 4 was a third of
the UNet's time and scaled badly with batch size (batch 32 vs 2: 2.9× cheaper per sample; now 5.1×),
which capped continuous batching. The down blocks take `down_intrablock_additional_residuals` of
shapes (B, 32, 8, 8) (a plain down block adds its residual after downsampling), (B, 64, 8, 8),
(B, 64, 4, 4) — exactly what `T2IAdapter(in_channels=C, channels=[32, 64, 64], num_res_blocks=1,
downscale_factor=8, adapter_type="full_adapter_xl")` yields on a (B, C, 64, 64) image (see
`tiny_adapter_kwargs`; SD 1.5's layout gets a plain "full_adapter").

    python -c "from imagineid.models.ldm import build_tiny; print(build_tiny())"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from imagineid.errors import MissingWeightsError, see_docs
from imagineid.models.clip_tokenizer import PseudoWordCLIPTokenizer, add_pseudo_words
from imagineid.models.word_tokenizer import WordTokenizer

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SD15_SECTION = "Stable Diffusion 1.5"

# Stable Diffusion 1.5's training noise schedule; the tiny profile uses it too.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}


@dataclass
class LDMComponents:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: WordTokenizer | CLIPTokenizer
    scheduler: DDIMScheduler  # sampling; training uses `noise_scheduler()`

    @property
    def noise_scheduler_config(self) -> dict:
        """DDPMScheduler arguments with the same noise schedule as `scheduler` (for training)."""
        config = self.scheduler.config
        return {k: config[k] for k in (*SD_SCHEDULE, "trained_betas", "steps_offset") if k in config}

    def noise_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(**self.noise_scheduler_config)

    def freeze(self) -> LDMComponents:
        """eval() and requires_grad_(False) on unet, vae and text_encoder; returns self."""
        for module in (self.unet, self.vae, self.text_encoder):
            module.eval().requires_grad_(False)
        return self

    def to(self, device=None, dtype=None) -> LDMComponents:
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device, dtype=dtype)
        return self


def vae_scale_factor(vae: AutoencoderKL) -> int:
    """Pixel size / latent size: 2 ** (number of VAE blocks - 1) — 8 for SD 1.5, 4 for the tiny VAE."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def image_size(components: LDMComponents) -> int:
    """Frame size in pixels the base was built for: UNet sample size × VAE factor (512 for SD 1.5)."""
    return int(components.unet.config.sample_size) * vae_scale_factor(components.vae)


def unet_down_shapes(unet: UNet2DConditionModel, latent_size: int) -> list[tuple[int, int, int]]:
    """(channels, height, width) each down block expects in `down_intrablock_additional_residuals`.

    A CrossAttnDownBlock2D adds its residual before its downsampler; a plain DownBlock2D after it.
    """
    shapes, size = [], latent_size
    for index, (kind, channels) in enumerate(zip(unet.config.down_block_types, unet.config.block_out_channels)):
        downsample = index < len(unet.config.down_block_types) - 1
        if kind.startswith("CrossAttn"):
            shapes.append((channels, size, size))
        else:
            shapes.append(
                (
                    channels,
                    size // 2 if downsample else size,
                    size // 2 if downsample else size,
                )
            )
        size = size // 2 if downsample else size
    return shapes


def tiny_adapter_kwargs(unet: UNet2DConditionModel, vae: AutoencoderKL, in_channels: int) -> dict:
    """`diffusers.T2IAdapter` arguments whose features match `unet`'s down blocks.

    SD 1.5 layout (attention from the first block): "full_adapter", one feature per latent scale.
    SDXL layout (a plain first block, whose residual lands after its downsampler): "full_adapter_xl",
    whose first two features share the half-latent scale.
    """
    plain_first = not unet.config.down_block_types[0].startswith("CrossAttn")
    return {
        "in_channels": in_channels,
        "channels": list(unet.config.block_out_channels),
        "num_res_blocks": 1,
        "downscale_factor": vae_scale_factor(vae) * (2 if plain_first else 1),
        "adapter_type": "full_adapter_xl" if plain_first else "full_adapter",
    }


def build_tiny(image_size: int = 64, seed: int = 0, num_pseudo_tokens: int = 4) -> LDMComponents:
    """Randomly initialised tiny UNet / VAE / CLIP text encoder + WordTokenizer + DDIM (SD 1.5 schedule)."""
    if image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16 (VAE factor 4 × UNet factor 4), got {image_size}")
    tokenizer = WordTokenizer(num_pseudo_tokens=num_pseudo_tokens, model_max_length=16)

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=image_size,
        scaling_factor=1.0,  # stage 0 should set 1 / std(latents) with vae.register_to_config(scaling_factor=...)
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=image_size // vae_scale_factor(vae),
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=2,  # diffusers reads this as the number of heads: 2 heads of dim 32 at 64 channels
        norm_num_groups=32,
    )

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            projection_dim=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )

    scheduler = DDIMScheduler(**SD_SCHEDULE, set_alpha_to_one=False, steps_offset=1)
    return LDMComponents(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
    )


def save_components(components: LDMComponents, folder: str | Path) -> Path:
    """Each part's `save_pretrained` into `folder/{unet,vae,text_encoder,tokenizer,scheduler}`."""
    folder = Path(folder)
    for part in PARTS:
        getattr(components, part).save_pretrained(folder / part)
    return folder


def _tokenizer_class(folder: Path) -> str | None:
    config = folder / "tokenizer_config.json"
    return json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None


def _load_tokenizer(folder: Path) -> WordTokenizer | CLIPTokenizer:
    """The tokenizer `save_components` wrote: ours by the class its config names, else a CLIPTokenizer."""
    name = _tokenizer_class(folder)
    if name == WordTokenizer.tokenizer_class:
        return WordTokenizer.from_pretrained(folder)
    klass = PseudoWordCLIPTokenizer if name == PseudoWordCLIPTokenizer.__name__ else CLIPTokenizer
    return klass.from_pretrained(folder, local_files_only=True)


def _check_folder(folder: Path, required: dict[str, tuple[str, ...]], what: str, hint: str = "") -> None:
    """Raises MissingWeightsError listing each subfolder lacking all of its alternative files."""
    hint = f" ({hint})" if hint else ""
    if not folder.is_dir():
        raise MissingWeightsError(f"{what} folder not found: {folder}{hint}")
    missing = [
        f"{folder / part}/{' or '.join(names)}"
        for part, names in required.items()
        if not any((folder / part / name).is_file() for name in names)
    ]
    if missing:
        raise MissingWeightsError(f"{what} folder {folder} is incomplete; missing: " + "; ".join(missing) + hint)


_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_SD15_FILES = {
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("vocab.json",),
    "scheduler": ("scheduler_config.json",),
}
_SD15_WEIGHTS = {
    "unet": _WEIGHTS,
    "vae": _WEIGHTS,
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
    "tokenizer": ("merges.txt",),
}


def _load_parts(folder: Path, tokenizer, safetensors_only: bool = False) -> LDMComponents:
    """safetensors_only: our own saved folders (RUN) never fall back to pickled `.bin` weights."""
    kwargs = {"local_files_only": True, **({"use_safetensors": True} if safetensors_only else {})}
    return LDMComponents(
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", **kwargs),
        vae=AutoencoderKL.from_pretrained(folder / "vae", **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", **kwargs),
        tokenizer=tokenizer,
        # SD 1.5 ships a PNDM config; DDIM reads the same schedule from it
        scheduler=DDIMScheduler.from_pretrained(folder / "scheduler", **kwargs),
    )


_SD15_LAYOUT = "unet/ vae/ text_encoder/ tokenizer/ scheduler/"
_SD15_HINT = f"download it beforehand, diffusers layout: {_SD15_LAYOUT}; {see_docs(SD15_SECTION)}"


def check_sd15(path: str | Path) -> Path:
    """Every file `load_sd15` needs is there (cheap: run it before long work); returns the folder."""
    folder = Path(path).expanduser()
    _check_folder(folder, _SD15_FILES, "Stable Diffusion 1.5", _SD15_HINT)
    _check_folder(folder, _SD15_WEIGHTS, "Stable Diffusion 1.5", _SD15_HINT)
    return folder


def load_sd15(path: str | Path) -> LDMComponents:
    """Stable Diffusion 1.5 from a local diffusers-layout folder (never downloads), its tokenizer and text
    encoder extended by the pseudo-words of the textual-inversion adapter (`clip_tokenizer.py`)."""
    folder = check_sd15(path)
    tokenizer = PseudoWordCLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    if len(tokenizer) < 1000:  # an offline CLIPTokenizer() silently holds 2 tokens
        raise MissingWeightsError(
            f"CLIPTokenizer from {folder / 'tokenizer'} has only {len(tokenizer)} tokens; "
            f"the SD 1.5 vocab.json / merges.txt there are not the real ones ({_SD15_HINT})"
        )
    try:
        components = _load_parts(folder, tokenizer)
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise MissingWeightsError(
            f"could not load Stable Diffusion 1.5 from {folder}: {first} ({_SD15_HINT})"
        ) from error
    if tokenizer.model_max_length > 10_000:  # no tokenizer_config.json: transformers' "unlimited" sentinel
        tokenizer.model_max_length = components.text_encoder.config.max_position_embeddings
    add_pseudo_words(tokenizer, components.text_encoder)
    return components


def load_components(folder: str | Path) -> LDMComponents:
    """Reload what `save_components` wrote (either profile: the tokenizer's config names its class)."""
    folder = Path(folder).expanduser()
    required = {
        "unet": _WEIGHTS[:1],
        "vae": _WEIGHTS[:1],
        "text_encoder": ("model.safetensors",),
        "tokenizer": ("vocab.json", "tokenizer.json"),
        "scheduler": ("scheduler_config.json",),
    }
    _check_folder(folder, required, "saved LDM components")
    return _load_parts(folder, _load_tokenizer(folder / "tokenizer"), safetensors_only=True)
