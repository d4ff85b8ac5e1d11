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

from imagineid.data.speech import frame_rms, median_f0
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
