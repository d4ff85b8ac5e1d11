"""CSIM: identity similarity of generated frames to the reference face, as cosine of face embeddings.

Per video: every generated frame's embedding against the mean (re-normalised) embedding of the reference
frames (the ground-truth clip of the same voice); CSIM is the mean cosine, 1 for the same face. With an
ArcFace file it is the field's CSIM. Without one, the offline default is the cosine of dlib's 128-d face
descriptors, stored as `csim_dlib`: a different network with a different scale, never comparable to
published CSIM figures, so it never appears under the name `csim`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from imagineid.evaluation.face_align5 import align_face


def cosine_to_reference(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean cosine of (N, D) generated embeddings to the mean direction of (M, D) reference embeddings."""
    if len(generated) == 0 or len(reference) == 0:
        return float("nan")
    unit = lambda e: e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    centre = unit(unit(np.asarray(reference, np.float64)).mean(axis=0))
    return float((unit(np.asarray(generated, np.float64)) @ centre).mean())


def aligned_crops(frames: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None]) -> np.ndarray:
    """The 112 × 112 ArcFace crops of the frames that have landmarks → (K, 112, 112, 3)."""
    crops = [align_face(f, p) for f, p in zip(frames, landmarks) if p is not None]
    return np.stack(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)


def embed(
    embedder: Callable[[np.ndarray], np.ndarray],
    frames: Sequence[np.ndarray],
    landmarks: Sequence[np.ndarray | None],
    batch: int = 32,
) -> np.ndarray:
    """ArcFace embeddings (K, D) of the frames with a face (RGB frames and their 68 landmarks)."""
    crops = aligned_crops(frames, landmarks)
    parts = [embedder(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def csim(
    embedder: Callable[[np.ndarray], np.ndarray],
    generated: tuple[Sequence[np.ndarray], Sequence[np.ndarray | None]],
    reference: tuple[Sequence[np.ndarray], Sequence[np.ndarray | None]],
) -> float:
    """CSIM of generated (frames, landmarks) against reference (frames, landmarks) with an ArcFace embedder."""
    return cosine_to_reference(embed(embedder, *generated), embed(embedder, *reference))


def csim_dlib(generated: Sequence[np.ndarray | None], reference: Sequence[np.ndarray | None]) -> float:
    """The offline stand-in: cosine of dlib face descriptors (None where dlib found no face)."""
    g = [d for d in generated if d is not None]
    r = [d for d in reference if d is not None]
    return cosine_to_reference(np.stack(g) if g else np.zeros((0, 128)), np.stack(r) if r else np.zeros((0, 128)))
