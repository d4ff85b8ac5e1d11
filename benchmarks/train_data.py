"""WindowDataset throughput vs. a simulated consumer (a tiny model's training step), in one run; prints JSON.

    .venv/bin/python benchmarks/train_data.py [--data DATA] [--window 32] [--batch 32] [--batches 50] [--stream]

Without --data it synthesizes and preprocesses a small corpus in a temp dir first. A ratio (loader / consumer)
above 1 means the loader keeps up with that consumer on one process (DataLoader num_workers=0).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from imagineid.data.clips import mel_stats, split_clips
from imagineid.preprocessing import PreprocessConfig, preprocess
from imagineid.synth.corpus import SynthConfig, synthesize_corpus
from imagineid.training.data import WindowDataset


def build_corpus(folder: Path) -> Path:
    synthesize_corpus(
        folder / "synth", SynthConfig(speakers=4, clips_per_speaker=2, seconds=3.0, seed=11), progress=False
    )
    preprocess([folder / "synth" / "videos"], folder / "data", PreprocessConfig(), workers=1, progress=False)
    return folder / "data"


def measure(data: Path, window: int, batch: int, batches: int, cache_clips: bool) -> dict:
    # 1. Data: train split, mel statistics, a loader that yields exactly `batches` batches
    train = split_clips(data)["train"]
    stats = mel_stats(data, train)
    dataset = WindowDataset(
        data, train, window=window, stats=stats, windows_per_epoch=batch * batches, cache_clips=cache_clips
    )
    loader = DataLoader(dataset, batch_size=batch, num_workers=0)

    # 2. Loader alone (first pass fills the clip cache when enabled; timed on the second)
    list(loader)
    start = time.perf_counter()
    held = list(loader)
    loader_s = time.perf_counter() - start

    # 3. Consumer alone: a tiny audio → mouth model, one AdamW step per held batch
    torch.manual_seed(0)
    n_mouth = held[0]["mouth"].shape[-1]
    model = nn.Sequential(nn.Conv1d(80, 128, 5, stride=4, padding=2), nn.GELU(), nn.Conv1d(128, n_mouth, 3, padding=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for b in held:
        pred = model(b["mel"].transpose(1, 2)).transpose(1, 2)  # (B, W, n_mouth)
        loss = ((pred - b["mouth"]) ** 2)[b["valid"]].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    consumer_s = time.perf_counter() - start

    windows = batch * batches
    return {
        "benchmark": "train_data",
        "clips": len(train),
        "window": window,
        "batch": batch,
        "batches": batches,
        "cache_clips": cache_clips,
        "torch_threads": torch.get_num_threads(),
        "loader_windows_per_s": round(windows / loader_s, 1),
        "consumer_windows_per_s": round(windows / consumer_s, 1),
        "ratio_loader_to_consumer": round(consumer_s / loader_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="a preprocessed dataset (default: build one)")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--stream", action="store_true", help="cache_clips=False: read clips through the buffer")
    args = parser.parse_args()
    if args.data is not None:
        result = measure(args.data, args.window, args.batch, args.batches, not args.stream)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(build_corpus(Path(tmp)), args.window, args.batch, args.batches, not args.stream)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
