"""The per-clip face stage: tracking accuracy against synthetic ground truth, rejection reasons, alignment, masks."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from imagineid.face.align import (
    AlignConfig,
    alignment_transforms,
    crop_frames,
    invert_transforms,
    transform_points,
)
from imagineid.face.dlib_backend import DlibLandmarker
from imagineid.face.masks import (
    blend_mask,
    decode_mask_png,
    encode_mask_png,
    face_mask,
    mouth_mask,
)
from imagineid.face.track import (
    AmbiguousSubjectError,
    FaceLostError,
    FaceTooSmallError,
    NoFaceError,
    TooFewFramesError,
    track_face,
)
from imagineid.media import iter_frames, read_frames, write_video
from imagineid.synth.corpus import SynthConfig, synthesize_corpus
from imagineid.synth.face import random_background

CORPUS = SynthConfig(speakers=2, clips_per_speaker=1, seconds=2.0, size=256, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("face_corpus")
    synthesize_corpus(out, CORPUS, progress=False)
    return out


def read_clips(corpus: Path) -> list[dict]:
    """Per clip: path, decoded frames (50, 256, 256, 3) and ground-truth landmarks (50, 68, 2)."""
    rows = pq.read_table(corpus / "metadata.parquet").to_pylist()
    return [
        {
            "path": corpus / r["video"],
            "frames": read_frames(corpus / r["video"]),
            "truth": np.asarray(r["landmarks"], np.float32).reshape(-1, 68, 2),
        }
        for r in rows
    ]


@pytest.fixture(scope="module")
def clips(corpus: Path) -> list[dict]:
    return read_clips(corpus)


@pytest.fixture(scope="module")
def tracks(clips: list[dict]) -> list:
    return [track_face(iter_frames(c["path"], fps=25), fps=25) for c in clips]


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return random_background(np.random.default_rng(0), 256).astype(np.uint8)


def _error(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error over all frames, as a fraction of the inter-ocular distance (outer corners 36-45)."""
    iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)  # (T,)
    return float((np.linalg.norm(points - truth, axis=-1).mean(axis=1) / iod).mean())


def _scaled(frame: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA if side < frame.shape[0] else cv2.INTER_LINEAR)


# -- tracking ----------------------------------------------------------------------------------------


def test_tracked_landmarks_match_the_ground_truth(clips, tracks) -> None:
    for clip, track in zip(clips, tracks):
        n = len(clip["frames"])
        assert track.landmarks.shape == track.raw_landmarks.shape == (n, 68, 2)
        assert track.landmarks.dtype == np.float32 and track.boxes.shape == (n, 4)
        assert track.found.all() and track.fps == 25.0
        raw, smooth = _error(track.raw_landmarks, clip["truth"]), _error(track.landmarks, clip["truth"])
        print(
            f"\n{clip['path'].stem}: landmark error {smooth:.2%} of inter-ocular (raw {raw:.2%}), "
            f"{track.n_detections} detections for {n} frames"
        )
        assert smooth < 0.08
        assert smooth <= raw * 1.05  # smoothing does not cost accuracy, mouth included
        # The tracked box is where the detector would put it.
        detected = DlibLandmarker().detect(clip["frames"][7])[0]
        assert np.abs(track.boxes[7] - [detected.left, detected.top, detected.right, detected.bottom]).max() < 6


def test_tracking_between_detections_saves_detector_runs(clips, tracks) -> None:
    for clip, track in zip(clips, tracks):
        assert track.n_detections <= len(clip["frames"]) // 4


def test_tracking_speed(clips) -> None:
    frames = clips[0]["frames"]
    track_face(iter(frames[:10]))  # warm the models
    start = time.perf_counter()
    track_face(iter(frames))
    fps = len(frames) / (time.perf_counter() - start)
    print(f"\ntrack_face: {fps:.0f} frames/s at 256 px")
    assert fps > 25


def test_small_background_face_is_ignored(clips) -> None:
    a, b = clips[0]["frames"][:20], clips[1]["frames"][:20]
    frames = []
    for x, y in zip(a, b):
        canvas = np.zeros((416, 672, 3), np.uint8)
        canvas[:, :416] = _scaled(x, 416)  # the subject, 1.6x
        canvas[80:336, 416:] = y  # a second face with ~40 % of its area
        frames.append(canvas)
    track = track_face(iter(frames))
    assert track.found.all()
    expected = clips[0]["truth"][:20] * (416 / 256)
    assert _error(track.landmarks, expected) < 0.08


def test_transient_comparable_face_is_ignored(clips) -> None:
    a, b = clips[0]["frames"][:20], clips[1]["frames"][:20]
    frames = [np.concatenate([x, y if i < 5 else np.full_like(y, 128)], axis=1) for i, (x, y) in enumerate(zip(a, b))]
    track = track_face(iter(frames))  # the rival is in 1 of 4 detection frames
    assert track.found.all()
    assert track.landmarks[:, :, 0].max() < 256


# -- rejections --------------------------------------------------------------------------------------


def test_background_only_is_no_face(background) -> None:
    with pytest.raises(NoFaceError, match=r"no face found in any of 20 frames") as err:
        track_face(iter([background] * 20))
    assert err.value.kind == "no_face"


def test_two_comparable_faces_without_audio_are_ambiguous(clips) -> None:
    a, b = clips[0]["frames"][:12], clips[1]["frames"][:12]
    frames = [np.concatenate([x, y], axis=1) for x, y in zip(a, b)]  # (256, 512, 3)
    message = (
        r"ambiguous subject: 2 persistent, consistent faces of comparable size .* and no audio to tell the speaker"
    )
    with pytest.raises(AmbiguousSubjectError, match=message) as err:
        track_face(iter(frames))
    assert err.value.kind == "ambiguous_subject"


def test_tiny_face_is_reported_with_its_size(clips, background) -> None:
    frames = []
    for x in clips[0]["frames"][:12]:
        canvas = background.copy()
        canvas[96:160, 96:160] = _scaled(x, 64)  # face box ~26 px: only an upscaled probe finds it
        frames.append(canvas)
    with pytest.raises(FaceTooSmallError, match=r"face too small \(2\d px < 48 px") as err:
        track_face(iter(frames))
    assert err.value.kind == "face_too_small"


def test_one_frame_video_is_too_few_frames(clips, tmp_path) -> None:
    path = tmp_path / "one.mp4"
    write_video(path, clips[0]["frames"][:1], fps=25)
    with pytest.raises(TooFewFramesError, match=r"clip has 1 frame; at least 8 are needed") as err:
        track_face(iter_frames(path))
    assert err.value.kind == "too_few_frames"


def test_face_gone_for_over_a_second_is_face_lost(clips, background) -> None:
    frames = clips[0]["frames"].copy()
    frames[10:40] = background  # 30 frames = 1.2 s
    message = r"face lost for 26 consecutive frames from frame 10 \(more than 1 s"
    with pytest.raises(FaceLostError, match=message) as err:
        track_face(iter(frames))
    assert err.value.kind == "face_lost"


def test_face_lost_too_often_is_face_lost(clips, background) -> None:
    frames = clips[0]["frames"].copy()
    for start in (5, 20, 35):
        frames[start : start + 6] = background  # 18 of 50 frames, no run over 1 s
    with pytest.raises(FaceLostError, match=r"face lost in 18 of 50 frames \(more than 25%\)"):
        track_face(iter(frames))


def test_short_gaps_are_interpolated(clips, background) -> None:
    frames = clips[0]["frames"].copy()
    frames[21:24] = background
    track = track_face(iter(frames))
    assert not track.found[21:24].any() and track.found.sum() == 47
    assert np.isfinite(track.landmarks).all()
    assert _error(track.landmarks[21:24], clips[0]["truth"][21:24]) < 0.15


# -- alignment ---------------------------------------------------------------------------------------


def test_aligned_crops_hold_the_eyes_still(clips, tracks) -> None:
    for clip, track in zip(clips, tracks):
        transforms = alignment_transforms(track.landmarks)
        assert transforms.shape == (len(clip["frames"]), 2, 3)
        crops = list(crop_frames(iter(clip["frames"]), transforms, 256))
        assert len(crops) == len(clip["frames"]) and all(c.shape == (256, 256, 3) for c in crops)
        truth = transform_points(clip["truth"], transforms)  # (T, 68, 2) in crop pixels
        eyes = np.stack([truth[:, 36:42].mean(axis=1), truth[:, 42:48].mean(axis=1)], axis=1)  # (T, 2, 2)
        assert eyes.std(axis=0).max() < 1.5  # px
        assert np.abs(eyes.mean(axis=0) - [[96, 122], [160, 122]]).max() < 6  # FFHQ-like placement
        # Smooth: the crop's corners move less than a pixel or two between frames.
        square = np.array([[0, 0], [255, 0], [0, 255], [255, 255]], np.float32)
        corners = transform_points(square, invert_transforms(transforms))  # (T, 4, 2) in the frame
        assert np.linalg.norm(np.diff(corners, axis=0), axis=-1).max() < 2.0
        assert np.abs(transform_points(corners, transforms) - square).max() < 1e-3  # inverse round trip


def test_crop_frames_checks_counts(clips) -> None:
    transforms = alignment_transforms(clips[0]["truth"][:5], AlignConfig(crop_size=128))
    assert next(crop_frames(iter(clips[0]["frames"][:5]), transforms, 128)).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="4 frames for 5 transforms"):
        list(crop_frames(iter(clips[0]["frames"][:4]), transforms, 128))


# -- masks -------------------------------------------------------------------------------------------


def test_masks_nest_and_round_trip_through_png(clips, tracks) -> None:
    transforms = alignment_transforms(tracks[0].landmarks)
    points = transform_points(tracks[0].landmarks, transforms)  # (T, 68, 2)
    for t in (0, 17, 33):
        face, mouth, blend = face_mask(points[t], 256), mouth_mask(points[t], 256), blend_mask(points[t], 256)
        assert face.shape == mouth.shape == blend.shape == (256, 256)
        assert face.dtype == mouth.dtype == np.bool_ and blend.dtype == np.uint8
        assert 0.15 < face.mean() < 0.6 and mouth.sum() > 0.1 * face.sum()
        assert not (mouth & ~face).any()  # mouth inside face
        assert (blend[face] == 255).all() and (blend > 0).sum() > 1.2 * face.sum()  # blend ⊇ face, larger
        lips = np.round(points[t, 48:60]).astype(int)
        assert mouth[lips[:, 1], lips[:, 0]].all()
        for mask in (face, mouth, blend):
            png = encode_mask_png(mask)
            back = decode_mask_png(png)
            assert back.dtype == mask.dtype and np.array_equal(back, mask)
        assert len(encode_mask_png(face)) < 1000  # 1-bit PNG
