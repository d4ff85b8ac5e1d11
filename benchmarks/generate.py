"""Generation throughput and memory in one run; prints JSON (issue 6).

    .venv/bin/python benchmarks/generate.py [RUN AUDIO_DIR] [--clips 32] [--seconds 1-3] [--steps 20]

RUN and AUDIO_DIR default to `make demo`'s trained run and corpus (work/demo/run, work/demo/synth).

- frames/s and peak RSS of the per-clip loop (B = 1) and continuous batching (B = 16) over the same
  work: `--clips` audio files, one seed, `imagineid generate`'s defaults otherwise (20 DDIM steps,
  strength 0.8, frame-1 retries); each setting in its own process so peak RSS is its own. The default
  work is a small corpus: twice as many clips as slots, lengths spread evenly over 1–3 s in a mixed
  order, so finished clips hand their slots to queued ones as in a real job. `--clips 16 --seconds 3`
  is the static case (every clip starts together, no queue). Both run in `--precision` (default auto:
  on CPUs with native bf16, bf16 for B = 16 and fp32 for the per-clip loop, each its fastest setting);
  `--baseline-precision` sets the per-clip loop's apart;
- the guided UNet's achieved FLOP/s (FLOPs counted by torch's FlopCounterMode on the call the pipeline
  makes) during B = 16 generation and in isolation, as fractions of a measured fp32 matmul peak on this
  machine;
- peak RSS generating one 60 s audio vs one 10 s audio (bounded memory for long audio).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from imagineid.errors import ImagineIDError
from imagineid.generation.config import GenerateConfig
from imagineid.generation.shard import check_run
from imagineid.listening import discover_audio
from imagineid.media import load_audio, write_audio
from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline
from imagineid.precision import CHOICES as PRECISION_CHOICES
from imagineid.precision import autocast, resolve


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def unet_flops(run: Path, clips: int, precision: str) -> tuple[float, float]:
    """→ (FLOPs of one guided UNet call on `clips` items, its isolated FLOP/s in `precision`).

    The call the pipeline makes: both guidance halves, with the text-free prefix once (`guided_noise`).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from imagineid.generation.shard import load_pipeline
    from imagineid.models.guided_unet import guided_noise

    cpu = torch.device("cpu")
    pipe = load_pipeline(run, cpu)
    size = pipe.vae.config.sample_size
    latents = torch.randn(pipe.latent_shape(clips, size))
    cond, uncond = torch.randn(2, clips, 16, pipe.text_encoder.config.hidden_size)
    with torch.no_grad():
        feats = pipe.spatial_adapter(torch.zeros(clips, 3, size, size))
        with FlopCounterMode(display=False) as counter:
            guided_noise(pipe.unet, latents, 10, cond, uncond, feats, 2.0)
        flops = counter.get_total_flops()
        start, calls = time.perf_counter(), 20
        with autocast(resolve(precision, cpu, clips), cpu):
            for _ in range(calls):
                guided_noise(pipe.unet, latents, 10, cond, uncond, feats, 2.0)
    return float(flops), flops * calls / (time.perf_counter() - start)


def one_setting(run: str, audio: list[str], out: str, batch: int, steps: int, precision: str) -> dict:
    """Runs in a child process: one generate job, its frames/s and peak RSS."""
    import pandas as pd

    from imagineid.generation.run import generate

    cfg = GenerateConfig(batch_size=batch, steps=steps, precision=precision)
    start = time.perf_counter()
    summary = generate(run, audio, out, cfg, use_ray=False, progress=False)
    seconds = time.perf_counter() - start
    index = pd.read_parquet(summary["index"])
    failed = sorted(set(index[index.status != "ok"].error))  # e.g. a cut that landed on a pause: "silent"
    index = index[index.status == "ok"]
    # UNet sample evaluations (× 2 for guidance): every frame-1 candidate runs all steps, later frames
    # only the last `strength` of them.
    late_steps = steps - ImagineIDPipeline.invariant_start(steps, cfg.strength)
    candidates = int(index.first_frame_attempts.sum())
    unet_samples = 2 * (candidates * steps + int(index.frames.sum() - len(index)) * late_steps)
    return {
        "frames": summary["generated_frames"],
        "seconds": round(seconds, 2),
        "ok": summary["ok"],
        "failed": summary["failed"],
        "errors": failed,
        "precision": sorted(set(index.precision)),
        "frames_per_s": round(summary["generated_frames"] / seconds, 2),
        "unet_samples": unet_samples,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def child(run: Path, audio: list[Path], out: Path, batch: int, steps: int, precision: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        str(run),
        "--child",
        str(out),
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--precision",
        precision,
        "--files",
        *map(str, audio),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def clip_lengths(seconds: str, count: int) -> list[float]:
    """ "3" → count × 3 s; "1-3" → count lengths evenly spread over [1, 3] s, in a fixed mixed order."""
    low, _, high = seconds.partition("-")
    low, high = float(low), float(high or low)
    if not 0 < low <= high:
        raise ValueError(f"--seconds must be S or LOW-HIGH with 0 < LOW ≤ HIGH, got {seconds!r}")
    spread = np.linspace(low, high, count) if count > 1 else np.array([low])
    order = np.argsort([(k * 7) % count for k in range(count)], kind="stable")  # deterministic interleave
    return [round(float(x), 2) for x in spread[order]]


def cut_audio(sources: list[Path], folder: Path, lengths: list[float]) -> list[Path]:
    """One file per length (seconds), looping the source speech."""
    folder.mkdir(parents=True, exist_ok=True)
    speech = np.concatenate([load_audio(p) for p in sources[: max(len(lengths), 4)]])
    out = []
    for k, length in enumerate(lengths):
        start = (k * 7919) % max(1, len(speech) - 1)
        clip = np.resize(np.roll(speech, -start), int(length * 16000))
        out.append(folder / f"bench{k:03d}.wav")
        write_audio(out[-1], clip)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "run",
        type=Path,
        nargs="?",
        default=Path("work/demo/run"),
        help="a trained run (default: the one `make demo` trains)",
    )
    parser.add_argument(
        "audio",
        type=Path,
        nargs="?",
        default=Path("work/demo/synth"),
        help="audio files or folders to cut the work from (default: the demo's corpus)",
    )
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", default="1-3", help="length of every clip (S) or a spread (LOW-HIGH)")
    parser.add_argument("--steps", type=int, default=GenerateConfig.steps)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    parser.add_argument(
        "--baseline-precision",
        choices=PRECISION_CHOICES,
        help="precision of the per-clip loop (default: --precision); fp32 compares with the "
        "loop's own fastest setting on CPUs where bf16 only pays in batches",
    )
    parser.add_argument("--child", type=Path)
    parser.add_argument("--files", nargs="*")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.child:
        print(
            json.dumps(one_setting(str(args.run), args.files, str(args.child), args.batch, args.steps, args.precision))
        )
        return
    try:
        check_run(args.run)
    except ImagineIDError as err:
        sys.exit(f"{err}; or run `make demo`, which trains work/demo/run")
    if not args.audio.exists():
        sys.exit(f"{args.audio} does not exist: pass AUDIO_DIR, or run `make demo`, which makes work/demo/synth")
    sources = discover_audio([args.audio])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lengths = clip_lengths(args.seconds, args.clips)
        work = cut_audio(sources, tmp / "work", lengths)
        report = {
            "benchmark": "generate",
            "clips": args.clips,
            "seconds_per_clip": args.seconds,
            "audio_seconds": round(sum(lengths), 2),
            "steps": args.steps,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads(),
        }
        per_clip = child(args.run, work, tmp / "b1", 1, args.steps, args.baseline_precision or args.precision)
        batched = child(args.run, work, tmp / "bB", args.batch, args.steps, args.precision)
        report["per_clip_loop"] = per_clip
        report[f"continuous_batching_b{args.batch}"] = batched
        report["speedup"] = round(batched["frames_per_s"] / per_clip["frames_per_s"], 2)
        flops_per_call, isolated = unet_flops(args.run, args.batch, args.precision)
        calls = batched["unet_samples"] / (2 * args.batch)  # in full-batch equivalents (2 samples per item)
        peak = matmul_peak()
        report["matmul_peak_gflops"] = round(peak / 1e9, 1)  # fp32: the fractions below are of the fp32 peak
        report["unet_gflops_per_call"] = round(flops_per_call / 1e9, 3)
        report["unet_gflops_per_s_during_generation"] = round(flops_per_call * calls / batched["seconds"] / 1e9, 2)
        report["unet_fraction_of_peak_during_generation"] = round(flops_per_call * calls / batched["seconds"] / peak, 4)
        report["unet_fraction_of_peak_isolated"] = round(isolated / peak, 4)
        if not args.skip_memory:
            long, short = cut_audio(sources, tmp / "long", [60.0])[0], cut_audio(sources, tmp / "short", [10.0])[0]
            mem_long = child(args.run, [long], tmp / "g60", args.batch, 2, args.precision)
            mem_short = child(args.run, [short], tmp / "g10", args.batch, 2, args.precision)
            report["memory"] = {
                "audio_60s": mem_long,
                "audio_10s": mem_short,
                "peak_rss_ratio_60s_over_10s": round(mem_long["peak_rss_mb"] / mem_short["peak_rss_mb"], 3),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
