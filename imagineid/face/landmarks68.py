"""The 68-point landmark layout (iBUG 300-W / dlib order) and measurements on it.

Index groups are half-open ranges so `points[JAW]` reads naturally.
"""

from __future__ import annotations

import numpy as np

JAW = slice(0, 17)
RIGHT_BROW = slice(17, 22)
LEFT_BROW = slice(22, 27)
NOSE_BRIDGE = slice(27, 31)
NOSE_BOTTOM = slice(31, 36)
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
OUTER_LIP = slice(48, 60)
INNER_LIP = slice(60, 68)

# Inner-lip points on the upper and lower lip, left to right (corners 60 and 64 excluded).
INNER_UPPER = (61, 62, 63)
INNER_LOWER = (67, 66, 65)


def face_width(points: np.ndarray) -> np.ndarray:
    """Jaw width (point 0 to 16): the scale every face-relative distance is divided by. (..., 68, 2) → (...)."""
    return np.linalg.norm(points[..., 16, :] - points[..., 0, :], axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap divided by face width; 0 when the lips touch. (..., 68, 2) → (...)."""
    upper = points[..., list(INNER_UPPER), 1]
    lower = points[..., list(INNER_LOWER), 1]
    gap = np.clip(lower - upper, 0.0, None).mean(axis=-1)
    return gap / face_width(points)


def box_width(points: np.ndarray) -> np.ndarray:
    """Width of the landmarks' bounding box, a detector-independent face size. (..., 68, 2) → (...)."""
    return points[..., 0].max(axis=-1) - points[..., 0].min(axis=-1)
