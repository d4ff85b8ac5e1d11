"""GPU benchmark of the frame generator and the training stages at paper scale; prints JSON (issue 23).

    .venv-gpu/bin/python benchmarks/gpu_bench.py [--device cuda] [--json-out FILE] [--budget-s 240]
    .venv/bin/python benchmarks/gpu_bench.py --quick --device cpu      # CPU smoke run at tiny sizes

`benchmarks/gpu_check.sh` sets up a GPU machine and runs this. Nothing is downloaded: every model is
built from its config with random weights, at its real size (timings do not depend on the weights).

- peak: a large bf16 matmul (8192³) measured on the device, beside a datasheet value chosen by
  `torch.cuda.get_device_name()` (H100 SXM / H200: 989 TFLOP/s dense bf16);
- generation: an SD 1.5-architecture pipeline (UNet2DConditionModel, AutoencoderKL, CLIPTextModel from
  the standard SD 1.5 configs), 512 px, our own loop: text encoder → latents → 20 DDIM steps with
  classifier-free guidance (the UNet runs on 2B rows) → VAE decode. frames/s at B = 1, 8, 32 in fp16 and
  bf16 (modules cast, no autocast), peak GPU memory, and the UNet's achieved FLOP/s (FLOPs counted once
  per shape with FlopCounterMode, divided by the measured time of an isolated UNet call) as a fraction
  of the measured and of the datasheet peak;
- attention: which attention processor the UNet has, the SDPA backends (flash, efficient, cuDNN,
  math) one by one, and SDPA against diffusers' classic `AttnProcessor` (B = 8);
- channels_last against the default memory format (UNet call, B = 32 bf16);
- compile: `torch.compile` (default mode "reduce-overhead"; `--compile-mode`) of the fixed-shape UNet
  call against eager, B = 32 bf16, and a compiled generation; it runs in a child process with its own
  timeout, so a slow or failing compile is reported, never fatal;
- adapters_step: one training step of the adapters stage at 512 px, batch 4, bf16 autocast, AdamW over
  the adapters only: the spatial-condition adapter (the project's `SpatialConditionAdapter`, a diffusers
  T2IAdapter "full_adapter" over mesh + reference + masked neighbour, 9 channels) feeding the frozen
  UNet through `down_intrablock_additional_residuals`, forward + backward; then the same with the
  mask-blending adapter's decode (`decode_with_blending`, gradients through the VAE decoder) as the
  stage does;
- disentangler: steps/s of the identity, content and emotion stages: the project's models with the
  stages' default configs on random batches of the shapes their training uses, through the project's
  own training loop (`training.loop.fit`: AdamW, fp16 autocast + GradScaler on CUDA).

Each section is reported on its own (an "error" or "skipped" key instead of its figures); the JSON is
rewritten after every section, so a run cut short by a timeout still leaves what it measured.
`--quick` shrinks everything (64 px, B = 1, 2 steps, fp32, tiny configs, no compile) so the code path
runs on a CPU in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: `imagineid` from this checkout
    sys.path.insert(0, str(ROOT))

SECTIONS = ("peak", "generation", "attention", "channels_last", "adapters_step", "disentangler", "compile")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Stable Diffusion 1.5's published configs (runwayml/stable-diffusion-v1-5: unet, vae, text_encoder).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_CLIP = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# --quick: the same architecture (4 levels, attention in the first three) at toy widths, 64 px.
TINY_UNET = {
    **SD15_UNET,
    "sample_size": 8,
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
}
TINY_VAE = {**SD15_VAE, "block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "sample_size": 64}
TINY_CLIP = {
    **SD15_CLIP,
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s: (name test, value).
PEAK_TABLE = [
    (("H200", "NVL"), 835.0, "H200 NVL"),
    (("H200",), 989.0, "H200 SXM"),
    (("H100", "PCIE"), 756.0, "H100 PCIe"),
    (("H100", "NVL"), 835.0, "H100 NVL"),
    (("H100",), 989.0, "H100 SXM"),
    (("GH200",), 989.0, "GH200"),
    (("A100",), 312.0, "A100"),
    (("L40S",), 362.0, "L40S"),
    (("L4",), 121.0, "L4"),
]


def table_peak(name: str) -> tuple[float | None, str | None]:
    """Datasheet dense bf16 TFLOP/s for a `torch.cuda.get_device_name()`, e.g. 'NVIDIA H100 80GB HBM3' → 989."""
    upper = name.upper()
    for words, tflops, label in PEAK_TABLE:
        if all(w in upper for w in words):
            return tflops, label
    return None, None


# -- timing helpers -----------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, reps: int, warmup: int = 1) -> float:
    """Mean seconds of fn() over `reps` calls after `warmup` calls (device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / reps


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sig(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant digits (CPU smoke figures are tiny, GPU ones large)."""
    return float(f"{x:.{digits}g}")


def short_error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text if len(text) < 600 else text[:600] + " …"


# -- models -------------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    quick: bool
    unet: dict
    vae: dict
    clip: dict
    size: int  # pixels
    steps: int
    batches: list[int]
    dtypes: list[str]
    guidance: float = 7.5
    vae_chunk: int = 8
    text_len: int = 77
    train_batch: int = 4
    train_steps: int = 5
    disentangler_batch: int = 32
    disentangler_steps: int = 30
    extra: dict = field(default_factory=dict)

    @property
    def latent(self) -> int:
        return self.unet["sample_size"]


@dataclass
class Models:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module

    def to(self, dtype: torch.dtype) -> Models:
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(dtype=dtype)
        return self


def build_models(
    sizes: Sizes,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    parts: tuple[str, ...] = ("unet", "vae", "text_encoder"),
) -> Models:
    """Random-weight UNet / VAE / CLIP text encoder from configs, created directly on `device` (no
    download, no CPU-side init of 1 B parameters); eval mode, frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    makers = {
        "unet": lambda: UNet2DConditionModel(**sizes.unet),
        "vae": lambda: AutoencoderKL(**sizes.vae),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**sizes.clip)),
    }
    built = {}
    for name in ("unet", "vae", "text_encoder"):
        if name not in parts:
            built[name] = None
            continue
        torch.manual_seed(seed)
        try:
            with torch.device(device):
                module = makers[name]()
        except Exception:  # noqa: BLE001 - a constructor that dislikes a default device: build on the CPU
            module = makers[name]()
        built[name] = module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Models(**built)


def ddim(steps: int, device: torch.device):
    from diffusers import DDIMScheduler

    from imagineid.models.ldm import SD_SCHEDULE

    scheduler = DDIMScheduler(**SD_SCHEDULE, set_alpha_to_one=False, steps_offset=1)  # SD 1.5's sampler config
    scheduler.set_timesteps(steps, device=device)
    return scheduler


@torch.inference_mode()
def unet_inputs(sizes: Sizes, rows: int, device: torch.device, dtype: torch.dtype) -> tuple:
    """(latents (rows, 4, s, s), timestep (), text (rows, 77, D)) for one UNet call: inference tensors, like
    those `generate` makes, so a compiled UNet is not recompiled between the two (dispatch-key guard)."""
    g = torch.Generator(device="cpu").manual_seed(1)
    lat = torch.randn(rows, sizes.unet["in_channels"], sizes.latent, sizes.latent, generator=g)
    text = torch.randn(rows, sizes.text_len, sizes.unet["cross_attention_dim"], generator=g)
    return lat.to(device, dtype), torch.tensor(500, device=device), text.to(device, dtype)


@torch.inference_mode()
def generate(
    models: Models,
    sizes: Sizes,
    batch: int,
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    unet=None,
    seed: int = 0,
) -> torch.Tensor:
    """Text encoder → latents → `steps` DDIM steps with classifier-free guidance (UNet on 2B rows) → VAE
    decode (in chunks of `sizes.vae_chunk`). → images (B, 3, H, W)."""
    unet = models.unet if unet is None else unet
    g = torch.Generator(device="cpu").manual_seed(seed)
    vocab = sizes.clip["vocab_size"]
    ids = torch.randint(0, vocab, (2 * batch, sizes.text_len), generator=g).to(device)  # negative + positive
    text = models.text_encoder(ids).last_hidden_state.to(dtype)  # (2B, 77, D)
    scheduler = ddim(steps, device)
    latents = torch.randn(batch, 4, sizes.latent, sizes.latent, generator=g).to(device, dtype)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        rows = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        noise = unet(rows, t, encoder_hidden_states=text).sample
        uncond, cond = noise.chunk(2)
        noise = uncond + sizes.guidance * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    scale = models.vae.config.scaling_factor
    images = [models.vae.decode(chunk / scale).sample for chunk in latents.split(sizes.vae_chunk)]
    return torch.cat(images).clamp(-1, 1)


def count_unet_flops(unet, sizes: Sizes, rows: int, device: torch.device, dtype: torch.dtype) -> float:
    """FLOPs of one UNet call on `rows` rows, counted by torch's FlopCounterMode (matmuls, convs, SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    lat, t, text = unet_inputs(sizes, rows, device, dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(lat, t, encoder_hidden_states=text)
    return float(counter.get_total_flops())


def unet_call_seconds(
    unet,
    sizes: Sizes,
    rows: int,
    device: torch.device,
    dtype: torch.dtype,
    reps: int,
    warmup: int = 2,
    channels_last: bool = False,
) -> float:
    lat, t, text = unet_inputs(sizes, rows, device, dtype)
    with torch.inference_mode():
        if channels_last:
            lat = lat.contiguous(memory_format=torch.channels_last)
        return time_call(lambda: unet(lat, t, encoder_hidden_states=text), device, reps, warmup)


def attention_processors(unet) -> list[str]:
    return sorted({type(p).__name__ for p in unet.attn_processors.values()})


# -- sections -----------------------------------------------------------------------------------------------


def section_device(device: torch.device) -> dict:
    import diffusers
    import transformers

    out = {
        "type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        out.update(
            name=torch.cuda.get_device_name(device),
            capability=capability,
            multiprocessors=props.multi_processor_count,
            total_memory_gib=round(props.total_memory / 2**30, 2),
            driver=_driver_version(),
        )
    else:
        out.update(name="cpu", threads=torch.get_num_threads())
    return out


def _driver_version() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def section_peak(device: torch.device, quick: bool) -> dict:
    """Measured matmul peak: bf16 8192³ on CUDA (fp32 256³ in --quick / on CPU)."""
    n, dtype = (256, torch.float32) if quick or device.type != "cuda" else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 5 if quick else 30
    seconds = time_call(lambda: torch.mm(a, b), device, reps=reps, warmup=3)
    out = {
        "matmul_n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "reps": reps,
        "measured_tflops": sig(2 * n**3 / seconds / 1e12),
    }
    if device.type == "cuda":
        value, label = table_peak(torch.cuda.get_device_name(device))
        out.update(
            table_bf16_dense_tflops=value,
            table_entry=label,
            table_note="vendor datasheet, dense bf16 tensor core (H100 SXM / H200: 989)",
        )
    return out


def section_generation(models: Models, sizes: Sizes, device: torch.device, peak: dict, report) -> dict:
    """frames/s, peak memory and UNet FLOP/s per (dtype, batch)."""
    measured = peak.get("measured_tflops")
    table = peak.get("table_bf16_dense_tflops")
    flops_per_call = {}
    models.to(DTYPES[sizes.dtypes[0]])
    for b in sizes.batches:  # FLOPs do not depend on the dtype: count once per shape
        flops_per_call[b] = count_unet_flops(models.unet, sizes, 2 * b, device, DTYPES[sizes.dtypes[0]])
    rows_out = []
    result = {
        "unet_flops_per_call": {str(b): f for b, f in flops_per_call.items()},
        "unet_gflops_per_row": sig(flops_per_call[sizes.batches[0]] / (2 * sizes.batches[0]) / 1e9),
        "runs": rows_out,
    }
    for name in sizes.dtypes:
        dtype = DTYPES[name]
        models.to(dtype)
        for b in sizes.batches:
            row = {"dtype": name, "batch": b, "unet_rows": 2 * b, "steps": sizes.steps}
            try:
                generate(models, sizes, b, min(2, sizes.steps), device, dtype)  # warm-up (kernels, allocator)
                reps = 1 if sizes.quick else (3 if b == 1 else 2 if b <= 8 else 1)
                reset_peak(device)
                sync(device)
                start = time.perf_counter()
                for r in range(reps):
                    images = generate(models, sizes, b, sizes.steps, device, dtype, seed=r)
                sync(device)
                seconds = (time.perf_counter() - start) / reps
                row.update(
                    seconds=round(seconds, 4),
                    frames_per_s=round(b / seconds, 3),
                    reps=reps,
                    peak_memory_gib=peak_gib(device),
                    finite=bool(torch.isfinite(images).all()),
                )
                unet_s = unet_call_seconds(models.unet, sizes, 2 * b, device, dtype, reps=1 if sizes.quick else 5)
                achieved = flops_per_call[b] / unet_s / 1e12
                row.update(
                    unet_call_s=sig(unet_s),
                    unet_tflops=sig(achieved),
                    unet_share_of_generation=round(unet_s * sizes.steps / seconds, 3),
                    generation_unet_tflops=sig(flops_per_call[b] * sizes.steps / seconds / 1e12),
                )
                if measured:
                    row["unet_fraction_of_measured_peak"] = round(achieved / measured, 3)
                if table:
                    row["unet_fraction_of_table_peak"] = round(achieved / table, 3)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory at one size: report, go on
                row["error"] = short_error(err)
            rows_out.append(row)
            free(device)
            report(result)
    return result


def section_attention(models: Models, sizes: Sizes, device: torch.device) -> dict:
    """The UNet's attention processor, each SDPA backend alone, and SDPA vs the classic processor."""
    from diffusers.models.attention_processor import AttnProcessor
    from torch.nn.attention import SDPBackend, sdpa_kernel

    name = "fp32" if sizes.quick else "bf16"
    dtype = DTYPES[name]
    models.to(dtype)
    b = 1 if sizes.quick else 8
    reps = 1 if sizes.quick else 5
    unet = models.unet
    default = attention_processors(unet)
    out = {
        "processors": default,
        "dtype": name,
        "batch": b,
        "text_encoder_attn_implementation": getattr(models.text_encoder.config, "_attn_implementation", None),
        "sdpa_flags": {
            k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
            for k in ("flash", "mem_efficient", "cudnn", "math")
            if hasattr(torch.backends.cuda, f"{k}_sdp_enabled")
        },
    }
    reset_peak(device)
    sdpa_s = unet_call_seconds(unet, sizes, 2 * b, device, dtype, reps)
    out.update(sdpa_auto_unet_call_s=round(sdpa_s, 5), sdpa_peak_memory_gib=peak_gib(device))
    backends = {}
    for label, backend in (
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
        ("math", SDPBackend.MATH),
    ):
        try:
            with sdpa_kernel(backend):
                seconds = unet_call_seconds(unet, sizes, 2 * b, device, dtype, reps, 1)
                backends[label] = {"unet_call_s": round(seconds, 5)}
        except Exception as err:  # noqa: BLE001 - a backend that cannot run these shapes says why
            backends[label] = {"error": short_error(err)}
    out["sdpa_backends"] = backends
    processors = unet.attn_processors
    try:
        unet.set_attn_processor(AttnProcessor())
        reset_peak(device)
        classic = unet_call_seconds(unet, sizes, 2 * b, device, dtype, reps)
        out.update(
            classic_unet_call_s=round(classic, 5),
            classic_peak_memory_gib=peak_gib(device),
            sdpa_speedup_over_classic=round(classic / sdpa_s, 3),
        )
    except Exception as err:  # noqa: BLE001
        out["classic_error"] = short_error(err)
    finally:
        unet.set_attn_processor(processors)
        free(device)
    assert attention_processors(unet) == default
    return out


def section_channels_last(models: Models, sizes: Sizes, device: torch.device) -> dict:
    name = "fp32" if sizes.quick else "bf16"
    dtype = DTYPES[name]
    models.to(dtype)
    b = sizes.batches[-1]
    reps = 1 if sizes.quick else 5
    unet = models.unet
    default = unet_call_seconds(unet, sizes, 2 * b, device, dtype, reps)
    unet.to(memory_format=torch.channels_last)
    try:
        cl = unet_call_seconds(unet, sizes, 2 * b, device, dtype, reps, channels_last=True)
    finally:
        unet.to(memory_format=torch.contiguous_format)
    return {
        "dtype": name,
        "batch": b,
        "contiguous_unet_call_s": round(default, 5),
        "channels_last_unet_call_s": round(cl, 5),
        "channels_last_speedup": round(default / cl, 3),
    }


def section_adapters_step(models: Models, sizes: Sizes, device: torch.device) -> dict:
    """One adapters-stage training step at the generator's size: frozen fp32 base under autocast,
    AdamW over the adapters. 'unet_adapter': spatial adapter + UNet forward/backward (VAE encode and text
    encoder without gradients); 'with_blending': plus the mask-blending decode with gradients, as
    `training.adapters` runs it."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from imagineid.models.ldm import SD_SCHEDULE
    from imagineid.models.mask_blending_adapter import MaskBlendingAdapter, decode_with_blending, face_removed
    from imagineid.models.spatial_condition_adapter import SpatialConditionAdapter

    models.to(torch.float32)  # the stage trains against the frozen base as loaded: fp32 weights
    amp = torch.float32 if sizes.quick or device.type != "cuda" else torch.bfloat16
    unet, vae, text_encoder = models.unet, models.vae, models.text_encoder
    torch.manual_seed(0)
    with torch.device(device):
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)  # latents are 1/8 of the frame (SD 1.5)
        spatial = SpatialConditionAdapter(
            n_neighbours=1,
            channels=tuple(unet.config.block_out_channels),
            num_res_blocks=1,
            downscale_factor=vae_factor,
            adapter_type="full_adapter",
        )
        blending = MaskBlendingAdapter(channels=tuple(reversed(vae.config.block_out_channels)))
    spatial.to(device).train()
    blending.to(device).train()
    noise_scheduler = DDPMScheduler(**SD_SCHEDULE)
    b, s = sizes.train_batch, sizes.size
    g = torch.Generator(device="cpu").manual_seed(2)

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device) * 2 - 1

    image, mesh, reference, neighbour = (rand(b, 3, s, s) for _ in range(4))
    blend_mask = torch.zeros(b, 1, s, s, device=device)
    blend_mask[:, :, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1.0  # the face region
    ids = torch.randint(0, sizes.clip["vocab_size"], (b, sizes.text_len), generator=g).to(device)
    scale = vae.config.scaling_factor
    n_params = {
        "spatial_adapter": sum(p.numel() for p in spatial.parameters()),
        "blending_adapter": sum(p.numel() for p in blending.parameters()),
    }

    def run(with_blending: bool) -> dict:
        params = list(spatial.parameters()) + (list(blending.parameters()) if with_blending else [])
        opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-4)

        def step() -> float:
            with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                with torch.no_grad():
                    z0 = vae.encode(image).latent_dist.sample() * scale  # (B, 4, s/8, s/8)
                    text = text_encoder(ids).last_hidden_state  # (B, 77, 768)
                variable = torch.rand(b, device=device) < 0.3
                feats = spatial(mesh, reference, neighbour, drop_mask=variable)
                noise = torch.randn_like(z0)
                t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), device=device)
                pred = unet(
                    noise_scheduler.add_noise(z0, noise, t),
                    t,
                    encoder_hidden_states=text,
                    down_intrablock_additional_residuals=list(feats),
                ).sample
                loss = F.mse_loss(pred.float(), noise.float())
                if with_blending:
                    background = face_removed(image, blend_mask)
                    blended = decode_with_blending(vae, blending, z0 / scale, background, blend_mask)
                    outside = 1.0 - blend_mask
                    loss = loss + ((blended.float() - image).abs() * outside).sum() / (outside.sum() * 3).clamp_min(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return float(loss.item())

        step()  # warm-up
        reset_peak(device)
        steps = 1 if sizes.quick else sizes.train_steps
        sync(device)
        start = time.perf_counter()
        losses = [step() for _ in range(steps)]
        sync(device)
        seconds = (time.perf_counter() - start) / steps
        out = {
            "step_s": round(seconds, 4),
            "steps_per_s": round(1 / seconds, 3),
            "steps_timed": steps,
            "peak_memory_gib": peak_gib(device),
            "finite_loss": all(math.isfinite(x) for x in losses),
        }
        return out

    out = {
        "batch": b,
        "size": s,
        "autocast": str(amp).removeprefix("torch."),
        "base_weights": "fp32 (frozen)",
        "adapter": "SpatialConditionAdapter = diffusers T2IAdapter full_adapter, in_channels 9, num_res_blocks 1",
        "adapter_params": n_params,
        "note": "the stage itself uses fp16 autocast + GradScaler (training.loop.fit) and also trains the "
        "textual-inversion adapter through the text encoder, left out here",
    }
    for label, blend in (("unet_adapter", False), ("with_blending", True)):
        try:
            out[label] = run(blend)
        except Exception as err:  # noqa: BLE001
            out[label] = {"error": short_error(err)}
        free(device)  # the optimiser state and activations of this variant
    return out


def section_disentangler(sizes: Sizes, device: torch.device) -> dict:
    """steps/s of the three disentangler stages through `training.loop.fit` on random batches.

    Model configs as `training.identity/content/emotion` build them (TrainConfig defaults: hidden 128,
    batch 32, windows 50 / 32 / 50 frames, the voice branch on), the morphable model's default sizes
    (10 shape, 6 mouth, 12 expression coefficients); the data loader is replaced by ready tensors, and
    the content stage's landmark loss through the morphable model is left out.
    """
    import torch.nn.functional as F

    from imagineid.audio.features import ENVELOPE_CHANNELS
    from imagineid.audio.voice_features import STATS, VOICE_DIM
    from imagineid.audio.voice_stats import F0_STATS, PHYSICAL_STATS
    from imagineid.models import ContentEncoderDecoder, EmotionEncoderDecoder, IdentityEncoder
    from imagineid.runs.folder import RunDir
    from imagineid.training.augment import augment_mel, flatten_spectrum
    from imagineid.training.config import StageConfig, TrainConfig
    from imagineid.training.loop import fit, freeze
    from imagineid.training.losses import masked_mse, supervised_contrastive, temporal_smoothness

    cfg = TrainConfig()
    hidden, n_shape, n_mouth, n_expression, mels = cfg.hidden, 10, 6, 12, 4
    n_prosody = STATS.stop - STATS.start
    b = sizes.disentangler_batch
    g = torch.Generator().manual_seed(3)

    def ce(logits, labels):
        return F.cross_entropy(logits.float(), labels, ignore_index=-1)

    def identity_model():
        return IdentityEncoder(
            n_shape=n_shape,
            hidden=hidden,
            n_voice=VOICE_DIM,
            gender_features=[STATS.start + i for i in F0_STATS],
            age_features=[STATS.start + i for i in PHYSICAL_STATS],
            n_prosody=n_prosody,
        ).to(device)

    def batch(window: int) -> dict:
        return {
            "mel": torch.randn(b, mels * window, 80, generator=g),
            "envelope": torch.rand(b, mels * window, ENVELOPE_CHANNELS, generator=g),
            "voice": torch.randn(b, VOICE_DIM, generator=g),
            "shape": torch.randn(b, n_shape, generator=g),
            "mouth": torch.randn(b, window, n_mouth, generator=g),
            "expression": torch.randn(b, window, n_expression, generator=g),
            "valid": torch.ones(b, window, dtype=torch.bool),
            "level": torch.randn(b, 80, generator=g) * 0.1,
            "speaker": torch.randint(0, 8, (b,), generator=g),
            "gender": torch.randint(0, 2, (b,), generator=g),
            "age": torch.randint(0, 3, (b,), generator=g),
            "emotion": torch.randint(0, 4, (b,), generator=g),
        }

    def stage_identity():
        model = identity_model()

        def step(x):
            out = model(augment_mel(x["mel"]), voice=x["voice"])
            shape = ((out.shape.float() - x["shape"]) ** 2).mean()
            loss = (
                shape
                + 0.5 * supervised_contrastive(out.embedding.float(), x["speaker"])
                + ce(out.gender_logits, x["gender"])
                + ce(out.age_logits, x["age"])
            )
            return loss, {"loss": loss.item()}

        return model, step

    def stage_content():
        identity = freeze(identity_model())
        model = ContentEncoderDecoder(n_shape=n_shape, n_mouth=n_mouth, hidden=hidden, n_envelope=ENVELOPE_CHANNELS).to(
            device
        )

        def step(x):
            with torch.no_grad():
                shape = identity(x["mel"], voice=x["voice"]).shape
            out = model(flatten_spectrum(x["mel"]), shape, x["envelope"])
            loss = masked_mse(out.mouth.float(), x["mouth"], x["valid"]) + 0.5 * temporal_smoothness(
                out.mouth.float(), x["mouth"]
            )
            return loss, {"loss": loss.item()}

        return model, step

    def stage_emotion():
        identity = freeze(identity_model())
        content = freeze(
            ContentEncoderDecoder(n_shape=n_shape, n_mouth=n_mouth, hidden=hidden, n_envelope=ENVELOPE_CHANNELS).to(
                device
            )
        )
        model = EmotionEncoderDecoder(
            identity_dim=hidden + n_prosody, content_dim=hidden, n_expression=n_expression, hidden=hidden, dropout=0.3
        ).to(device)

        def step(x):
            with torch.no_grad():
                ident = identity(x["mel"], voice=x["voice"])
                cont = content(x["mel"], ident.shape, x["envelope"]).features
            out = model(augment_mel(x["mel"] + x["level"][:, None, :], gain=0.0), ident.for_emotion(), cont)
            contrast = supervised_contrastive(out.embedding.float(), x["emotion"])
            loss = (
                masked_mse(out.expression.float(), x["expression"], x["valid"])
                + ce(out.emotion_logits, x["emotion"])
                + 0.5 * contrast
            )
            return loss, {"loss": loss.item()}

        return model, step

    def train(name, model, loader, step, config, run) -> float:
        sync(device)
        start = time.perf_counter()
        fit(name, model, loader, step, config, run, checkpoint_every=10**9, progress=False)
        sync(device)
        return time.perf_counter() - start

    out = {
        "batch": b,
        "hidden": hidden,
        "loop": "training.loop.fit (AdamW, clip 1.0; fp16 autocast + GradScaler on CUDA)",
        "note": "ready tensors instead of the WindowDataset loader; content's morphable landmark loss left out",
    }
    stages = (
        ("identity", stage_identity, cfg.identity),
        ("content", stage_content, cfg.content),
        ("emotion", stage_emotion, cfg.emotion),
    )
    with tempfile.TemporaryDirectory(prefix="gpu_bench_run_") as tmp:
        for name, make, stage_cfg in stages:
            try:
                torch.manual_seed(0)
                window = stage_cfg.window if not sizes.quick else 8
                loader = [batch(window) for _ in range(4)]
                model, step = make()
                run = RunDir(Path(tmp) / name)
                # warm-up, then the timed run (each `fit` call: a fresh optimiser, as a stage starts)
                train(name, model, loader, step, StageConfig(2 if sizes.quick else 5, b, window, stage_cfg.lr), run)
                reset_peak(device)
                steps = 2 if sizes.quick else sizes.disentangler_steps
                seconds = train(name, model, loader, step, StageConfig(steps, b, window, stage_cfg.lr), run)
                out[name] = {
                    "window": window,
                    "steps_timed": steps,
                    "steps_per_s": round(steps / seconds, 2),
                    "windows_per_s": round(steps * b / seconds, 1),
                    "peak_memory_gib": peak_gib(device),
                    "params": sum(p.numel() for p in model.parameters()),
                    "default_steps": stage_cfg.steps,
                    "stage_estimate_s": round(stage_cfg.steps * seconds / steps, 1),
                }
            except Exception as err:  # noqa: BLE001
                out[name] = {"error": short_error(err)}
            free(device)
    return out


def section_compile_child(sizes: Sizes, device: torch.device, mode: str, save) -> dict:
    """In the child process: eager vs torch.compile(mode) UNet call at the largest batch, bf16 weights,
    then a compiled generation. `save(out)` after each step, so a child killed mid-compile leaves the rest."""
    name = "fp32" if sizes.quick else "bf16"
    dtype = DTYPES[name]
    models = build_models(sizes, device, dtype)
    b = sizes.batches[-1]
    reps = 1 if sizes.quick else 5
    out = {"mode": mode, "dtype": name, "batch": b, "unet_rows": 2 * b}
    eager = unet_call_seconds(models.unet, sizes, 2 * b, device, dtype, reps)
    out["eager_unet_call_s"] = round(eager, 5)
    save(out)
    compiled = torch.compile(models.unet, mode=mode)
    lat, t, text = unet_inputs(sizes, 2 * b, device, dtype)
    with torch.inference_mode():
        start = time.perf_counter()
        compiled(lat, t, encoder_hidden_states=text)
        sync(device)
        out["first_call_s"] = round(time.perf_counter() - start, 2)  # compile (+ autotune) + one call
        start = time.perf_counter()
        for _ in range(3):  # cudagraph recording (reduce-overhead) happens in the first calls
            compiled(lat, t, encoder_hidden_states=text)
        sync(device)
        out["warmup_3_calls_s"] = round(time.perf_counter() - start, 3)
    save(out)
    fast = unet_call_seconds(compiled, sizes, 2 * b, device, dtype, reps, warmup=1)
    out.update(compiled_unet_call_s=round(fast, 5), compile_speedup=round(eager / fast, 3))
    save(out)
    try:
        generate(models, sizes, b, min(2, sizes.steps), device, dtype, unet=compiled)  # warm-up
        sync(device)
        start = time.perf_counter()
        images = generate(models, sizes, b, sizes.steps, device, dtype, unet=compiled)
        sync(device)
        seconds = time.perf_counter() - start
        out.update(
            compiled_generation_s=round(seconds, 3),
            compiled_frames_per_s=round(b / seconds, 3),
            compiled_finite=bool(torch.isfinite(images).all()),
        )
    except Exception as err:  # noqa: BLE001
        out["compiled_generation_error"] = short_error(err)
    try:
        from torch._dynamo.utils import counters

        out["graph_breaks"] = sum(counters["graph_break"].values())
        out["unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
    except Exception:  # noqa: BLE001 - private counters: best effort
        pass
    return out


def _exit_with_parent() -> None:
    """The compile child runs in its own session (so its compile workers can be killed as a group): it
    must not outlive a parent killed by the script's timeout and hold the GPU through the next phase."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def section_compile(args, device: torch.device, timeout: float) -> dict:
    """Runs `section_compile_child` in a child process group killed after `timeout` seconds."""
    with tempfile.TemporaryDirectory(prefix="gpu_bench_compile_") as tmp:
        result = Path(tmp) / "compile.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child-compile",
            "--device",
            str(device),
            "--compile-mode",
            args.compile_mode,
            "--json-out",
            str(result),
        ]
        if args.quick:
            cmd.append("--quick")
        for flag in ("steps", "batches", "dtypes"):
            if getattr(args, flag):
                cmd += [f"--{flag}", str(getattr(args, flag))]
        cmd += ["--vae-chunk", str(args.vae_chunk)]
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child and its inductor compile workers
            except ProcessLookupError:
                pass
            log, _ = proc.communicate()
            out = {"mode": args.compile_mode, "error": f"timed out after {timeout:.0f} s (compile budget)"}
            if result.exists():
                out["partial"] = json.loads(result.read_text())
            out["log_tail"] = log[-1500:]
            return out
        wall = round(time.perf_counter() - start, 1)
        if proc.returncode != 0 or not result.exists():
            out = {
                "mode": args.compile_mode,
                "error": f"child exited {proc.returncode}",
                "wall_s": wall,
                "log_tail": log[-3000:],
            }
            if result.exists():
                out["partial"] = json.loads(result.read_text())
            return out
        out = json.loads(result.read_text())
        out["wall_s"] = wall
        return out


# -- main ---------------------------------------------------------------------------------------------------


def make_sizes(args) -> Sizes:
    if args.quick:
        sizes = Sizes(
            True,
            TINY_UNET,
            TINY_VAE,
            TINY_CLIP,
            size=64,
            steps=2,
            batches=[1],
            dtypes=["fp32"],
            vae_chunk=8,
            train_batch=2,
            disentangler_batch=4,
        )
    else:
        sizes = Sizes(
            False,
            SD15_UNET,
            SD15_VAE,
            SD15_CLIP,
            size=512,
            steps=20,
            batches=[1, 8, 32],
            dtypes=["fp16", "bf16"],
            vae_chunk=args.vae_chunk,
        )
    if args.steps:
        sizes.steps = args.steps
    if args.batches:
        sizes.batches = sorted({int(x) for x in args.batches.split(",")})
    if args.dtypes:
        sizes.dtypes = [d for d in args.dtypes.split(",") if d]
        bad = [d for d in sizes.dtypes if d not in DTYPES]
        if bad:
            raise SystemExit(f"--dtypes: unknown {bad}; choose from {sorted(DTYPES)}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="CPU smoke mode: 64 px, B=1, 2 steps, fp32, tiny configs")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here (rewritten after every section)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock budget: sections that no longer fit are skipped (default: none)",
    )
    parser.add_argument("--steps", type=int, help="DDIM steps (default 20; --quick 2)")
    parser.add_argument("--batches", help="generation batch sizes, e.g. 1,8,32 (the default)")
    parser.add_argument("--dtypes", help="generation dtypes, e.g. fp16,bf16 (the default; --quick fp32)")
    parser.add_argument("--vae-chunk", type=int, default=8, help="images per VAE decode call (default 8)")
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="measure torch.compile (auto: on CUDA without --quick)",
    )
    parser.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        help="torch.compile mode: reduce-overhead (default) or max-autotune-no-cudagraphs, ...",
    )
    parser.add_argument("--compile-timeout-s", type=float, default=150.0, help="cap on the compile child (default 150)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections to run (default: all)")
    parser.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # one "modules kept in float32" warning per dtype cast otherwise
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_bench: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use --device cpu --quick for the CPU smoke run",
            file=sys.stderr,
        )
        return 3
    sizes = make_sizes(args)
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))

    if args.child_compile:
        _exit_with_parent()

        def save_child(out: dict) -> None:
            tmp = args.json_out.with_suffix(".tmp")
            tmp.write_text(json.dumps(out, indent=2))
            tmp.replace(args.json_out)

        save_child(section_compile_child(sizes, device, args.compile_mode, save_child))
        return 0

    start = time.perf_counter()
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    result: dict = {
        "mode": "quick" if args.quick else "full",
        "config": {
            "size": sizes.size,
            "steps": sizes.steps,
            "batches": sizes.batches,
            "dtypes": sizes.dtypes,
            "guidance": sizes.guidance,
            "vae_chunk": sizes.vae_chunk,
            "scheduler": "DDIM (SD 1.5 schedule)",
            "weights": "random, built from configs",
            "unet_block_out_channels": list(sizes.unet["block_out_channels"]),
            "vae_block_out_channels": list(sizes.vae["block_out_channels"]),
            "text_hidden": sizes.clip["hidden_size"],
        },
    }

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - start, 1)
        if args.json_out:
            tmp = args.json_out.with_suffix(args.json_out.suffix + ".tmp")
            tmp.write_text(json.dumps(result, indent=2))
            tmp.replace(args.json_out)

    def left() -> float:
        return math.inf if args.budget_s is None else args.budget_s - (time.perf_counter() - start)

    # seconds a section needs at least on a GPU (skipped below that); --quick runs whatever is asked
    need = {
        "peak": 5,
        "generation": 40,
        "attention": 15,
        "channels_last": 8,
        "adapters_step": 20,
        "disentangler": 15,
        "compile": 60,
    }

    def run(name: str, fn) -> None:
        if name not in wanted:
            return
        if not args.quick and left() < need.get(name, 10):
            result[name] = {"skipped": f"budget: {max(left(), 0):.0f} s left"}
        else:
            t0 = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as err:  # noqa: BLE001 - a failing section is reported, not fatal
                result[name] = {"error": short_error(err), "traceback": traceback.format_exc()[-2000:]}
                free(device)
            if isinstance(result[name], dict):
                result[name]["section_s"] = round(time.perf_counter() - t0, 1)
        save()

    result["device"] = section_device(device)
    save()
    run("peak", lambda: section_peak(device, args.quick))
    models = None
    if any(s in wanted for s in ("generation", "attention", "channels_last", "adapters_step")):
        t0 = time.perf_counter()
        models = build_models(sizes, device)
        result["build_models_s"] = round(time.perf_counter() - t0, 2)
        result["params"] = {
            k: sum(p.numel() for p in getattr(models, k).parameters()) for k in ("unet", "vae", "text_encoder")
        }

    def generation():
        def partial(res):
            result["generation"] = res
            save()

        return section_generation(models, sizes, device, result.get("peak", {}), partial)

    run("generation", generation)
    run("attention", lambda: section_attention(models, sizes, device))
    run("channels_last", lambda: section_channels_last(models, sizes, device))
    run("adapters_step", lambda: section_adapters_step(models, sizes, device))
    models = None  # frees the generator's weights before the disentangler section
    free(device)
    run("disentangler", lambda: section_disentangler(sizes, device))
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda" and not args.quick)
    if "compile" in wanted and not compile_on:
        result["compile"] = {"skipped": "--quick / CPU (use --compile on to force)"}
        save()
    elif compile_on:
        run("compile", lambda: section_compile(args, device, min(args.compile_timeout_s, max(left() - 10, 1))))
    save()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
