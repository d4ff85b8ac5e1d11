"""Mouth-only FLAME coefficients built from FLAME's own geometry (docs/architecture.md §1, §4).

    mouth = mouth_subspace(flame)           # once per FLAME file
    z = mouth.coefficients(expression)      # (T, m): the mouth part of full expressions (T, n_expression)
    psi = mouth.expression(z)               # (T, n_expression): expressions that move only the lower face
    coeffs = np.concatenate([jaw_pose, z], axis=1)   # the mouth vector: jaw (3) then z

Why not pick components: `flame.lower_face_share` keeps whole expression components that put ≥ 90 %
of their motion below the nose. Such a component still moves the brows, cheeks or eyelids by the other
≤ 10 %, so an audio-driven mouth would drag the upper face with it; and FLAME's PCA components mix
regions, so few pass the threshold at all while combinations of components that cancel each other's
upper-face motion are missed. Here the mouth space is instead *constructed*:

1. **Null space of the upper face.** `E_U` is the expression basis restricted to the template vertices
   at or above the base of the nose (iBUG 33). Directions `b` with `E_U b ≈ 0` move no upper-face
   vertex. They are the right singular vectors of `E_U` with the smallest singular values, taken while
   the worst upper-face displacement of all of them together at ±`N_SIGMA` stays under
   `UPPER_TOLERANCE` × the face's width (jaw corner to jaw corner) — a guarantee by construction, checked
   again after the rotation in step 2.
2. **Ordered by mouth motion.** That space is rotated so its directions are the principal axes of the
   lower-face motion they cause (SVD of `E_L B`); directions that move the lower face by less than a
   millionth of the strongest are dropped (they would be noise for a speech model to predict).
3. **Least squares on the mouth.** The mouth coefficients of a full expression ψ are the `z` whose
   motion `E_L B z` best matches ψ's own lower-face motion `E_L ψ` — not the orthogonal projection
   `Bᵀψ`, which would ignore how the basis moves the vertices. `sigma` is their spread when ψ follows
   FLAME's unit prior, so "±3σ" has a meaning for each coefficient.

The jaw pose joins unchanged: FLAME's skinning weights confine the jaw rotation to the lower face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagineid.face.flame import FLAME, NOSE_BOTTOM

UPPER_TOLERANCE = 1e-4  # largest upper-face displacement allowed, as a fraction of the face's width
N_SIGMA = 3.0  # ... for every mouth coefficient anywhere within ±N_SIGMA standard deviations
MIN_MOTION = 1e-6  # directions whose lower-face motion is below this share of the strongest are dropped
JAW = (0, 16)  # iBUG jaw corners: their distance is the face's width


@dataclass
class MouthSubspace:
    basis: np.ndarray  # (n_expression, m) orthonormal: expression = basis @ z
    fit: np.ndarray  # (m, n_expression): z = fit @ ψ, least squares on the lower-face vertices
    sigma: np.ndarray  # (m,) std of z when ψ ~ N(0, I)
    upper: np.ndarray  # (V,) bool: the vertices held still
    face_width: float  # metres (model units)

    @property
    def n_mouth(self) -> int:
        return self.basis.shape[1]

    def coefficients(self, expression: np.ndarray) -> np.ndarray:
        """Full expressions (T, n_expression) → mouth coefficients (T, m)."""
        return np.asarray(expression, np.float64) @ self.fit.T

    def expression(self, z: np.ndarray) -> np.ndarray:
        """Mouth coefficients (T, m) → FLAME expressions (T, n_expression) that move only the lower face."""
        return np.asarray(z, np.float64) @ self.basis.T


def mouth_subspace(flame: FLAME, tolerance: float = UPPER_TOLERANCE, n_sigma: float = N_SIGMA) -> MouthSubspace:
    """The construction of the module docstring for one FLAME model."""
    if flame.landmark_faces is None:
        raise ValueError("the mouth subspace needs FLAME's 68-landmark embedding (the nose base is the cut)")
    landmarks = flame.template_landmarks().astype(np.float64)  # (68, 3)
    width = float(np.linalg.norm(landmarks[JAW[0]] - landmarks[JAW[1]]))
    template = flame.v_template.numpy()
    upper = template[:, 1] >= landmarks[NOSE_BOTTOM, 1]  # (V,) y up
    dirs = flame.exprdirs.numpy().astype(np.float64)  # (V, 3, K)
    k = dirs.shape[2]
    e_upper, e_lower = dirs[upper], dirs[~upper]  # (Vu, 3, K), (Vl, 3, K)
    budget = tolerance * width

    def worst(basis: np.ndarray) -> float:
        """Largest upper-face vertex displacement over the box |z_i| ≤ n_sigma·σ_i (triangle inequality)."""
        if basis.shape[1] == 0:
            return 0.0
        motion = np.linalg.norm(np.einsum("vck,km->vcm", e_upper, basis), axis=1)  # (Vu, m) per unit z
        sigma = _fit_and_sigma(e_lower, basis)[1]
        return float((motion * (n_sigma * sigma)).sum(axis=1).max())

    _, _, vt = np.linalg.svd(e_upper.reshape(-1, k), full_matrices=True)
    candidates = vt[::-1].T  # (K, K) columns from the least upper-face motion up
    basis = candidates[:, :0]
    for i in range(k):
        trial = _ordered(e_lower, np.concatenate([basis, candidates[:, i : i + 1]], axis=1))
        if worst(trial) > budget:
            break
        basis = trial
    fit, sigma = _fit_and_sigma(e_lower, basis)
    return MouthSubspace(basis=basis, fit=fit, sigma=sigma, upper=upper, face_width=width)


def _ordered(e_lower: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Rotate `basis` (K, m) onto the principal axes of its lower-face motion; drop the still directions."""
    if basis.shape[1] == 0:
        return basis
    _, s, wt = np.linalg.svd(e_lower.reshape(-1, e_lower.shape[2]) @ basis, full_matrices=False)
    keep = s > MIN_MOTION * max(float(s[0]), 1e-30)
    return basis @ wt[keep].T


def _fit_and_sigma(e_lower: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z = fit @ ψ minimising ‖E_L (B z − ψ)‖², and z's std under ψ ~ N(0, I)."""
    if basis.shape[1] == 0:
        return np.zeros((0, e_lower.shape[2])), np.zeros(0)
    flat = e_lower.reshape(-1, e_lower.shape[2])  # (3·Vl, K)
    fit = np.linalg.pinv(flat @ basis) @ flat  # (m, K)
    return fit, np.sqrt((fit**2).sum(axis=1))
