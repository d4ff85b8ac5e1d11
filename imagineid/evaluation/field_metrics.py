"""The metrics talking-face papers report, computed where their weight files are configured.

    field = FieldMetrics(FieldWeights(syncnet=..., fid_inception=..., arcface=..., i3d=...))
    per_video = field.video(faces, audio, reference)   # LSE-C/D, CSIM, M-LMD/F-LMD for one video
    summary = field.summary(per_video_rows)            # means + FID over every frame, FVD over every clip
    field.skipped                                      # {metric: why, and which file would enable it}

Nothing is downloaded: a metric whose file is not given is listed in `skipped` with its reason and the
option that enables it; a file that is given but missing or malformed stops the evaluation with one line
(the user asked for that metric). Reference-based metrics (CSIM, LMD, FID) need the ground-truth video of
the driving audio (a source clip with frames); videos generated from audio-only files have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagineid.errors import PRETRAINED_DOCS, ImagineIDError
from imagineid.evaluation.csim import csim, csim_dlib
from imagineid.evaluation.fid import RESOLUTION, fid_from_features, image_features
from imagineid.evaluation.fvd import fvd_from_features, video_features
from imagineid.evaluation.landmark_distance import landmark_distances
from imagineid.evaluation.lse import lse
from imagineid.evaluation.metric_info import LANDMARK_BACKENDS
from imagineid.evaluation.video_metrics import VideoFaces

PER_VIDEO = ("lse_c", "lse_d", "csim", "csim_dlib", "m_lmd", "f_lmd")


def _needs(what: str, option: str, section: str) -> str:
    return f"skipped: needs {what} ({option} PATH; see {PRETRAINED_DOCS} § {section}); nothing is downloaded"


SKIP_REASONS = {
    "lse_c": _needs("SyncNet weights (syncnet_v2.model)", "--syncnet", "SyncNet"),
    "lse_d": _needs("SyncNet weights (syncnet_v2.model)", "--syncnet", "SyncNet"),
    "fid": _needs(
        "Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth)", "--fid-inception", "FID Inception"
    ),
    "fvd": _needs("I3D weights (i3d_pretrained_400.pt or pytorch-i3d's rgb_imagenet.pt)", "--i3d", "FVD I3D"),
    "csim": _needs("ArcFace weights (w600k_r50.onnx or backbone.pth)", "--arcface", "ArcFace")
    + "; csim_dlib (dlib descriptors, not comparable to published CSIM) is reported instead",
}


@dataclass(frozen=True)
class FieldWeights:
    """Local weight files for the field's metrics (None: that metric is skipped) and the LMD landmarker."""

    syncnet: Path | None = None  # syncnet_python's syncnet_v2.model
    fid_inception: Path | None = None  # pytorch-fid's pt_inception-2015-12-05-*.pth
    arcface: Path | None = None  # insightface *.onnx or arcface_torch backbone.pth
    i3d: Path | None = None  # pytorch-i3d layout: VideoGPT's i3d_pretrained_400.pt or rgb_imagenet.pt
    landmarks: str = "dlib"  # "fan": M-LMD / F-LMD on face-alignment's 2D-FAN-4 (its checkpoints must be there)


class FieldMetrics:
    """The configured networks, loaded once; FID features accumulate over the videos measured."""

    def __init__(self, weights: FieldWeights | None = None) -> None:
        self.weights = weights = weights or FieldWeights()
        self.syncnet = self.inception = self.arcface = self.fan = self.i3d = None
        if weights.syncnet is not None:
            from imagineid.evaluation.syncnet import load_syncnet

            self.syncnet = load_syncnet(weights.syncnet)
        if weights.fid_inception is not None:
            from imagineid.evaluation.fid_inception import load_fid_inception

            self.inception = load_fid_inception(weights.fid_inception)
        if weights.arcface is not None:
            from imagineid.evaluation.arcface import load_arcface

            self.arcface = load_arcface(weights.arcface)
        if weights.i3d is not None:
            from imagineid.evaluation.i3d import load_i3d

            self.i3d = load_i3d(weights.i3d)
        if weights.landmarks == "fan":
            from imagineid.face.fan_backend import FanLandmarker

            self.fan = FanLandmarker()
        elif weights.landmarks not in LANDMARK_BACKENDS:
            raise ImagineIDError(
                f"--lmd-landmarks must be one of {', '.join(LANDMARK_BACKENDS)}, not {weights.landmarks!r}"
            )
        self._fid_generated: list[np.ndarray] = []
        self._fid_reference: list[np.ndarray] = []
        self._fvd_generated: list[np.ndarray] = []
        self._fvd_reference: list[np.ndarray] = []

    @property
    def skipped(self) -> dict[str, str]:
        """Each metric not computed → why, and which file would enable it."""
        loaded = {
            "lse_c": self.syncnet,
            "lse_d": self.syncnet,
            "fid": self.inception,
            "fvd": self.i3d,
            "csim": self.arcface,
        }
        return {k: v for k, v in SKIP_REASONS.items() if loaded.get(k) is None}

    def _fan_points(self, frames: list[np.ndarray]) -> list[np.ndarray | None]:
        points = []
        for frame in frames:
            boxes = self.fan.detect(frame)
            points.append(self.fan.landmarks(frame, boxes[0]) if boxes else None)
        return points

    def video(self, faces: VideoFaces, audio: np.ndarray | None, reference: VideoFaces | None, every: int = 1) -> dict:
        """The per-video field metrics (NaN where one cannot be measured: no audio, no reference, every > 1)."""
        out: dict = {name: float("nan") for name in PER_VIDEO}
        if self.syncnet is not None and audio is not None and every == 1:
            out.update(lse(self.syncnet, faces.frames, faces.landmarks, audio))
        if reference is None:
            return out
        out["csim_dlib"] = csim_dlib(faces.descriptors, reference.descriptors)
        if self.arcface is not None:
            out["csim"] = csim(self.arcface, (faces.frames, faces.landmarks), (reference.frames, reference.landmarks))
        if self.fan is not None:
            out.update(landmark_distances(self._fan_points(faces.frames), self._fan_points(reference.frames)))
        else:
            out.update(landmark_distances(faces.landmarks, reference.landmarks))
        out["lmd_landmarks"] = self.weights.landmarks
        if self.inception is not None:
            self._fid_generated.append(image_features(faces.frames, self.inception, RESOLUTION))
            self._fid_reference.append(image_features(reference.frames, self.inception, RESOLUTION))
        if self.i3d is not None and every == 1:  # FVD's clips are consecutive frames
            self._fvd_generated.append(video_features([faces.frames], self.i3d))
            self._fvd_reference.append(video_features([reference.frames], self.i3d))
        return out

    def summary(self, videos: list[dict]) -> dict:
        """NaN-aware means of the per-video metrics, FID over all frames and FVD over all clips measured (with
        their sample counts)."""
        out: dict = {}
        for name in PER_VIDEO:
            values = np.asarray([v.get(name, np.nan) for v in videos], np.float64)
            values = values[np.isfinite(values)]
            out[name] = float(values.mean()) if len(values) else None
        if self.inception is not None:
            gen = [f for f in self._fid_generated if len(f)]
            ref = [f for f in self._fid_reference if len(f)]
            a = np.concatenate(gen) if gen else np.zeros((0, 2048))
            b = np.concatenate(ref) if ref else np.zeros((0, 2048))
            out["fid"] = fid_from_features(a, b) if len(a) >= 2 and len(b) >= 2 else None
            out.update(fid_samples_generated=len(a), fid_samples_reference=len(b), fid_resolution=RESOLUTION)
        if self.i3d is not None:
            gen = [f for f in self._fvd_generated if len(f)]
            ref = [f for f in self._fvd_reference if len(f)]
            empty = np.zeros((0, 0))
            out.update(fvd_from_features(np.concatenate(gen) if gen else empty, np.concatenate(ref) if ref else empty))
        return out
