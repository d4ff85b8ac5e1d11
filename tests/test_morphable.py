"""The offline 3DMM (statistical 68-point shape model) and the mesh condition image, on synthetic speakers.

Landmark sequences come from `plan_clip` (ground-truth geometry, no pixels), so the whole file runs in
a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagineid.face import landmarks68 as lm
from imagineid.face.mesh_render import (
    CANONICAL_FACE,
    HOLES,
    canonical_pose,
    face_triangles,
    render_mesh,
)
from imagineid.face.morphable import (
    MOUTH_POINTS,
    MorphableError,
    PCAMorphableModel,
    apply_pose,
)
from imagineid.synth.corpus import ClipPlan, SynthConfig, plan_clip, sample_speaker

TRAIN = SynthConfig(speakers=6, clips_per_speaker=2, seconds=3.0, seed=3)
HELD_OUT = SynthConfig(speakers=4, clips_per_speaker=3, seconds=3.0, seed=4)
UPPER_FACE = [p for p in range(68) if p not in MOUTH_POINTS]  # 0–3, 13–47


def _plans(config: SynthConfig) -> list[ClipPlan]:
    return [
        plan_clip(config, sample_speaker(config.seed, i), i, c)
        for i in range(config.speakers)
        for c in range(config.clips_per_speaker)
    ]


@pytest.fixture(scope="module")
def train() -> list[ClipPlan]:
    return _plans(TRAIN)


@pytest.fixture(scope="module")
def held_out() -> list[ClipPlan]:
    return _plans(HELD_OUT)


@pytest.fixture(scope="module")
def model(train) -> PCAMorphableModel:
    return PCAMorphableModel.fit([p.landmarks for p in train])


@pytest.fixture(scope="module")
def by_speaker(train) -> PCAMorphableModel:
    return PCAMorphableModel.fit([p.landmarks for p in train], groups=[p.speaker.speaker_id for p in train])


def _interocular(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[..., lm.LEFT_EYE, :].mean(-2) - points[..., lm.RIGHT_EYE, :].mean(-2), axis=-1)


def _speaker_distances(shapes: np.ndarray, speakers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(shapes[:, None] - shapes[None], axis=-1)
    spk = np.array(speakers)
    same = (spk[:, None] == spk[None]) & ~np.eye(len(spk), dtype=bool)
    return d[same], d[spk[:, None] != spk[None]]


# -- the model -------------------------------------------------------------------------------------------


def test_component_counts_are_capped_by_the_data(model, by_speaker, train) -> None:
    assert model.n_shape == 10 and by_speaker.n_shape == TRAIN.speakers - 1  # identities − 1
    small = PCAMorphableModel.fit([p.landmarks for p in train[:3]])
    assert small.n_shape == 2
    for m in (model, by_speaker, small):
        for part in m.PARTS:
            ratio = m.arrays[f"{part}_explained"]
            assert np.all(np.diff(ratio) <= 1e-7) and 0 < ratio.sum() <= 1 + 1e-6
            basis = m.arrays[f"{part}_basis"].reshape(len(ratio), 136).astype(np.float64)
            np.testing.assert_allclose(basis @ basis.T, np.eye(len(ratio)), atol=1e-5)
    np.testing.assert_allclose(lm.face_width(model.mean), 1.0, atol=0.05)  # the canonical gauge


@pytest.mark.parametrize("which", ["train", "held_out"])
def test_full_projection_reconstructs_the_landmarks(model, which, request) -> None:
    for plan in request.getfixturevalue(which):
        coeffs = model.project(plan.landmarks)
        t = len(plan.landmarks)
        assert coeffs.expression.shape == (t, model.n_expression) and coeffs.mouth.shape == (t, model.n_mouth)
        assert coeffs.pose.shape == (t, 4) and coeffs.shape.shape == (model.n_shape,)
        fitted = model.reconstruct(coeffs.shape, expression=coeffs.expression, pose=coeffs.pose)
        error = np.linalg.norm(fitted - plan.landmarks, axis=-1).mean(-1)
        np.testing.assert_allclose(error, coeffs.residual_px, atol=1e-3)
        assert (error / _interocular(plan.landmarks)).max() < 0.02


def test_pose_follows_the_head(model, train) -> None:
    for plan in train:
        pose = model.project(plan.landmarks).pose
        angle = np.deg2rad(plan.head_pose[:, 0])  # cv2's angle turns the head the other way (y is down)
        assert np.corrcoef(pose[:, 1], -angle)[0, 1] > 0.95
        assert np.corrcoef(pose[:, 0], np.log(plan.head_pose[:, 3]))[0, 1] > 0.9


@pytest.mark.parametrize("which", ["train", "held_out"])
def test_mouth_only_reconstruction_follows_the_true_opening(model, which, request) -> None:
    for plan in request.getfixturevalue(which):
        coeffs = model.project(plan.landmarks)
        opening = lm.mouth_opening(model.reconstruct(coeffs.shape, mouth=coeffs.mouth))
        assert np.corrcoef(opening, plan.visemes[:, 0])[0, 1] >= 0.9


def test_mouth_coefficients_never_move_the_upper_face(model, train) -> None:
    basis = model.arrays["mouth_basis"]
    assert np.all(basis[:, UPPER_FACE] == 0.0)
    shape = model.project(train[0].landmarks).shape
    mouth = np.random.default_rng(0).normal(0.0, 3.0, (50, model.n_mouth))
    rest, moved = model.reconstruct(shape), model.reconstruct(shape, mouth=mouth)
    assert np.abs(moved[:, UPPER_FACE] - rest[:, UPPER_FACE]).max() < 1e-5
    assert np.abs(moved[:, 48:68] - rest[:, 48:68]).max() > 0.05  # the lips do move (face width ≈ 1)


def test_mouth_swapped_into_an_expression_replaces_its_mouth(model, train) -> None:
    a, b = (model.project(p.landmarks) for p in train[:2])
    own = model.reconstruct(a.shape, expression=a.expression, mouth=a.mouth)
    np.testing.assert_allclose(own, model.reconstruct(a.shape, expression=a.expression), atol=0.01)
    swapped = model.reconstruct(a.shape, expression=a.expression, mouth=b.mouth)
    np.testing.assert_allclose(swapped[:, UPPER_FACE], own[:, UPPER_FACE], atol=1e-5)
    opening = lm.mouth_opening(swapped)
    assert np.corrcoef(opening, train[1].visemes[:, 0])[0, 1] > 0.9


def test_shape_coefficients_separate_speakers(by_speaker, model, held_out) -> None:
    speakers = [p.speaker.speaker_id for p in held_out]
    shapes = np.stack([by_speaker.project(p.landmarks).shape for p in held_out])
    within, between = _speaker_distances(shapes, speakers)
    # Emotion went to the expression basis, not to identity (synthetic faces follow the voice closely,
    # so similar voices make similar faces: compare means, not the closest pair).
    assert within.mean() < 0.5 * between.mean()
    shapes = np.stack([model.project(p.landmarks).shape for p in held_out])
    within, between = _speaker_distances(shapes, speakers)
    assert between.mean() > 1.2 * within.mean()  # per-clip identities still separate, emotion mixed in


def test_a_speaker_shape_can_be_imposed(by_speaker, train) -> None:
    clips = [p.landmarks for p in train[:2]]  # the two clips of one speaker
    shape = by_speaker.project(np.concatenate(clips)).shape
    for clip in clips:
        coeffs = by_speaker.project(clip, shape=shape)
        np.testing.assert_array_equal(coeffs.shape, shape)
        assert (coeffs.residual_px / _interocular(clip)).max() < 0.02


def test_unusable_landmarks_are_refused(train) -> None:
    good = train[0].landmarks
    nan = good.copy()
    nan[5, 30] = np.nan
    with pytest.raises(MorphableError, match="NaN") as info:
        PCAMorphableModel.fit([good, nan])
    assert info.value.kind == "morphable"
    with pytest.raises(MorphableError, match="at least 2 frames"):
        PCAMorphableModel.fit([good, good[:1]])
    with pytest.raises(MorphableError, match="no clips"):
        PCAMorphableModel.fit([])
    with pytest.raises(MorphableError, match="one spot"):
        PCAMorphableModel.fit([good, np.zeros_like(good)])
    with pytest.raises(ValueError, match="68, 2"):
        PCAMorphableModel.fit([good.reshape(len(good), 136)])


# -- storage ---------------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_projections(model, train, tmp_path: Path) -> None:
    folder = model.save_versioned(tmp_path / "morphable")
    assert folder == tmp_path / "morphable" / model.version
    assert sorted(p.name for p in (tmp_path / "morphable").iterdir()) == [model.version]  # no temp folder left
    config = json.loads((folder / "config.json").read_text())
    assert config["version"] == model.version and config["n_shape"] == model.n_shape
    assert len(config["explained_variance"]["mouth"]) == model.n_mouth
    loaded = PCAMorphableModel.load(folder)
    for plan in train[:3]:
        a, b = model.project(plan.landmarks), loaded.project(plan.landmarks)
        for field in ("shape", "expression", "mouth", "pose", "residual_px"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert model.save_versioned(tmp_path / "morphable") == folder  # an existing version is kept as it is
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_version_depends_on_the_data_only(model, train) -> None:
    again = PCAMorphableModel.fit([p.landmarks for p in train])
    assert again.version == model.version
    assert PCAMorphableModel.fit([p.landmarks for p in train[:-1]]).version != model.version
    assert PCAMorphableModel.fit([p.landmarks for p in train], n_mouth=2).version != model.version


def test_damaged_model_folders_are_refused(model, tmp_path: Path) -> None:
    with pytest.raises(MorphableError, match="model.safetensors is missing"):
        PCAMorphableModel.load(tmp_path / "nothing")
    folder = model.save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["version"] = "000000000000"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MorphableError, match="corrupt"):
        PCAMorphableModel.load(folder)


# -- the mesh condition image ------------------------------------------------------------------------------


def test_triangulation_keeps_the_holes_open() -> None:
    tri = face_triangles()
    edges = {tuple(sorted(map(int, e))) for t in tri for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2]))}
    for hole in HOLES:
        ring = list(hole)
        assert all(tuple(sorted((ring[i], ring[(i + 1) % len(ring)]))) in edges for i in range(len(ring)))
        assert not any(set(map(int, t)) <= set(hole) for t in tri)
    assert len({int(v) for v in tri.ravel()}) == 68


def _mask(size: int, polygon: np.ndarray) -> np.ndarray:
    out = np.zeros((size, size), np.uint8)
    cv2.fillPoly(out, [np.round(polygon).astype(np.int32)], 1)
    return out.astype(bool)


def test_render_mesh_draws_the_face_and_nothing_else(train) -> None:
    size = TRAIN.size
    frames = train[0].landmarks[::10]  # (8, 68, 2)
    images = render_mesh(frames, size)
    assert images.shape == (len(frames), size, size, 3) and images.dtype == np.uint8
    assert render_mesh(frames[0], size).shape == (size, size, 3)
    kernel = np.ones((7, 7), np.uint8)
    for pts, image in zip(frames, images):
        lit = image.max(axis=-1) > 0
        outline = np.concatenate([pts[lm.JAW], pts[26:16:-1]])  # jaw, then the brows right to left
        inside = cv2.erode(_mask(size, outline).astype(np.uint8), kernel).astype(bool)
        for hole in HOLES:
            inside &= ~cv2.dilate(_mask(size, pts[list(hole)]).astype(np.uint8), kernel).astype(bool)
        hull = cv2.dilate(_mask(size, cv2.convexHull(pts.astype(np.float32))[:, 0]).astype(np.uint8), kernel)
        assert lit[inside].all()
        assert not lit[~hull.astype(bool)].any()
        assert 50 < image[inside].mean() < 250  # shaded, not flat white


def test_an_open_mouth_is_a_hole_and_a_closed_one_is_not(train) -> None:
    plan = train[0]
    opening = plan.visemes[:, 0]
    open_pts, closed_pts = plan.landmarks[np.argmax(opening)], plan.landmarks[np.argmin(opening)]
    assert opening.max() > 0.3 and opening.min() == 0.0
    images = render_mesh(np.stack([open_pts, closed_pts]), TRAIN.size)
    for pts, image, hole in zip((open_pts, closed_pts), images, (True, False)):
        x, y = np.round((pts[62] + pts[66]) / 2).astype(int)
        assert (image[y, x].max() == 0) == hole


def test_model_frame_faces_render_in_a_crop(model, train) -> None:
    coeffs = model.project(train[0].landmarks)
    points = model.reconstruct(coeffs.shape, mouth=coeffs.mouth, pose=canonical_pose(128))  # (T, 68, 2)
    assert points.shape == (len(train[0].landmarks), 68, 2)
    assert (points >= 0).all() and (points < 128).all()
    np.testing.assert_allclose(apply_pose(CANONICAL_FACE[None], canonical_pose(128))[0, 30], (64, 64 - 7.68), atol=1e-3)
    images = render_mesh(points, 128)
    assert (images.max(axis=-1) > 0).mean(axis=(1, 2)).min() > 0.15  # the face fills a good part of the crop
