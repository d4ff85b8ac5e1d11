"""Disentangler training throughput per stage (windows/s, validation included) in one run, and the tiny
UNet's forward + backward time at batch 8; prints JSON.

    .venv/bin/python benchmarks/train.py --data work/d16 [--steps 100]

Without --data it synthesizes and preprocesses a small corpus first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from imagineid.models.ldm import build_tiny
from imagineid.preprocessing import PreprocessConfig, preprocess
from imagineid.synth.corpus import SynthConfig, synthesize_corpus
from imagineid.training.config import TrainConfig
from imagineid.training.run import train


def tiny_unet_step_s(repeats: int = 3) -> float:
    """Best of `repeats` forward + backward passes of the tiny UNet at batch 8 on 16 x 16 latents."""
    unet = build_tiny(image_size=64, seed=0).unet.train()
    latents, states, t = torch.randn(8, 4, 16, 16), torch.randn(8, 16, 64), torch.randint(0, 1000, (8,))
    unet(latents, t, states).sample.pow(2).mean().backward()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        unet(latents, t, states).sample.pow(2).mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            corpus, data = Path(tmp) / "s", Path(tmp) / "d"
            synthesize_corpus(corpus, SynthConfig(speakers=4, clips_per_speaker=2, seed=21), progress=False)
            preprocess([corpus / "videos"], data, PreprocessConfig(), workers=1, progress=False)
        config = TrainConfig(max_steps=args.steps)
        results = train(data, Path(tmp) / "run", "identity,content,emotion", config, use_ray=False, progress=False)
    report = {"benchmark": "train", "steps_per_stage": args.steps}
    for stage, metrics in results.items():
        cfg = config.stage(stage)
        report[f"{stage}_windows_per_s"] = round(cfg.steps * cfg.batch_size / metrics["seconds"], 1)
        report[f"{stage}_video_frames_per_s"] = round(cfg.steps * cfg.batch_size * cfg.window / metrics["seconds"], 1)
    report["tiny_unet_fwd_bwd_batch8_s"] = round(tiny_unet_step_s(), 4)
    report["torch_threads"] = torch.get_num_threads()
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
