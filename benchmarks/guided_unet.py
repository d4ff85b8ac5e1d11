"""The guided UNet call per batch size, in one run; prints JSON.

    .venv/bin/python benchmarks/guided_unet.py [--batches 1 2 4 8 16] [--calls 30] [--repeats 3]

For each batch of B clips (2B UNet samples with classifier-free guidance), ms per clip of:
- the textbook call (both halves through the whole UNet) and `guided_noise` (text-free prefix once),
  in fp32: what the split saves;
- `guided_noise` in fp32 and in bf16 autocast: where bf16 starts to pay on this CPU, which sets
  `precision.CPU_BF16_MIN_BATCH` (bf16 is only measured on CPUs with native bf16).
The tiny UNet (docs/architecture.md §4) with random weights and random T2I-Adapter features: speed does not depend on
training. Best of `--repeats` timings of `--calls` calls each, the variants taking turns.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from diffusers import T2IAdapter

from imagineid.models.guided_unet import duplicated_noise, guided_noise
from imagineid.models.ldm import build_tiny, tiny_adapter_kwargs
from imagineid.precision import autocast, cpu_has_native_bf16


def ms_per_clip(
    variants: dict[str, tuple[Callable, str]], unet, adapter, batch: int, calls: int, repeats: int
) -> dict[str, float]:
    """{name: (call, precision)} → {name: best ms per clip}; the variants take turns within each repeat,
    so a drift of the machine's speed hits them alike."""
    torch.manual_seed(0)
    sample, cond, uncond = torch.randn(batch, 4, 16, 16), torch.randn(batch, 16, 64), torch.randn(batch, 16, 64)
    cpu = torch.device("cpu")
    best = dict.fromkeys(variants, float("inf"))
    with torch.no_grad():
        residuals = adapter(torch.randn(batch, 3, 64, 64))
        for repeat in range(repeats + 1):  # the first round warms up
            for name, (call, precision) in variants.items():
                with autocast(precision, cpu):
                    start = time.perf_counter()
                    for _ in range(calls if repeat else 2):
                        call(unet, sample, 500, cond, uncond, residuals, 2.0)
                    if repeat:
                        best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {name: round(seconds / batch * 1000, 3) for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    tiny = build_tiny()
    unet = tiny.freeze().unet
    adapter = T2IAdapter(**tiny_adapter_kwargs(unet, tiny.vae, in_channels=3)).eval()
    bf16 = cpu_has_native_bf16()
    rows = []
    variants = {"duplicated_fp32_ms": (duplicated_noise, "fp32"), "guided_fp32_ms": (guided_noise, "fp32")}
    if bf16:
        variants["guided_bf16_ms"] = (guided_noise, "bf16")
    for batch in args.batches:
        row = {"clips": batch, **ms_per_clip(variants, unet, adapter, batch, args.calls, args.repeats)}
        row["guided_saves"] = round(1 - row["guided_fp32_ms"] / row["duplicated_fp32_ms"], 3)
        if bf16:
            row["bf16_saves"] = round(1 - row["guided_bf16_ms"] / row["guided_fp32_ms"], 3)
        rows.append(row)
    print(
        json.dumps(
            {"benchmark": "guided_unet", "threads": torch.get_num_threads(), "native_bf16": bf16, "rows": rows},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
