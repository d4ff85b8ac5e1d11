"""FID between two sets of frames: Inception pool features → Gaussian fit → Fréchet distance.

Both sets are resized to one fixed resolution first (`RESOLUTION`, then Inception's own 299 px), so the
score does not depend on which side was stored larger. The sample counts are part of the result: FID is
biased upward at small N (the 2048-d covariance is rank-deficient below 2049 samples), so scores are
comparable only at equal counts, and only with pytorch-fid's weights (published FID uses them).

    result = fid(generated_frames, reference_frames, load_fid_inception(path))
    # {"fid": ..., "fid_samples_generated": N, "fid_samples_reference": M, "fid_resolution": 256}
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from imagineid.evaluation.frechet import feature_stats, frechet_distance

RESOLUTION = 256  # px: every frame of both sets is resized to this square before Inception sees it
BATCH = 16


def _resized(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frame.shape[:2] == (size, size):
        return frame
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_CUBIC)


@torch.no_grad()
def image_features(
    frames: Iterable[np.ndarray], model: nn.Module, size: int = RESOLUTION, batch: int = BATCH
) -> np.ndarray:
    """RGB uint8 frames (H, W, 3) → (N, D) float64 features of `model` (input (B, 3, S, S) in [0, 1])."""
    out, pending = [], []
    device = next(model.parameters()).device

    def flush() -> None:
        x = torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).float().div(255.0)  # (B, 3, S, S)
        out.append(model(x.to(device)).double().cpu().numpy())
        pending.clear()

    for frame in frames:
        pending.append(_resized(np.asarray(frame, np.uint8), size))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 0))


def fid_from_features(generated: np.ndarray, reference: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets.

    With fewer samples than dimensions the covariances are singular and a D × D `sqrtm` is both slow and
    inaccurate; the same quantity is then exact from the samples: Tr (Σ₁Σ₂)^½ is the nuclear norm of
    X₁ᶜ X₂ᶜᵀ / √((N₁ − 1)(N₂ − 1)) (Xᶜ: the centred features), an N₁ × N₂ problem.
    """
    a, b = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    if len(a) + len(b) > a.shape[1]:
        return frechet_distance(*feature_stats(a), *feature_stats(b))
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = a.mean(axis=0) - b.mean(axis=0)
    traces = (ca**2).sum() / (len(a) - 1) + (cb**2).sum() / (len(b) - 1)
    return float(diff @ diff + traces - 2 * cross)


def fid(
    generated: Iterable[np.ndarray], reference: Iterable[np.ndarray], model: nn.Module, size: int = RESOLUTION
) -> dict:
    """FID of generated vs reference frames, with the sample counts and the resolution it was measured at."""
    a, b = image_features(generated, model, size), image_features(reference, model, size)
    score = fid_from_features(a, b) if len(a) >= 2 and len(b) >= 2 else float("nan")
    return {"fid": score, "fid_samples_generated": len(a), "fid_samples_reference": len(b), "fid_resolution": size}
