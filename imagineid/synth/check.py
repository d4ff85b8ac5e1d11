"""Checks that a synthetic corpus is what it claims: detectable faces, true landmarks, mouth following speech.

Everything is measured on the decoded mp4 files (what later stages will read), not on in-memory frames.

    imagineid synth work/s --verify
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from imagineid.audio.features import frame_rms
from imagineid.audio.pitch import median_f0
from imagineid.face.dlib_backend import DlibLandmarker
from imagineid.media import iter_frames, load_audio


@dataclass(frozen=True)
class CorpusCheck:
    n_clips: int
    n_frames: int
    single_face_rate: float  # frames where dlib finds exactly one face
    landmark_error: float  # mean |dlib - ground truth| / dlib face-box width, over detected frames
    mouth_rms_correlation: float  # Pearson r, ground-truth mouth opening vs. decoded-audio RMS per frame
    median_f0_male: float  # Hz, over the male speakers' decoded audio
    median_f0_female: float  # Hz

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def check_corpus(root: str | Path, max_frames_per_clip: int | None = None, progress: bool = True) -> CorpusCheck:
    """Decode every clip of a corpus and compare it with its ground truth in metadata.parquet."""
    root = Path(root)
    meta = pq.read_table(root / "metadata.parquet").to_pylist()
    landmarker = DlibLandmarker(upsample=0)
    single, total, errors = 0, 0, []
    openings, energies = [], []
    f0: dict[str, list[float]] = {"male": [], "female": []}
    for row in tqdm(meta, desc="check", unit="clip", disable=not progress):
        video = root / row["video"]
        truth = np.asarray(row["landmarks"], np.float32).reshape(-1, 68, 2)  # (T, 68, 2)
        for i, frame in enumerate(iter_frames(video)):
            if max_frames_per_clip is not None and i >= max_frames_per_clip:
                break
            total += 1
            boxes = landmarker.detect(frame)
            if len(boxes) != 1:
                continue
            single += 1
            found = landmarker.landmarks(frame, boxes[0])
            errors.append(float(np.linalg.norm(found - truth[i], axis=1).mean() / boxes[0].width))
        audio = load_audio(video)
        openings.append(np.asarray(row["mouth_opening"], np.float32))
        energies.append(frame_rms(audio, len(openings[-1]), float(row["fps"])))
        if row["age_group"] != "child":
            f0[row["gender"]].append(median_f0(audio, 16000))
    o, e = np.concatenate(openings), np.concatenate(energies)
    return CorpusCheck(
        n_clips=len(meta),
        n_frames=total,
        single_face_rate=single / max(total, 1),
        landmark_error=float(np.mean(errors)) if errors else float("nan"),
        mouth_rms_correlation=float(np.corrcoef(o, e)[0, 1]),
        median_f0_male=float(np.median(f0["male"])) if f0["male"] else float("nan"),
        median_f0_female=float(np.median(f0["female"])) if f0["female"] else float("nan"),
    )


@dataclass(frozen=True)
class PreprocessCheck:
    n_clips: int
    n_frames: int
    landmark_error_iod: float  # mean |tracked - ground truth| / inter-ocular distance (outer eye corners)
    mouth_opening_correlation: float  # Pearson r, opening of the mouth-only reconstruction vs ground truth

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def check_preprocessed(corpus: str | Path, data: str | Path) -> PreprocessCheck:
    """Compare a dataset preprocessed from a synthetic corpus with the corpus' ground truth."""
    from imagineid.data.morphable import current_model
    from imagineid.data.parquet_io import to_numpy_vectors
    from imagineid.data.store import Store
    from imagineid.face import landmarks68 as lm

    store = Store(Path(data))
    model = current_model(store)
    truth = {r["clip_id"]: r for r in pq.read_table(Path(corpus) / "metadata.parquet").to_pylist()}
    errors, measured, expected = [], [], []
    for clip in store.read_table("clips", ["clip_id", "source", "shape"]).to_pylist():
        row = truth[Path(clip["source"]).stem]
        gt = np.asarray(row["landmarks"], np.float32).reshape(-1, 68, 2)  # (T, 68, 2)
        tracked = store.clip_landmarks(clip["clip_id"])
        iod = np.linalg.norm(gt[:, 45] - gt[:, 36], axis=1)
        errors.append(np.linalg.norm(tracked - gt, axis=2).mean(axis=1) / iod)
        mouth = to_numpy_vectors(store.clip_frames(clip["clip_id"], ["mouth"])["mouth"])
        measured.append(lm.mouth_opening(model.reconstruct(np.asarray(clip["shape"], np.float32), mouth=mouth)))
        expected.append(lm.mouth_opening(gt))
    return PreprocessCheck(
        n_clips=len(errors),
        n_frames=int(sum(len(e) for e in errors)),
        landmark_error_iod=float(np.mean(np.concatenate(errors))),
        mouth_opening_correlation=float(np.corrcoef(np.concatenate(measured), np.concatenate(expected))[0, 1]),
    )


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Check a synthetic corpus (and its preprocessed dataset).")
    parser.add_argument("corpus")
    parser.add_argument("--data", help="dataset preprocessed from the corpus")
    args = parser.parse_args()
    report = check_corpus(args.corpus).as_dict()
    if args.data:
        report |= check_preprocessed(args.corpus, args.data).as_dict()
    print(json.dumps(report, indent=2))
