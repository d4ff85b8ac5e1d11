"""Which float type inference computes in, per device: mixed precision where the hardware has it.

    name = resolve("auto", device)   # "bf16" on a CPU with native bf16, "fp16" on CUDA, else "fp32"
    with autocast(name, device): frames = pipe(...)

- CUDA: fp16 autocast (tensor cores).
- CPU with native bf16 dot products (x86 `avx512_bf16` or `amx_bf16`): bf16 autocast. Measured on such
  a 2-core CPU (AMD Zen 4): the tiny UNet at batch 32 costs 1.6–1.8 ms per sample instead of 2.3–2.5,
  and the blended VAE decode at batch 16 9.2 ms per frame instead of 16.2; at batch 2 bf16 is about
  10 % *slower* (per-call overhead dominates), so it pays for the batched generator.
- Any other CPU: fp32. Without native bf16, torch emulates it and bf16 matmuls crawl (DESIGN §7).

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


def resolve(precision: str, device: torch.device) -> str:
    """"auto" → "fp16" on CUDA, "bf16" on a CPU with native bf16, else "fp32"; others are checked."""
    if check(precision) == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use bf16 (with native support) or fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to a resolved precision ("fp32" | "bf16" | "fp16") on `device`; fp32 runs as is."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])
