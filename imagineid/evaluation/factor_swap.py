"""Factor-swap check (the paper's analysis; issue 6): does the mouth follow the content audio?

    python -m imagineid.evaluation.factor_swap RUN A.wav B.wav --out GEN [--seeds 2]

Generates videos with identity from A and content from B (`--identity-from A`, content B), measures
the mouth opening on the generated frames (dlib) and correlates it with the mouth opening the
disentangler predicts for B's audio and for A's audio (over the frames both have). Prints JSON; the
content factor is carried when r(B) > r(A).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from imagineid.evaluation.video_metrics import detect_video, lagged_correlation
from imagineid.face import landmarks68 as lm
from imagineid.face.dlib_backend import DlibLandmarker
from imagineid.generation.conditions import Planner
from imagineid.generation.config import GenerateConfig
from imagineid.generation.run import generate
from imagineid.media import load_audio


def factor_swap(
    run: Path, identity_audio: Path, content_audio: Path, out: Path, seeds: int = 2, steps: int = 20
) -> dict:
    cfg = GenerateConfig(seeds=seeds, steps=steps, identity_from=str(identity_audio))
    generate(run, [content_audio], out, cfg, use_ray=False, progress=False)
    rows = [r for r in pq.read_table(out / "index.parquet").to_pylist() if r["status"] == "ok"]
    planner = Planner.load(run, size=64)
    predicted = {
        name: planner.plan(planner.listener.prepare(load_audio(path))).mouth_opening
        for name, path in (("A", identity_audio), ("B", content_audio))
    }
    landmarker = DlibLandmarker(upsample=1)
    report = {"identity_from": str(identity_audio), "content_from": str(content_audio), "videos": []}
    for row in rows:
        faces = detect_video(out / row["video"], landmarker)
        measured = np.array([lm.mouth_opening(p) if p is not None else np.nan for p in faces.landmarks])
        entry = {"video": row["video"], "face_rate": float(np.isfinite(measured).mean())}
        for name, series in predicted.items():
            entry[f"r_with_{name}"] = lagged_correlation(measured, series)[0]
        report["videos"].append(entry)
    for name in ("A", "B"):
        values = [v[f"r_with_{name}"] for v in report["videos"] if np.isfinite(v[f"r_with_{name}"])]
        report[f"mean_r_with_{name}"] = float(np.mean(values)) if values else None
    report["content_follows_B"] = (report["mean_r_with_B"] or -1) > (report["mean_r_with_A"] or -1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("identity_audio", type=Path)
    parser.add_argument("content_audio", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(
        json.dumps(
            factor_swap(args.run, args.identity_audio, args.content_audio, args.out, args.seeds, args.steps), indent=2
        )
    )


if __name__ == "__main__":
    main()
