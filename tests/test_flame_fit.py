"""FLAME fitted to 2-D landmarks (imagineid.face.flame_fit) on the smooth stand-in head, against known parameters."""

from __future__ import annotations

import math

import pytest
import torch
from standins import write_flame

from imagineid.face.flame import FLAME
from imagineid.face.flame_fit import FlameFitter, project

PIXELS_PER_METRE = 900.0  # a 0.12 m face is ~108 px wide: a face in a 256 px crop


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    write_flame(folder)
    return folder


def synthetic_clip(flame: FLAME, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Known parameters drawn from the priors, smooth in time, with head turns up to ±0.5 rad of yaw."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames)[:, None]
    phase = torch.rand(1, flame.n_expression, generator=g) * 6
    truth = {
        "shape": torch.randn(1, flame.n_shape, generator=g),
        "expression": 0.7 * torch.randn(1, flame.n_expression, generator=g) * torch.sin(6 * t + phase),
        "jaw_pose": torch.cat([0.15 + 0.1 * torch.sin(9 * t), torch.zeros(frames, 2)], 1),
        "global_pose": torch.cat([0.2 * torch.sin(4 * t), 0.5 * torch.cos(3 * t), 0.1 * torch.sin(5 * t)], 1),
        "camera": torch.cat([torch.full((frames, 1), math.log(PIXELS_PER_METRE)), 128 + 5 * t, 120 + 4 * t], 1),
    }
    out = flame(
        truth["shape"].expand(frames, -1), truth["expression"], truth["global_pose"], jaw_pose=truth["jaw_pose"]
    )
    truth["vertices"] = out.vertices
    truth["landmarks"] = project(out.landmarks, truth["camera"])
    return truth


def rebuilt(flame: FLAME, fit, frames: int) -> torch.Tensor:
    return flame(fit.shape[None].expand(frames, -1), fit.expression, fit.global_pose, jaw_pose=fit.jaw_pose).vertices


def test_fit_recovers_known_parameters_and_vertices(flame_dir) -> None:
    """With 20 shape and 10 expression components the 68 points over a turning head pin the model down:
    tolerance — mean vertex error < 1 mm and every face-side vertex within 3 mm (a face is ~120 mm wide)."""
    flame = FLAME.from_files(flame_dir, n_shape=20, n_expression=10)
    truth = synthetic_clip(flame, frames=24)
    fit = FlameFitter(flame).fit(truth["landmarks"])
    assert fit.residual_px.mean() < 0.5 and fit.residual_px.max() < 0.5
    error = (rebuilt(flame, fit, 24) - truth["vertices"]).norm(dim=-1)  # (T, V) metres
    face = flame.v_template[:, 2] > 0.03
    assert error.mean() < 1e-3 and error[:, face].max() < 3e-3
    assert (fit.global_pose - truth["global_pose"]).abs().max() < 0.03
    assert (fit.jaw_pose - truth["jaw_pose"]).abs().max() < 0.03
    assert (fit.camera[:, 0] - truth["camera"][:, 0]).abs().max() < 0.01  # scale within 1 %
    assert (fit.camera[:, 1:] - truth["camera"][:, 1:]).abs().max() < 2.0  # px


def test_full_model_reprojects_below_half_a_pixel(flame_dir) -> None:
    """All 100 shape and 50 expression components: 68 2-D points no longer determine every component (the
    solution is not unique), so only the reprojection is checked."""
    flame = FLAME.from_files(flame_dir)
    truth = synthetic_clip(flame, frames=16, seed=1)
    fit = FlameFitter(flame).fit(truth["landmarks"])
    assert fit.shape.shape == (100,) and fit.expression.shape == (16, 50) and fit.camera.shape == (16, 3)
    assert fit.residual_px.mean() < 0.5
    drawn = project(
        flame(fit.shape[None].expand(16, -1), fit.expression, fit.global_pose, jaw_pose=fit.jaw_pose).landmarks,
        fit.camera,
    )
    assert torch.allclose((drawn - truth["landmarks"]).norm(dim=-1).mean(-1), fit.residual_px, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_runs_on_cuda(flame_dir) -> None:
    flame = FLAME.from_files(flame_dir, n_shape=20, n_expression=10)
    truth = synthetic_clip(flame, frames=24)
    fit = FlameFitter(flame).cuda().fit(truth["landmarks"].cuda())
    assert fit.expression.is_cuda and fit.residual_px.mean() < 0.5
