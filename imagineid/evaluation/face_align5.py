"""ArcFace's face alignment: five landmarks → a similarity warp onto insightface's 112 × 112 template.

Every ArcFace model was trained on crops made exactly this way (insightface `face_align.norm_crop`:
Umeyama similarity from the five points to `ARCFACE_TEMPLATE`, `cv2.warpAffine`, black border), and its
embeddings degrade fast on crops made any other way. The five points come from the 68-point layout:
the two eye centres, the nose tip and the two mouth corners, in image order (left first).
"""

from __future__ import annotations

import numpy as np

from imagineid.face import landmarks68 as lm

SIZE = 112  # px
# insightface's arcface_dst: left eye, right eye, nose tip, left mouth corner, right mouth corner (image x order)
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 30, 48, 54


def five_points(points68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks → (5, 2) in ArcFace's order (indices 36-41 are the eye on the image's left)."""
    p = np.asarray(points68, np.float64)
    return np.stack(
        [p[lm.RIGHT_EYE].mean(axis=0), p[lm.LEFT_EYE].mean(axis=0), p[NOSE_TIP], p[MOUTH_LEFT], p[MOUTH_RIGHT]]
    )


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, as skimage's SimilarityTransform) taking src onto dst → (2, 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(axis=0).sum()
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def align_face(image: np.ndarray, points68: np.ndarray) -> np.ndarray:
    """(H, W, 3) frame + its 68 landmarks → the (112, 112, 3) ArcFace crop, same channel order as the input."""
    import cv2

    matrix = similarity(five_points(points68), ARCFACE_TEMPLATE)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (SIZE, SIZE), borderValue=0.0)
