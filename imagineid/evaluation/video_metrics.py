"""Per-video metrics of a generated talking face, measured on the decoded mp4 (issue 7).

dlib runs on frames upscaled to `DLIB_SIZE` px (tiny-profile videos are 64 px). Per video:
- face detection rate;
- identity consistency: mean dlib-descriptor distance of each frame to frame 1 (< 0.6 ≈ same person);
- lip sync: Pearson r between the mouth opening measured on the frames and (a) the audio envelope
  (RMS per video frame), (b) the mouth opening of the conditioning mesh; r at lag 0 and the best lag
  within ±`MAX_LAG` frames (positive lag: the mouth follows the sound);
- background stability: PSNR outside the dilated face masks of frame 1 and frame t, vs frame 1;
- landmark jitter: mean |second temporal difference| of the landmarks / face width (lower is steadier).
Every number is a deterministic function of the video (and its index row), so re-evaluating is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imagineid.audio.features import frame_rms
from imagineid.face import landmarks68 as lm
from imagineid.face.dlib_backend import DLIB_SIZE, DlibLandmarker, upscaled
from imagineid.face.masks import blend_mask
from imagineid.media import iter_frames, load_audio

MAX_LAG = 5  # frames, ±200 ms at 25 fps


@dataclass
class VideoFaces:
    """What dlib sees in each frame of one video, at DLIB_SIZE px."""

    frames: list[np.ndarray]  # (S, S, 3) uint8 at DLIB_SIZE (kept for masks / strips; 64 px videos are small)
    landmarks: list[np.ndarray | None]  # (68, 2) or None
    descriptors: list[np.ndarray | None] = field(default_factory=list)  # (128,) or None


def detect_video(path: str | Path, landmarker: DlibLandmarker, every: int = 1) -> VideoFaces:
    frames, points, descriptors = [], [], []
    for k, frame in enumerate(iter_frames(path)):
        if k % every:
            continue
        image = upscaled(frame)
        boxes = landmarker.detect(image)
        frames.append(image)
        if boxes:
            points.append(landmarker.landmarks(image, boxes[0]))
            descriptors.append(landmarker.descriptor(image, boxes[0]))
        else:
            points.append(None)
            descriptors.append(None)
    return VideoFaces(frames, points, descriptors)


def lagged_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, float, int]:
    """Pearson r of a vs b where both are finite → (r at lag 0, best r, its lag); lag k pairs a[t + k] with b[t]."""

    def r(x: np.ndarray, y: np.ndarray) -> float:
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 5 or x[ok].std() == 0 or y[ok].std() == 0:
            return float("nan")
        return float(np.corrcoef(x[ok], y[ok])[0, 1])

    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    scores = {k: r(a[k:], b[: n - k]) if k >= 0 else r(a[: n + k], b[-k:]) for k in range(-max_lag, max_lag + 1)}
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    if not finite:
        return float("nan"), float("nan"), 0
    best = max(finite, key=lambda k: (finite[k], -abs(k)))
    return scores[0], finite[best], best


def _psnr(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float:
    if not keep.any():
        return float("nan")
    mse = float(((a[keep].astype(np.float64) - b[keep].astype(np.float64)) ** 2).mean())
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def video_metrics(faces: VideoFaces, audio: np.ndarray | None, mesh_opening: np.ndarray | None, every: int = 1) -> dict:
    """The per-video metrics of the module docstring (NaN where a metric has nothing to measure)."""
    n = len(faces.frames)
    found = [p is not None for p in faces.landmarks]
    out: dict = {"frames_checked": n, "face_detection_rate": float(np.mean(found)) if n else 0.0}
    first = next((i for i, ok in enumerate(found) if ok), None)
    # identity consistency: descriptor distance to the first frame with a face
    if first is not None:
        d0 = faces.descriptors[first]
        dists = [float(np.linalg.norm(d - d0)) for i, d in enumerate(faces.descriptors) if d is not None and i != first]
        out["identity_distance_to_frame1"] = float(np.mean(dists)) if dists else float("nan")
    else:
        out["identity_distance_to_frame1"] = float("nan")
    # lip sync
    opening = np.array([lm.mouth_opening(p) if p is not None else np.nan for p in faces.landmarks], np.float64)
    for name, reference in (
        ("audio", None if audio is None else frame_rms(audio, n * every, 25.0)[::every]),
        ("mesh", None if mesh_opening is None else np.asarray(mesh_opening, np.float64)[::every]),
    ):
        r0, best, lag = lagged_correlation(opening, reference) if reference is not None else (float("nan"),) * 2 + (0,)
        out[f"lipsync_{name}_r"], out[f"lipsync_{name}_best_r"], out[f"lipsync_{name}_best_lag"] = r0, best, lag
    # background stability vs frame 1, outside both frames' dilated face masks
    if first is not None:
        mask0 = blend_mask(faces.landmarks[first], DLIB_SIZE) > 0
        values = [
            _psnr(f, faces.frames[first], ~(mask0 | (blend_mask(p, DLIB_SIZE) > 0)))
            for i, (f, p) in enumerate(zip(faces.frames, faces.landmarks))
            if p is not None and i != first
        ]
        values = [v for v in values if np.isfinite(v)]
        out["background_psnr_db"] = float(np.mean(values)) if values else float("nan")
    else:
        out["background_psnr_db"] = float("nan")
    # landmark jitter: consecutive found frames only
    triples = [
        (a, b, c)
        for a, b, c in zip(faces.landmarks, faces.landmarks[1:], faces.landmarks[2:])
        if a is not None and b is not None and c is not None
    ]  # consecutive frames with a face
    if triples:
        a, b, c = (np.stack(x) for x in zip(*triples))  # (K, 68, 2) each
        accel = np.linalg.norm(c - 2 * b + a, axis=-1).mean(axis=-1)  # (K,)
        out["landmark_jitter"] = float((accel / lm.face_width(b)).mean())
    else:
        out["landmark_jitter"] = float("nan")
    out["mouth_opening"] = opening.tolist()
    return out


def read_audio(path: str | Path) -> np.ndarray | None:
    try:
        return load_audio(path)
    except Exception:  # noqa: BLE001 - a video without readable audio has no audio-based metrics
        return None
