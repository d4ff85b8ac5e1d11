"""Mouth-only FLAME coefficients from the null space of the upper face (imagineid.face.flame_mouth)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from standins import N_EXPRESSION_MOUTH, write_flame

from imagineid.face.flame import FLAME, lower_face_share
from imagineid.face.flame_mouth import N_SIGMA, mouth_subspace


@pytest.fixture(scope="module")
def flame(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    write_flame(folder)
    return FLAME.from_files(folder)


def displacement(flame: FLAME, expression: np.ndarray, jaw: np.ndarray | None = None) -> np.ndarray:
    """Vertex motion (B, V) against the neutral template, through the full FLAME layer."""
    e = torch.as_tensor(expression, dtype=torch.float32)
    j = None if jaw is None else torch.as_tensor(jaw, dtype=torch.float32)
    out = flame(torch.zeros(len(e), flame.n_shape), e, jaw_pose=j).vertices
    return (out - flame.v_template).norm(dim=-1).numpy()


def test_every_coefficient_within_3_sigma_leaves_the_upper_face_still(flame) -> None:
    mouth = mouth_subspace(flame)
    assert mouth.n_mouth >= 1
    limit = 1e-4 * mouth.face_width
    # one coefficient at a time at ±3σ, then every corner of the ±3σ box of the first few at once
    singles = np.concatenate([np.diag(s * N_SIGMA * mouth.sigma) for s in (-1.0, 1.0)])
    m = min(mouth.n_mouth, 4)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=m))) * N_SIGMA * mouth.sigma[:m]
    corners = np.pad(corners, ((0, 0), (0, mouth.n_mouth - m)))
    z = np.concatenate([singles, corners])
    moved = displacement(flame, mouth.expression(z))  # (B, V) metres
    assert moved[:, mouth.upper].max() < limit
    assert moved[:, ~mouth.upper].max() > 100 * limit  # and the mouth does move


def test_null_space_finds_what_the_component_heuristic_misses(flame) -> None:
    """Stand-in components 3 and 4 share one brow motion: each alone fails the 90 % share, their
    difference is mouth-only. The subspace holds components 0–2 and that difference."""
    share = lower_face_share(flame)
    assert np.flatnonzero(share >= 0.9).tolist() == list(range(N_EXPRESSION_MOUTH))
    mouth = mouth_subspace(flame)
    assert mouth.n_mouth == N_EXPRESSION_MOUTH + 1
    inside = np.linalg.norm(mouth.basis.T @ np.eye(flame.n_expression)[:, :N_EXPRESSION_MOUTH], axis=0)
    assert np.allclose(inside, 1.0, atol=1e-6)  # 0, 1, 2 lie in the subspace
    assert np.abs(mouth.basis[5:]).max() < 1e-6  # nothing from the whole-face components


def test_mouth_coefficients_least_squares_on_the_lower_face(flame) -> None:
    """A full expression's mouth coefficients reproduce its lower-face motion as well as the subspace allows:
    exactly for an expression already in the subspace, and the residual is orthogonal to the subspace's motion."""
    mouth = mouth_subspace(flame)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, mouth.n_mouth))
    assert np.allclose(mouth.coefficients(mouth.expression(z)), z, atol=1e-6)
    psi = rng.normal(size=(3, flame.n_expression))
    dirs = flame.exprdirs.numpy().astype(np.float64)[~mouth.upper].reshape(-1, flame.n_expression)
    residual = dirs @ (mouth.expression(mouth.coefficients(psi)) - psi).T  # (3·Vl, 3)
    assert np.abs((dirs @ mouth.basis).T @ residual).max() < 1e-9 * np.abs(dirs).max() ** 2 * 100


def test_jaw_pose_moves_only_the_lower_face(flame) -> None:
    mouth = mouth_subspace(flame)
    jaw = np.array([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0], [0.0, 0.2, 0.1]])
    moved = displacement(flame, np.zeros((3, flame.n_expression)), jaw)
    assert moved[:, mouth.upper].max() < 1e-4 * mouth.face_width and moved[:, ~mouth.upper].max() > 1e-3
