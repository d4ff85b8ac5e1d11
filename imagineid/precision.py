"""Which float type inference computes in, per device: mixed precision where the hardware has it.

    name = resolve("auto", device, batch_size=16)   # "bf16" on a CPU with native bf16, "fp16" on CUDA
    with autocast(name, device): frames = pipe(...)

- CUDA: fp16 autocast (tensor cores).
- CPU with native bf16 dot products (x86 `avx512_bf16` or `amx_bf16`): bf16 autocast for batches of at
  least `CPU_BF16_MIN_BATCH` clips, fp32 below: bf16 pays only in big batches, where the matmuls
  dominate; in small ones per-call overhead does and bf16 is dearer than fp32 (`benchmarks/guided_unet.py`
  measures both; the README has the figures). So the per-clip loop (B = 1) stays in fp32.
- Any other CPU: fp32. Without native bf16, torch emulates it and bf16 matmuls crawl (docs/architecture.md §7).

"auto" is resolved where the model runs (a Ray worker may sit on a GPU node), and the resolved name
goes into every video's record.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", *PRECISIONS)
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
CPU_BF16_MIN_BATCH = 8  # clips per batch from which bf16 beats fp32 on the CPUs above


def pick_device() -> torch.device:
    """The device a model runs on in this process: the GPU Ray (or the user) made visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 dot products in hardware (Linux /proc/cpuinfo flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def check(precision: str) -> str:
    """The name alone (before the device is known): one of CHOICES, else ValueError."""
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {precision!r}")
    return precision


def resolve(precision: str, device: torch.device, batch_size: int) -> str:
    """ "auto" → "fp16" on CUDA, "bf16" on a CPU with native bf16 for batches of ≥ CPU_BF16_MIN_BATCH
    clips, else "fp32"; the other names are checked."""
    if check(precision) == "auto":
        if device.type == "cuda":
            return "fp16"
        native = device.type == "cpu" and cpu_has_native_bf16()
        return "bf16" if native and batch_size >= CPU_BF16_MIN_BATCH else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use bf16 (with native support) or fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to a resolved precision ("fp32" | "bf16" | "fp16") on `device`; fp32 runs as is."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def train_precision(precision: str, device: torch.device) -> str:
    """Training's float type: "auto" → bf16 on GPUs that have it (no loss scaling needed), else fp16 with
    a GradScaler, fp32 on CPUs (bf16 autocast slows CPU training down even with native bf16 in small
    batches); the other names are checked as for inference."""
    if check(precision) == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return resolve(precision, device, batch_size=0)
