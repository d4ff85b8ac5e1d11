"""Validation metrics of the disentangler (numpy in, floats out) and the emotion-embedding plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over rows with a known label (label ≥ 0); NaN when none is known."""
    known = labels >= 0
    return float((logits[known].argmax(-1) == labels[known]).mean()) if known.any() else float("nan")


def r2_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Coefficient of determination pooled over every output dimension (1 - SSE / SST)."""
    sse = float(((pred - true) ** 2).sum())
    sst = float(((true - true.mean(axis=0)) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _cosine(embeddings: np.ndarray) -> np.ndarray:
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def precision_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Mean fraction of each item's k nearest others (cosine) that share its label (e.g. gender)."""
    sim = _cosine(embeddings)
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(labels) - 1)
    if k < 1:
        return float("nan")
    nearest = np.argsort(-sim, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def silhouette(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient with cosine distance; NaN with fewer than two labels."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    dist = 1.0 - _cosine(embeddings)
    scores = []
    for i, label in enumerate(labels):
        same = labels == label
        same[i] = False
        if not same.any():
            continue
        a = dist[i, same].mean()
        b = min(dist[i, labels == other].mean() for other in np.unique(labels) if other != label)
        scores.append((b - a) / max(a, b, 1e-12))
    return float(np.mean(scores)) if scores else float("nan")


def pca_2d(embeddings: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The 2-D PCA projection fitted on embeddings (N, E): points (..., E) → (..., 2). With fewer than
    two components (one clip, or identical embeddings) the missing axes are zeros, not an error."""
    mean = embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    basis = np.zeros((2, embeddings.shape[1]))
    basis[: len(vt[:2])] = vt[:2]
    return lambda points: (np.asarray(points) - mean) @ basis.T


def plot_embeddings(embeddings: np.ndarray, labels: np.ndarray, names: tuple[str, ...], path: Path, title: str) -> Path:
    """2-D PCA scatter of embeddings coloured by label, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = pca_2d(embeddings)(embeddings)  # (N, 2)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for index, name in enumerate(names):
        sel = labels == index
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=18, label=name)
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
