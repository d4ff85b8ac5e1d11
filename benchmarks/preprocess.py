"""Preprocess throughput vs. decode-only on the same synthetic clips, in one run; prints JSON.

    .venv/bin/python benchmarks/preprocess.py [--speakers 4] [--clips 2] [--seconds 3] [--workers 1] [--distractor]

`--distractor` puts a still face of the same size beside every speaker (clips twice as wide), so the
subject policy does its costly part on every clip: two tracks, descriptors, mouth-speech agreement.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from imagineid.media import iter_frames, load_audio, read_frames, write_video
from imagineid.preprocessing import PreprocessConfig, preprocess
from imagineid.synth.corpus import SynthConfig, synthesize_corpus


def _add_still_faces(videos: list[Path]) -> None:
    """Rewrite each clip with the next clip's first frame, still, beside it (same audio)."""
    stills = [read_frames(v)[0] for v in videos]
    for i, video in enumerate(videos):
        frames = read_frames(video)
        still = stills[(i + 1) % len(videos)]
        write_video(video, (np.concatenate([f, still], axis=1) for f in frames), fps=25, audio=load_audio(video))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--speakers", type=int, default=4)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--distractor", action="store_true", help="a still face beside every speaker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "synth"
        synthesize_corpus(
            corpus,
            SynthConfig(speakers=args.speakers, clips_per_speaker=args.clips, seconds=args.seconds, seed=11),
            progress=False,
        )
        videos = sorted((corpus / "videos").glob("*.mp4"))
        if args.distractor:
            _add_still_faces(videos)

        start = time.perf_counter()
        n_frames = 0
        for video in videos:
            n_frames += sum(1 for _ in iter_frames(video, fps=25))
            load_audio(video)
        decode_s = time.perf_counter() - start

        start = time.perf_counter()
        summary = preprocess(
            [corpus / "videos"], Path(tmp) / "data", PreprocessConfig(), workers=args.workers, progress=False
        )
        full_s = time.perf_counter() - start

    decode_fps, full_fps = n_frames / decode_s, n_frames / full_s
    print(
        json.dumps(
            {
                "benchmark": "preprocess",
                "clips": len(videos),
                "frames": n_frames,
                "distractor": args.distractor,
                "processed": summary.n_processed,
                "workers": args.workers,
                "decode_only_frames_per_s": round(decode_fps, 1),
                "preprocess_frames_per_s": round(full_fps, 1),
                "ratio_preprocess_to_decode": round(full_fps / decode_fps, 4),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
