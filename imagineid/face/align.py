"""Aligned face crops: one similarity transform (image → crop) per frame, smoothed over time.

    from imagineid.face.align import AlignConfig, alignment_transforms, crop_frames, transform_points
    transforms = alignment_transforms(track.landmarks)               # (T, 2, 3)
    for crop in crop_frames(iter_frames("clip.mp4"), transforms, 256):  # (256, 256, 3) uint8
        ...
    crop_points = transform_points(track.landmarks, transforms)      # (T, 68, 2) in crop pixels

The crop follows FFHQ's alignment: the oriented square is built from the eye centres and the mouth
corners (not the lip centres, which move when the jaw drops), its side proportional to the larger of
the eye-to-eye and eye-to-mouth distances. The transform's parameters (centre, log scale, angle) are
smoothed over time with a Gaussian, not the landmarks, so crops follow the head without jitter while
the face inside them keeps its own motion.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from imagineid.face import landmarks68 as lm


@dataclass(frozen=True)
class AlignConfig:
    crop_size: int = 256  # output side in pixels
    eye_to_eye: float = 2.0  # half the crop side >= this × eye-centre distance (FFHQ: 2.0) ...
    eye_to_mouth: float = 1.8  # ... and >= this × eye-centre→mouth-corners distance (FFHQ: 1.8)
    centre_shift: float = 0.1  # crop centre = eye centre + this × eye→mouth vector (FFHQ: 0.1)
    smooth_window: int = 9  # frames; Gaussian window (sigma = window / 4) over centre, log scale, angle; 1 = off


def _params(landmarks: np.ndarray, config: AlignConfig) -> np.ndarray:
    """Per frame: centre x, centre y, log half-side, angle of the crop's x axis. (T, 68, 2) → (T, 4)."""
    p = landmarks.astype(np.float64)
    eye_l = p[:, lm.RIGHT_EYE].mean(axis=1)  # the subject's right eye: image left
    eye_r = p[:, lm.LEFT_EYE].mean(axis=1)
    eye_avg = (eye_l + eye_r) / 2
    mouth_avg = (p[:, 48] + p[:, 54]) / 2
    eye_to_eye = eye_r - eye_l  # (T, 2)
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.stack([-eye_to_mouth[:, 1], eye_to_mouth[:, 0]], axis=1)  # FFHQ's x axis
    half = np.maximum(
        config.eye_to_eye * np.linalg.norm(eye_to_eye, axis=1),
        config.eye_to_mouth * np.linalg.norm(eye_to_mouth, axis=1),
    )
    centre = eye_avg + config.centre_shift * eye_to_mouth
    angle = np.unwrap(np.arctan2(x[:, 1], x[:, 0]))
    return np.column_stack([centre, np.log(half), angle])


def _matrices(params: np.ndarray, size: int) -> np.ndarray:
    """Similarity transforms mapping the oriented square of each frame onto (0..size)². (T, 4) → (T, 2, 3)."""
    cx, cy, log_half, angle = params.T
    s = size / (2 * np.exp(log_half))
    a, b = s * np.cos(angle), s * np.sin(angle)
    # crop = s · R(-angle) · (p - centre) + size / 2
    m = np.empty((len(params), 2, 3))
    m[:, 0, 0], m[:, 0, 1] = a, b
    m[:, 1, 0], m[:, 1, 1] = -b, a
    m[:, 0, 2] = size / 2 - (a * cx + b * cy)
    m[:, 1, 2] = size / 2 - (-b * cx + a * cy)
    return m


def alignment_transforms(landmarks: np.ndarray, config: AlignConfig = AlignConfig()) -> np.ndarray:
    """Image → crop similarity transforms (T, 2, 3) float64 from landmarks (T, 68, 2), smoothed over time."""
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2) or len(landmarks) == 0:
        raise ValueError(f"landmarks must be (T, 68, 2) with T >= 1, got {landmarks.shape}")
    params = _params(landmarks, config)
    if config.smooth_window > 1 and len(params) > 1:
        params = gaussian_filter1d(params, sigma=config.smooth_window / 4, axis=0, mode="nearest", truncate=2.0)
    return _matrices(params, config.crop_size)


def transform_points(points: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Apply transforms to points: (..., N, 2) with (..., 2, 3) → (..., N, 2), broadcasting the leading axes."""
    points = np.asarray(points, np.float64)
    transforms = np.asarray(transforms, np.float64)
    out = np.einsum("...ij,...nj->...ni", transforms[..., :2], points) + transforms[..., None, :, 2]
    return out.astype(np.float32)


def invert_transforms(transforms: np.ndarray) -> np.ndarray:
    """Crop → image transforms (..., 2, 3), e.g. to paste generated crops back into the frames."""
    transforms = np.asarray(transforms, np.float64)
    linear = np.linalg.inv(transforms[..., :2])  # (..., 2, 2)
    shift = -np.einsum("...ij,...j->...i", linear, transforms[..., 2])
    return np.concatenate([linear, shift[..., None]], axis=-1)


def crop_frames(frames: Iterable[np.ndarray], transforms: np.ndarray, size: int = 256) -> Iterator[np.ndarray]:
    """Warp each frame with its transform into a (size, size) crop (bilinear, borders replicated).

    The transforms must have been made for this `size` (AlignConfig.crop_size). Streams: one frame in,
    one crop out; a frame count different from len(transforms) raises ValueError.
    """
    n = len(transforms)
    i = -1
    for i, frame in enumerate(frames):
        if i >= n:
            raise ValueError(f"more frames than transforms ({n})")
        m = transforms[i].astype(np.float64)
        yield cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if i + 1 != n:
        raise ValueError(f"{i + 1} frames for {n} transforms")
