"""The spatial condition image: 68 landmarks drawn as a depth-shaded pseudo-3D face mesh (docs/architecture.md §1, §4).

The spatial condition adapter sees the face geometry the listener predicted — shape, lips, expression —
as this picture: a fixed triangulation of the 68 points, lifted to 3D by a fixed depth template (nose
tip forward, jaw sides back), Gouraud-shaded with a Lambert light, on black. The mouth interior (inside
the inner lip, 60–67) and the eyes are holes, so an open mouth reads as a black gap; the lips are tinted
so the mouth's outline stands out from the skin.

    points = model.reconstruct(coeffs.shape, mouth=coeffs.mouth, pose=coeffs.pose)  # (T, 68, 2) image px
    images = render_mesh(points, size=256)                                        # (T, 256, 256, 3) uint8

Points are pixel coordinates of the output image. To draw model-frame points (`reconstruct` without a
pose) in a face-centred crop, give them `canonical_pose(size)`; to draw them where a detected face was,
use the `pose` from `PCAMorphableModel.project` (and, for a crop, that crop's own transform after it).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy.spatial import Delaunay

from imagineid.face import landmarks68 as lm

SHIFT = 2  # cv2 sub-pixel bits: vertices are placed to 1/4 px
LIGHT = (-0.6, -0.6, 0.7)  # light direction (x right, y down, z toward the viewer): upper left, in front
AMBIENT = 0.25  # shade of a face turned away from the light; keeps every face pixel clearly non-black
LIP_TINT = 0.55  # green and blue of the lip triangles are scaled by this: reddish lips on grey skin
_CHUNK = 8  # faces rendered together
HOLES = (tuple(range(60, 68)), tuple(range(36, 42)), tuple(range(42, 48)))  # mouth interior, right eye, left eye


def _arc(x0: float, x1: float, y: float, bulge: float, n: int) -> np.ndarray:
    """n points from x0 to x1 on a shallow arc that rises (−y) by `bulge` in the middle. → (n, 2)."""
    t = np.linspace(0.0, 1.0, n)
    return np.stack([x0 + (x1 - x0) * t, y - bulge * np.sin(np.pi * t)], axis=1)


def _canonical_face() -> np.ndarray:
    """A frontal 68-point face in the model frame: face width (0 → 16) 1, nose tip at the origin, y down.

    Drawn from simple curves rather than taken from any dataset, so the mesh topology depends on no data.
    The lips are slightly apart and the eyes open, so the hole outlines are edges of the triangulation.
    """
    p = np.zeros((68, 2))
    phi = np.linspace(0.0, np.pi, 17)  # jaw: left ear → chin → right ear
    p[lm.JAW] = np.stack([-0.5 * np.cos(phi), -0.12 + 0.62 * np.sin(phi) ** 1.2], axis=1)
    p[lm.RIGHT_BROW] = _arc(-0.40, -0.08, -0.30, 0.05, 5)
    p[lm.LEFT_BROW] = _arc(0.08, 0.40, -0.30, 0.05, 5)
    p[lm.NOSE_BRIDGE] = [[0.0, -0.22], [0.0, -0.15], [0.0, -0.08], [0.0, 0.0]]
    p[lm.NOSE_BOTTOM] = [[-0.09, 0.06], [-0.045, 0.075], [0.0, 0.08], [0.045, 0.075], [0.09, 0.06]]
    eye = np.array([[-0.09, 0.0], [-0.035, -0.035], [0.035, -0.035], [0.09, 0.0], [0.035, 0.03], [-0.035, 0.03]])
    p[lm.RIGHT_EYE] = eye + [-0.2, -0.18]
    p[lm.LEFT_EYE] = eye * [-1.0, 1.0] + [0.2, -0.18]  # mirrored: 42 is the inner corner
    p[[42, 43, 44, 45, 46, 47]] = p[[45, 44, 43, 42, 47, 46]].copy()
    p[lm.OUTER_LIP] = [
        [-0.18, 0.25],
        [-0.11, 0.22],
        [-0.045, 0.205],
        [0.0, 0.21],
        [0.045, 0.205],
        [0.11, 0.22],
        [0.18, 0.25],
        [0.11, 0.30],
        [0.05, 0.32],
        [0.0, 0.325],
        [-0.05, 0.32],
        [-0.11, 0.30],
    ]
    p[lm.INNER_LIP] = [
        [-0.12, 0.25],
        [-0.05, 0.235],
        [0.0, 0.235],
        [0.05, 0.235],
        [0.12, 0.25],
        [0.05, 0.268],
        [0.0, 0.27],
        [-0.05, 0.268],
    ]
    return p


CANONICAL_FACE = _canonical_face()  # (68, 2) model frame of `PCAMorphableModel` too


def _depth_template() -> np.ndarray:
    """Pseudo-depth (toward the viewer, in face widths) of every landmark. → (68,)."""
    z = np.zeros(68)
    z[lm.JAW] = [
        -0.26,
        -0.23,
        -0.18,
        -0.11,
        -0.04,
        0.02,
        0.06,
        0.09,
        0.10,
        0.09,
        0.06,
        0.02,
        -0.04,
        -0.11,
        -0.18,
        -0.23,
        -0.26,
    ]
    z[lm.RIGHT_BROW] = [0.0, 0.04, 0.07, 0.09, 0.10]
    z[lm.LEFT_BROW] = [0.10, 0.09, 0.07, 0.04, 0.0]
    z[lm.NOSE_BRIDGE] = [0.10, 0.15, 0.20, 0.26]
    z[lm.NOSE_BOTTOM] = [0.13, 0.16, 0.18, 0.16, 0.13]
    z[lm.RIGHT_EYE] = [0.0, 0.04, 0.05, 0.05, 0.04, 0.03]
    z[lm.LEFT_EYE] = [0.05, 0.05, 0.04, 0.0, 0.03, 0.04]
    z[lm.OUTER_LIP] = [0.07, 0.10, 0.12, 0.13, 0.12, 0.10, 0.07, 0.10, 0.12, 0.12, 0.12, 0.10]
    z[lm.INNER_LIP] = [0.07, 0.11, 0.12, 0.11, 0.07, 0.10, 0.11, 0.10]
    return z


DEPTH = _depth_template()  # (68,)


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """The fixed mesh topology (K, 3) int32: Delaunay on `CANONICAL_FACE` minus the hole triangles.

    Ordered back to front by mean template depth (the painter's order `render_mesh` draws in).
    """
    tri = Delaunay(CANONICAL_FACE).simplices
    keep = [t for t in tri if not any(set(t.tolist()) <= set(hole) for hole in HOLES)]
    tri = np.array(sorted((sorted(t) for t in keep), key=lambda t: (DEPTH[t].mean(), tuple(t))), np.int32)
    tri.setflags(write=False)  # shared by every caller
    return tri


def canonical_pose(size: int, face_fraction: float = 0.6) -> np.ndarray:
    """Pose (log-scale, rotation, tx, ty) that puts a model-frame face, `face_fraction` of the crop wide, in
    the middle of a `size` px crop (the face's vertical centre, brows to chin, at the crop centre). → (4,)."""
    scale = face_fraction * size
    return np.array([np.log(scale), 0.0, size / 2.0, size / 2.0 - 0.1 * scale], np.float32)


def _vertex_shades(points: np.ndarray, tri: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Lambert shade per vertex (B, 68) from area-weighted vertex normals of the pseudo-3D mesh."""
    width = lm.face_width(points)[:, None]  # (B, 1)
    xyz = np.concatenate([points, (DEPTH[None] * width)[..., None]], axis=-1)  # (B, 68, 3)
    a, b, c = xyz[:, tri[:, 0]], xyz[:, tri[:, 1]], xyz[:, tri[:, 2]]  # (B, K, 3)
    face_n = np.cross(b - a, c - a)  # (B, K, 3), length = 2 × area
    face_n *= np.where(face_n[..., 2:] < 0, -1.0, 1.0)  # face the viewer (+z)
    normals = np.zeros_like(xyz)
    for k in range(3):
        np.add.at(normals, (slice(None), tri[:, k]), face_n)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-12
    return AMBIENT + (1.0 - AMBIENT) * np.clip(normals @ light, 0.0, 1.0)


def render_mesh(points: np.ndarray, size: int, triangles: np.ndarray | None = None) -> np.ndarray:
    """Draw faces as shaded meshes on black.

    points: (B, 68, 2) or (68, 2) pixel coordinates in the output image (x right, y down).
    triangles: (K, 3) vertex indices in back-to-front order; `face_triangles()` when None.
    Returns (B, size, size, 3) uint8, or (size, size, 3) for a single (68, 2) face.
    """
    pts = np.asarray(points, np.float64)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"points must be (B, 68, 2) or (68, 2), got {np.shape(points)}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or infinite coordinates")
    tri = face_triangles() if triangles is None else np.asarray(triangles, np.int32)
    if len(tri) > 254:
        raise ValueError(f"at most 254 triangles fit the uint8 id map, got {len(tri)}")
    out = np.empty((len(pts), size, size, 3), np.uint8)
    for start in range(0, len(pts), _CHUNK):  # chunks keep the per-pixel temporaries in cache
        out[start : start + _CHUNK] = _render(pts[start : start + _CHUNK], size, tri)
    return out[0] if single else out


def _render(pts: np.ndarray, size: int, tri: np.ndarray) -> np.ndarray:
    """`render_mesh` on a few faces (B, 68, 2) → (B, S, S, 3) uint8."""
    light = np.asarray(LIGHT, np.float64) / np.linalg.norm(LIGHT)
    shades = _vertex_shades(pts, tri, light)  # (B, 68)

    # 1. Triangle id per pixel, drawn back to front (later triangles cover earlier ones); 0 = background.
    fixed = np.round(pts * (1 << SHIFT)).astype(np.int32)  # (B, 68, 2)
    ids = np.zeros((len(pts), size, size), np.uint8)
    for b in range(len(pts)):
        for k, t in enumerate(tri):
            cv2.fillConvexPoly(ids[b], fixed[b, t], k + 1, lineType=cv2.LINE_8, shift=SHIFT)

    # 2. Gouraud: the shade is linear in (x, y) over a triangle, so solve each triangle's plane once and
    #    evaluate it per pixel through the id map; clamped to the triangle's vertex range (edge pixels).
    corners = pts[:, tri]  # (B, K, 3, 2)
    system = np.concatenate([corners, np.ones(corners.shape[:-1] + (1,))], axis=-1)  # (B, K, 3, 3)
    vertex_shade = shades[:, tri]  # (B, K, 3)
    flat = np.abs(np.linalg.det(system)) < 0.5  # under a quarter pixel of area: one mean shade
    system[flat] = np.eye(3)
    planes = np.linalg.solve(system, vertex_shade[..., None])[..., 0]  # (B, K, 3): shade = p0·x + p1·y + p2
    planes[flat] = 0.0
    planes[..., 2][flat] = vertex_shade[flat].mean(axis=-1)
    table = np.zeros((len(pts), len(tri) + 1, 5), np.float32)  # row 0: background, shade 0
    table[:, 1:, :3] = planes
    table[:, 1:, 3], table[:, 1:, 4] = vertex_shade.min(axis=-1), vertex_shade.max(axis=-1)
    index = ids.astype(np.int32) + (np.arange(len(pts), dtype=np.int32) * (len(tri) + 1))[:, None, None]
    p0, p1, p2, lo, hi = (np.take(table[..., c].ravel(), index) for c in range(5))  # each (B, S, S)
    grid = np.arange(size, dtype=np.float32)
    shade = np.clip(p0 * grid[None, None, :] + p1 * grid[None, :, None] + p2, lo, hi) * 255.0 + 0.5

    # 3. Colour: grey skin, reddish lips (triangles with all three corners on the lips).
    lips = np.concatenate([[False], (tri >= 48).all(axis=1)])  # (K + 1,), row 0 the background
    out = np.empty((len(pts), size, size, 3), np.uint8)
    out[..., 0] = shade
    out[..., 1] = np.where(np.take(lips, ids), shade * LIP_TINT, shade)
    out[..., 2] = out[..., 1]
    return out
