"""The offline 3DMM (docs/architecture.md §4): a statistical 2D shape model of the 68 landmarks, learned from a corpus.

It plays FLAME's part for the listener: per clip, **shape** coefficients (identity, stage 1); per frame,
**mouth** coefficients that can only move the lips and lower jaw (stage 2) and full **expression**
coefficients (stage 3); plus the head **pose**, a similarity from the model frame to the image.

    model = PCAMorphableModel.fit(clips)             # clips: [(T_i, 68, 2) landmarks in pixels, ...]
    folder = model.save_versioned(DATA / "morphable")  # DATA/morphable/<version>/
    coeffs = model.project(landmarks)                # MorphableCoefficients
    lips = model.reconstruct(coeffs.shape, mouth=coeffs.mouth, pose=coeffs.pose)  # (T, 68, 2) image px

How it is fitted (an identity is a clip, or with `groups=` a speaker's clips together):
1. Generalised Procrustes: every frame's pose is a least-squares similarity from the reference on
   `STABLE_POINTS` (upper jaw, nose, eye corners — points no expression moves, so an opening mouth cannot
   tilt the alignment); the reference is the mean of the per-identity mean aligned shapes, repeated until
   it stops moving, then pinned to `mesh_render.CANONICAL_FACE` (face width ≈ 1, nose tip at 0, y down).
2. Identity basis: PCA of the per-identity mean shapes minus the mean (at most identities − 1 components).
3. Expression basis: PCA of the per-frame residuals (aligned frame − its identity's mean).
4. Mouth basis: PCA of the within-clip residuals (aligned frame − its clip's mean) on `MOUTH_POINTS`
   only; every other coordinate of its vectors is exactly 0, so mouth coefficients never move the upper
   face. Within a clip only speech moves the mouth (emotion is constant), so this is the content subspace.
Bases are orthonormal, sign-fixed (largest-magnitude entry positive) and scaled by their standard
deviations, so coefficients are roughly unit-variance. The same data give the same arrays bit for bit
and so the same `version` (a hash of arrays + config), which keeps stored coefficients comparable.

Projecting a clip, its shape is fitted to the clip's mean aligned shape jointly with the expression basis
(a MAP estimate), so the clip's average expression is not mistaken for identity. With `groups`, emotion
is part of the expression basis and shape coefficients become nearly emotion-free; a speaker's shape
over all their clips is `model.project(np.concatenate(clips)).shape`, to pass as `project(..., shape=)`.

Model-frame points map to image pixels by `apply_pose(points, pose)`; to draw them in a face-centred
crop use `mesh_render.canonical_pose(size)` as the pose, then `mesh_render.render_mesh`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from imagineid.errors import ImagineIDError
from imagineid.face.mesh_render import CANONICAL_FACE

STABLE_POINTS = (0, 1, 2, 3, 13, 14, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
MOUTH_POINTS = tuple(range(4, 13)) + tuple(range(48, 68))  # lower jaw + lips: all a mouth may move
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "imagineid.pca_morphable/1"
_META = ("n_clips", "n_identities", "n_frames")  # what the model was fitted on, kept in config.json
_GPA_ITERATIONS = 20  # upper bound; converges in a handful
_SHAPE_NOISE = 0.005  # face widths: noise allowed in a clip's mean shape when splitting identity / expression
_RELATIVE_FLOOR = 1e-6  # components with less variance than this × total are dropped (data rank)


class MorphableError(ImagineIDError):
    """Landmarks a morphable model cannot be fitted to or project (too few frames, NaN, degenerate)."""

    kind = "morphable"


@dataclass
class MorphableCoefficients:
    """One clip in model coordinates."""

    shape: np.ndarray  # (n_shape,) identity, one per clip (or the one given to `project`)
    expression: np.ndarray  # (T, n_expression) full expression
    mouth: np.ndarray  # (T, n_mouth) mouth-only expression
    pose: np.ndarray  # (T, 4) log-scale, rotation (rad), tx, ty: model frame → image pixels
    residual_px: np.ndarray  # (T,) mean distance of the full reconstruction to the landmarks, pixels


def _complex(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) → (..., 68) complex128: a 2D similarity is then z ↦ a·z + b."""
    return points[..., 0].astype(np.float64) + 1j * points[..., 1].astype(np.float64)


def _real(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


def _pose_fit(points: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity a·ref + b ≈ points on `STABLE_POINTS` (model frame → image).

    points (N, 68), ref (68,) complex → a (N,), b (N,). Aligned frames (points − b) / a then all share
    ref's stable centroid, orientation and size along ref, so their mean is in ref's gauge (GPA-stable).
    """
    s, r = points[:, STABLE_POINTS], ref[list(STABLE_POINTS)]
    s_mean, r_mean = s.mean(axis=1), r.mean()
    rc = r - r_mean
    a = (np.conj(rc)[None] * (s - s_mean[:, None])).sum(axis=1) / (np.abs(rc) ** 2).sum()
    small = np.abs(a) < 1e-9 * max(float(np.abs(rc).max()), 1e-12)
    if small.any():
        raise MorphableError(f"{int(small.sum())} frame(s) have all stable landmarks on one spot")
    return a, s_mean - a * r_mean


def apply_pose(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Model-frame points (T, 68, 2) → image pixels through pose (T, 4) or (4,): exp(s)·R(θ)·p + t."""
    pose = np.asarray(pose, np.float64)
    a = np.exp(pose[..., 0] + 1j * pose[..., 1])[..., None]  # (T, 1)
    b = (pose[..., 2] + 1j * pose[..., 3])[..., None]
    return _real(a * _complex(np.asarray(points)) + b).astype(np.float32)


def _pca(data: np.ndarray, limit: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of zero-mean rows (N, D) → basis (k, D), std (k,), explained ratio (k,); k ≤ limit, rank."""
    cov = data.T @ data / max(len(data), 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order].T
    total = float(values.sum())
    k = int(min(limit, rank, (values > _RELATIVE_FLOOR * total).sum())) if total > 0 else 0
    if k == 0:
        # One constant-zero component (coefficient always 0): e.g. a single identity has no shape variance,
        # and coefficient columns must stay ≥ 1 wide (Arrow's fixed_size_list needs a positive width).
        return np.zeros((1, data.shape[1])), np.ones(1), np.zeros(1)
    basis = vectors[:k]
    idx = np.argmax(np.abs(basis), axis=1)
    basis = basis * np.sign(basis[np.arange(k), idx])[:, None]  # sign fix: largest-magnitude entry > 0
    ratio = values[:k] / total if total > 0 else values[:k]
    return basis, np.sqrt(values[:k]), ratio


def _check_landmarks(points: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(points)
    if arr.ndim != 3 or arr.shape[1:] != (68, 2):
        raise ValueError(f"{what} must be (T, 68, 2) landmarks, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        raise MorphableError(
            f"{what} has {int(bad.sum())} frame(s) with NaN or infinite landmarks (first: frame {int(np.argmax(bad))})"
        )
    return arr


class PCAMorphableModel:
    """Mean shape + identity, expression and mouth-only bases over the 68 landmarks (all float32).

    Arrays: `mean` (68, 2); `<part>_basis` (k, 68, 2) orthonormal as 136-vectors; `<part>_std` (k,);
    `<part>_explained` (k,) fraction of that part's variance, for part in shape / expression / mouth.
    """

    PARTS = ("shape", "expression", "mouth")

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
        self.arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}
        self.meta = dict(meta or {})  # `_META` keys
        for part in self.PARTS:
            if self.arrays[f"{part}_basis"].shape[0] != self.arrays[f"{part}_std"].shape[0]:
                raise ValueError(f"{part}: basis and std sizes differ")
        self._flat = {p: self.arrays[f"{p}_basis"].reshape(-1, 136).astype(np.float64) for p in self.PARTS}

    # -- sizes -----------------------------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        return self.arrays["mean"]

    @property
    def n_shape(self) -> int:
        return self._flat["shape"].shape[0]

    @property
    def n_expression(self) -> int:
        return self._flat["expression"].shape[0]

    @property
    def n_mouth(self) -> int:
        return self._flat["mouth"].shape[0]

    # -- fitting ---------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        clips: Sequence[np.ndarray],
        n_shape: int = 10,
        n_expression: int = 12,
        n_mouth: int = 6,
        groups: Sequence[Hashable] | None = None,
    ) -> PCAMorphableModel:
        """Fit on per-clip landmark sequences, each (T_i, 68, 2) in pixels (see the module docstring).

        `groups` (one label per clip, e.g. speaker ids) makes identity a per-group rather than per-clip
        mean, so what differs between a speaker's clips (emotion) lands in the expression basis, where
        stage 3 can predict it. The mouth basis is always learned from within-clip motion.
        """
        # 1. Check inputs
        if len(clips) == 0:
            raise MorphableError("no clips to fit a morphable model on")
        arrs = [_check_landmarks(c, f"clip {i}") for i, c in enumerate(clips)]
        short = [i for i, a in enumerate(arrs) if len(a) < 2]
        if short:
            raise MorphableError(f"clips need at least 2 frames; clip(s) {short[:5]} have fewer")
        if groups is not None and len(groups) != len(arrs):
            raise ValueError(f"groups must have one label per clip: {len(groups)} labels for {len(arrs)} clips")
        labels = list(range(len(arrs))) if groups is None else list(groups)
        unit_of = {g: i for i, g in enumerate(dict.fromkeys(labels))}  # identity units in first-seen order
        lengths = np.array([len(a) for a in arrs])
        clip = np.repeat(np.arange(len(arrs)), lengths)  # (N,) clip of each frame
        unit = np.array([unit_of[labels[c]] for c in range(len(arrs))])[clip]  # (N,) identity unit of each frame
        z = _complex(np.concatenate(arrs))  # (N, 68)

        def means(aligned: np.ndarray, owner: np.ndarray) -> np.ndarray:  # (N, 68) → (owners, 68)
            sums = np.zeros((int(owner.max()) + 1, 68), complex)
            np.add.at(sums, owner, aligned)
            return sums / np.bincount(owner)[:, None]

        # 2. Generalised Procrustes: reference = mean identity; then its gauge is pinned to the canonical face
        ref = _complex(CANONICAL_FACE)
        for _ in range(_GPA_ITERATIONS):
            a, b = _pose_fit(z, ref)
            new = means((z - b[:, None]) / a[:, None], unit).mean(axis=0)
            moved, ref = float(np.abs(new - ref).max()), new
            if moved < 1e-12:
                break
        a, b = _pose_fit(ref[None], _complex(CANONICAL_FACE))  # canonical ≈ a·ref + b
        ref = a[0] * ref + b[0]
        a, b = _pose_fit(z, ref)
        aligned = (z - b[:, None]) / a[:, None]  # (N, 68)
        identity = means(aligned, unit)  # (U, 68)
        ref = identity.mean(axis=0)  # equal to ref up to the GPA tolerance; exact centring for the PCA

        # 3. Identity, expression and mouth-only bases
        def flat(w: np.ndarray) -> np.ndarray:
            return _real(w).reshape(len(w), 136)

        shape_basis, shape_std, shape_ratio = _pca(flat(identity - ref), n_shape, len(identity) - 1)
        expr_basis, expr_std, expr_ratio = _pca(flat(aligned - identity[unit]), n_expression, len(z) - len(identity))
        within = flat(aligned - means(aligned, clip)[clip])  # (N, 136) motion inside each clip
        cols = np.array([2 * p + k for p in MOUTH_POINTS for k in (0, 1)])
        m_basis, mouth_std, mouth_ratio = _pca(within[:, cols], n_mouth, len(z) - len(arrs))
        mouth_basis = np.zeros((len(m_basis), 136))
        mouth_basis[:, cols] = m_basis

        arrays = {
            "mean": _real(ref),
            "shape_basis": shape_basis.reshape(-1, 68, 2),
            "shape_std": shape_std,
            "shape_explained": shape_ratio,
            "expression_basis": expr_basis.reshape(-1, 68, 2),
            "expression_std": expr_std,
            "expression_explained": expr_ratio,
            "mouth_basis": mouth_basis.reshape(-1, 68, 2),
            "mouth_std": mouth_std,
            "mouth_explained": mouth_ratio,
        }
        meta = {"n_clips": len(arrs), "n_identities": len(identity), "n_frames": len(z)}
        return cls(arrays, meta)

    # -- coefficients ----------------------------------------------------------------------------------
    def _offset(self, part: str, coeffs: np.ndarray) -> np.ndarray:
        """Coefficients (T, k) of one part → displacement (T, 136) in the model frame."""
        c = np.atleast_2d(np.asarray(coeffs, np.float64))
        k = self._flat[part].shape[0]
        if c.shape[-1] != k:
            raise ValueError(f"{part} coefficients must have {k} entries, got shape {np.shape(coeffs)}")
        return (c * self.arrays[f"{part}_std"].astype(np.float64)) @ self._flat[part]

    def _coefficients(self, part: str, offsets: np.ndarray) -> np.ndarray:
        """Displacements (T, 136) → unit-variance coefficients (T, k) of one part."""
        std = self.arrays[f"{part}_std"].astype(np.float64)
        return (offsets @ self._flat[part].T / std).astype(np.float32)

    def _identity(self, offset: np.ndarray) -> np.ndarray:
        """Shape coefficients of a clip's mean offset (136,) from the mean shape, fitted jointly with the
        expression basis (MAP, unit-Gaussian priors, `_SHAPE_NOISE` per coordinate): the clip's average
        expression — its emotion, its average mouth opening — is explained by expression, not identity."""
        bases = np.concatenate([self._flat[p].T * self.arrays[f"{p}_std"] for p in ("shape", "expression")], 1)
        lhs = bases.T @ bases / _SHAPE_NOISE**2 + np.eye(bases.shape[1])
        coeffs = np.linalg.solve(lhs, bases.T @ offset / _SHAPE_NOISE**2)
        return coeffs[: self.n_shape].astype(np.float32)

    def project(self, landmarks: np.ndarray, shape: np.ndarray | None = None) -> MorphableCoefficients:
        """Coefficients of one clip's landmarks (T, 68, 2) pixels; `shape` (n_shape,) fixes the identity
        (e.g. a speaker's shape from all their clips), else it comes from this clip's mean aligned shape."""
        pts = _check_landmarks(landmarks, "landmarks")
        if len(pts) == 0:
            raise MorphableError("no frames to project")
        z = _complex(pts)
        mean = _complex(self.mean[None])[0]
        a, b = _pose_fit(z, mean)  # model → image
        aligned = _real((z - b[:, None]) / a[:, None]).reshape(len(z), 136)  # (T, 136)
        base = self.mean.reshape(136).astype(np.float64)
        if shape is None:
            shape = self._identity(aligned.mean(axis=0) - base)
        shape = np.asarray(shape, np.float32)
        rest = base + self._offset("shape", shape)[0]  # (136,)
        expression = self._coefficients("expression", aligned - rest)
        mouth = self._coefficients("mouth", aligned - rest)
        pose = np.stack([np.log(np.abs(a)), np.angle(a), b.real, b.imag], axis=1)
        fitted = self.reconstruct(shape, expression=expression, pose=pose)
        residual = np.linalg.norm(fitted - pts, axis=-1).mean(axis=-1)
        return MorphableCoefficients(shape, expression, mouth, pose.astype(np.float32), residual.astype(np.float32))

    def reconstruct(
        self,
        shape: np.ndarray,
        expression: np.ndarray | None = None,
        mouth: np.ndarray | None = None,
        pose: np.ndarray | None = None,
    ) -> np.ndarray:
        """Landmarks (T, 68, 2): model frame, or image pixels when `pose` (T, 4) / (4,) is given.

        shape (n_shape,) or (T, n_shape); expression (T, n_expression); mouth (T, n_mouth). Normally one
        of expression / mouth: mouth alone moves only `MOUTH_POINTS`. Given both, the mouth coefficients
        replace the mouth-subspace part of the expression (content swapped into another clip's expression).
        T is 1 when nothing per-frame is given.
        """
        out = self.mean.reshape(1, 136).astype(np.float64) + self._offset("shape", shape)  # (1 or T, 136)
        if expression is not None:
            e = self._offset("expression", expression)  # (T, 136)
            if mouth is not None:
                e = e - (e @ self._flat["mouth"].T) @ self._flat["mouth"]  # drop its mouth-subspace part
            out = out + e
        if mouth is not None:
            out = out + self._offset("mouth", mouth)
        points = out.reshape(-1, 68, 2)
        if pose is not None:
            pose = np.asarray(pose, np.float64)
            if pose.shape[-1] != 4:
                raise ValueError(f"pose must be (T, 4) or (4,), got shape {pose.shape}")
            if pose.ndim == 2 and len(points) == 1:
                points = np.repeat(points, len(pose), axis=0)
            return apply_pose(points, pose)
        return points.astype(np.float32)

    # -- storage ---------------------------------------------------------------------------------------
    def config(self) -> dict:
        """JSON config, `version` included: a hash of the arrays and the rest of this config."""
        cfg = {
            "format": FORMAT,
            "n_shape": self.n_shape,
            "n_expression": self.n_expression,
            "n_mouth": self.n_mouth,
            "stable_points": list(STABLE_POINTS),
            "mouth_points": list(MOUTH_POINTS),
            "explained_variance": {p: [round(float(v), 6) for v in self.arrays[f"{p}_explained"]] for p in self.PARTS},
            **{k: self.meta[k] for k in _META if k in self.meta},
        }
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
        for key in sorted(self.arrays):
            arr = self.arrays[key]
            digest.update(f"{key}:{arr.dtype}:{arr.shape}".encode())
            digest.update(arr.tobytes())
        return {"version": digest.hexdigest()[:12], **cfg}

    @property
    def version(self) -> str:
        return self.config()["version"]

    def save(self, folder: str | Path) -> Path:
        """Write `model.safetensors` + `config.json` into `folder` (created); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.arrays, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.config(), indent=2) + "\n")
        return folder

    def save_versioned(self, root: str | Path) -> Path:
        """Save into `root/<version>/` atomically (temp folder + rename); an existing version is kept."""
        root = Path(root)
        final = root / self.version
        if final.exists():
            return final
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{self.version}-{uuid.uuid4().hex[:8]}"
        self.save(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another writer got there first: same version, same bytes
            if not final.exists():
                raise
        return final

    @classmethod
    def load(cls, folder: str | Path) -> PCAMorphableModel:
        """Rebuild from `save`'s folder; the stored version must match the arrays."""
        folder = Path(folder)
        for name in (WEIGHTS, CONFIG):
            if not (folder / name).is_file():
                raise MorphableError(f"no morphable model at {folder}: {name} is missing (fit one with preprocess)")
        cfg = json.loads((folder / CONFIG).read_text())
        if cfg.get("format") != FORMAT:
            raise MorphableError(f"{folder / CONFIG} has format {cfg.get('format')!r}, expected {FORMAT!r}")
        model = cls(load_file(str(folder / WEIGHTS)), {k: cfg[k] for k in _META if k in cfg})
        if model.version != cfg.get("version"):
            raise MorphableError(
                f"{folder} is corrupt: config.json says version {cfg.get('version')}, arrays hash to {model.version}"
            )
        return model
