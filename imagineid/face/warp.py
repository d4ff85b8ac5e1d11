"""Thin-plate-spline image warps driven by point correspondences.

Used to move a photographic face to new landmarks (synthetic corpus) without a renderer: the backward
map is solved on a coarse grid and upsampled, which is smooth enough for faces and ~1 ms per frame.
"""

from __future__ import annotations

import cv2
import numpy as np


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    return np.where(r2 > 0, 0.5 * r2 * np.log(np.maximum(r2, 1e-12)), 0.0)


def tps_backward_map(
    dst: np.ndarray, src: np.ndarray, size: tuple[int, int], grid: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (map_x, map_y) for `cv2.remap` so that output pixel `dst[i]` samples input pixel `src[i]`.

    dst, src: (N, 2) pixel coordinates; size: output (width, height).
    """
    w, h = size
    scale = float(max(w, h))
    d = dst.astype(np.float64) / scale  # (N, 2), normalised for conditioning
    s = src.astype(np.float64) / scale
    n = len(d)
    k = _tps_kernel(((d[:, None, :] - d[None, :, :]) ** 2).sum(-1))  # (N, N)
    p = np.hstack([np.ones((n, 1)), d])  # (N, 3)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = k + 1e-8 * np.eye(n)
    system[:n, n:] = p
    system[n:, :n] = p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = s
    coef = np.linalg.solve(system, rhs)  # (N + 3, 2)

    # Sample at the pixel centres cv2.resize assumes, so the upsampled map is exact between samples.
    xs = (np.arange(grid) + 0.5) * w / grid - 0.5
    ys = (np.arange(grid) + 0.5) * h / grid - 0.5
    gx, gy = np.meshgrid(xs, ys)
    g = np.stack([gx.ravel(), gy.ravel()], axis=1) / scale  # (G*G, 2)
    kg = _tps_kernel(((g[:, None, :] - d[None, :, :]) ** 2).sum(-1))  # (G*G, N)
    mapped = kg @ coef[:n] + np.hstack([np.ones((len(g), 1)), g]) @ coef[n:]  # (G*G, 2)
    mapped = (mapped * scale).reshape(grid, grid, 2).astype(np.float32)
    full = cv2.resize(mapped, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(full[..., 0]), np.ascontiguousarray(full[..., 1])


def remap(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray], border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    """Apply a backward map to an image or mask (any dtype cv2 supports)."""
    return cv2.remap(image, maps[0], maps[1], interpolation=cv2.INTER_LINEAR, borderMode=border)
