"""The adapters stage on a small and an 8× larger dataset, same steps: peak RSS and steps/s; prints JSON.

    .venv/bin/python benchmarks/train_scale.py [--clips 16 128] [--steps 40] [--memory-mb 512]
    .venv/bin/python benchmarks/train_scale.py --sd15 [--steps 6]    # paper scale: 512 px crops, SD 1.5 base

It synthesizes and preprocesses the larger corpus once (speakers of 2 clips × 3 s), takes the smaller
dataset as a subset of its clips, trains the stages the adapters need for 2 steps each, then runs the
adapters stage for each dataset in a fresh process, so each peak RSS is that run's own. Steps/s comes from
the stage's checkpoint records (setup and validation left out); the prerequisite stages run in a process
of their own, so the peak RSS is the adapters stage's. Frames are decoded into memory while the training
split's decoded frames fit in `frame_memory_mb`, and streamed through a bounded buffer beyond it; the
JSON says which path each run took. `--memory-mb 100000` forces the in-memory path (the baseline).

`--sd15` measures the same at paper scale: the corpus preprocessed at 512 px crops, and the adapters
stage on a stand-in Stable Diffusion 1.5 folder (SD 1.5's block structure with tiny widths, random
weights, 512 px frames: tests/standins.py) through `--profile sd15`; at 512 px the frames always stream.
The VAE encodes in every step there (`cache_latents` off): filling the latent cache for 6,400 frames of
512 px would dominate the run, and the cache's effect is measured by the default mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from imagineid.data.store import Store
from imagineid.preprocessing import PreprocessConfig, preprocess
from imagineid.runs.folder import RunDir
from imagineid.synth.corpus import SynthConfig, synthesize_corpus
from imagineid.training.config import TrainConfig
from imagineid.training.frame_data import decoded_bytes
from imagineid.training.run import train

PREREQUISITES = "identity,content,emotion,ldm"
SD15_SIZE = 512  # px: the stand-in base's frame size, as SD 1.5's


def stand_in_sd15(folder: Path) -> Path:
    """A Stable Diffusion 1.5 layout folder at 512 px with tiny widths (the test suite's stand-in)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from standins import write_sd15

    return folder if (folder / "model_index.json").exists() else write_sd15(folder, sample_size=SD15_SIZE // 8)


def subset(data: Path, out: Path, n_clips: int) -> Path:
    """A dataset folder holding the first `n_clips` clips of `data` (whole speakers, in id order)."""
    store = Store(data)
    rows = sorted(store.read_table("clips", ["clip_id", "speaker_id"]).to_pylist(), key=lambda r: r["speaker_id"])
    keep = [r["clip_id"] for r in rows[:n_clips]]
    out.mkdir(parents=True)
    shutil.copytree(data / "morphable", out / "morphable")
    for table in ("clips", "frames", "audio"):
        (out / table).mkdir()
        for clip_id in keep:
            shutil.copy2(store.shard(table, clip_id), out / table)
    (out / "crops").mkdir()
    for clip_id in keep:
        shutil.copy2(data / "crops" / f"{clip_id}.mp4", out / "crops")
    return out


def base_config(memory_mb: int, sd15: Path | None) -> TrainConfig:
    if sd15 is None:
        return TrainConfig(voice_variants=1, checkpoint_every=5, frame_memory_mb=memory_mb)
    return TrainConfig(
        voice_variants=1,
        checkpoint_every=2,
        frame_memory_mb=memory_mb,
        profile="sd15",
        base_model=str(sd15),
        cache_latents=False,
    )


def prerequisites(data: Path, run: Path, memory_mb: int, sd15: Path | None = None) -> None:
    """The stages the adapters stage needs, 2 steps each (in their own process: their memory is not measured)."""
    stages = PREREQUISITES if sd15 is None else PREREQUISITES.replace(",ldm", "")  # sd15: the base is given
    train(data, run, stages, replace(base_config(memory_mb, sd15), max_steps=2), use_ray=False, progress=False)


def adapters_run(
    data: Path, run: Path, steps: int, memory_mb: int, cache_latents: bool = True, sd15: Path | None = None
) -> dict:
    """The adapters stage alone in this process; → steps/s between its first and last checkpoint, peak RSS."""
    import resource

    base = base_config(memory_mb, sd15)
    config = replace(base, adapters=replace(base.adapters, steps=steps), cache_latents=cache_latents and sd15 is None)
    shutil.rmtree(RunDir(run).stage("adapters"), ignore_errors=True)  # each measured run trains it afresh
    start = time.perf_counter()
    train(data, run, "adapters", config, use_ray=False, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    marks = [r for r in records if r.get("stage") == "adapters" and r.get("event") == "checkpoint"]
    first, last = marks[0], marks[-1]
    train_ids = set(RunDir(run).split()["train"])
    rows = Store(data).read_table("clips", ["clip_id", "n_frames"]).to_pylist()
    frames = sum(r["n_frames"] for r in rows if r["clip_id"] in train_ids)
    size = config.image_size if sd15 is None else SD15_SIZE
    in_memory = decoded_bytes(frames, size) <= memory_mb * 2**20
    return {
        "clips": len(rows),
        "train_frames": frames,
        "image_size": size,
        "decoded_mb_if_in_memory": round(decoded_bytes(frames, size) / 2**20, 1),
        "path": "memory" if in_memory else "stream",
        "latent_cache": config.cache_latents,
        "steps_per_s": round((last["step"] - first["step"]) / (last["seconds"] - first["seconds"]), 3),
        "stage_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, nargs=2, default=[16, 128])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--memory-mb", type=int, default=TrainConfig.frame_memory_mb)
    parser.add_argument("--work", type=Path, help="keep the corpus and datasets here (reruns reuse them)")
    parser.add_argument("--sd15", action="store_true", help="512 px crops and a stand-in SD 1.5 base (--profile sd15)")
    parser.add_argument("--child", nargs=4, metavar=("DATA", "RUN", "OUT", "SD15"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, run, out = map(Path, args.child[:3])
        sd15 = Path(args.child[3]) if args.child[3] != "-" else None
        if not out.name.endswith(".json"):  # the first child: the prerequisite stages
            prerequisites(data, run, args.memory_mb, sd15)
            return
        cache = not out.name.endswith("-nocache.json")
        out.write_text(json.dumps(adapters_run(data, run, args.steps, args.memory_mb, cache, sd15)))
        return
    small, large = sorted(args.clips)
    crop = SD15_SIZE if args.sd15 else PreprocessConfig.crop_size
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        tag = f"-{crop}" if args.sd15 else ""  # the datasets of each crop size side by side in --work
        start = time.perf_counter()
        synthesize_corpus(tmp / "s", SynthConfig(speakers=large // 2, clips_per_speaker=2, seed=31), progress=False)
        config = PreprocessConfig(crop_size=crop)
        preprocess([tmp / "s" / "videos"], tmp / f"large{tag}", config, workers=os.cpu_count(), progress=False)
        if not (tmp / f"small{tag}").exists():
            subset(tmp / f"large{tag}", tmp / f"small{tag}", small)
        sd15 = stand_in_sd15(tmp / "sd15-standin") if args.sd15 else None
        datasets = {small: tmp / f"small{tag}", large: tmp / f"large{tag}"}
        setup_s = time.perf_counter() - start
        runs = {}
        for n, data in datasets.items():
            out, run = tmp / f"result-{n}{tag}.json", tmp / f"run-{n}{tag}"
            shutil.rmtree(run, ignore_errors=True)
            child = [sys.executable, __file__, "--steps", str(args.steps), "--memory-mb", str(args.memory_mb)]
            base = str(sd15) if sd15 else "-"
            subprocess.run([*child, "--child", str(data), str(run), "prerequisites", base], check=True)
            subprocess.run([*child, "--child", str(data), str(run), str(out), base], check=True)
            runs[n] = json.loads(out.read_text())
            if n == small and not args.sd15:  # the step as it was: the VAE encoder in every step
                plain = tmp / f"result-{n}-nocache.json"
                subprocess.run([*child, "--child", str(data), str(run), str(plain), base], check=True)
                runs["plain"] = json.loads(plain.read_text())
    report = {
        "benchmark": "train_scale",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "profile": "sd15 (stand-in, 512 px)" if args.sd15 else "tiny",
        "adapters_steps": args.steps,
        "frame_memory_mb": args.memory_mb,
        "setup_seconds": round(setup_s, 1),
        "small": runs[small],
        "large": runs[large],
        "rss_ratio_large_over_small": round(runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"], 3),
        "steps_per_s_ratio_large_over_small": round(runs[large]["steps_per_s"] / runs[small]["steps_per_s"], 3),
        "target": "rss ratio <= 1.3; steps/s on the small set no lower than the in-memory path's",
    }
    if "plain" in runs:
        report["small_without_latent_cache"] = runs["plain"]
        report["steps_per_s_ratio_small_cache_over_plain"] = round(
            runs[small]["steps_per_s"] / runs["plain"]["steps_per_s"], 3
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
