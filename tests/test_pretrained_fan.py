"""`--detector fan`: FaceAlignment(..., compile=False) from stand-in checkpoints in $TORCH_HOME/hub/checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from standins import cli

from imagineid.errors import MalformedWeightsError, MissingWeightsError
from imagineid.face.fan_backend import (
    FAN_CHECKPOINT,
    S3FD_CHECKPOINT,
    FanLandmarker,
    check_checkpoints,
)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """Random-weight 2D-FAN-4 and S3FD state dicts under the names face-alignment 1.5 looks for."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / FAN_CHECKPOINT)
    torch.save(s3fd().state_dict(), folder / S3FD_CHECKPOINT)
    return home


def test_fan_landmarker_builds_from_local_checkpoints(torch_home, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    assert check_checkpoints() == torch_home / "hub" / "checkpoints"
    landmarker = FanLandmarker(device="cpu")
    assert landmarker._fa.face_detector is not None
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    boxes = landmarker.detect(image)  # random weights: any number of boxes, but well-formed ones
    assert all(b.right >= b.left and b.bottom >= b.top for b in boxes)
    assert not list((torch_home / "hub" / "checkpoints").glob("*.partial"))  # nothing was fetched


@pytest.mark.slow
def test_fan_landmarks_shape(torch_home, monkeypatch) -> None:
    """One 2D-FAN-4 forward (+ flipped) on CPU: ~10 s on 2 busy cores."""
    from imagineid.face.dlib_backend import FaceBox

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    points = FanLandmarker(device="cpu").landmarks(image, FaceBox(20, 20, 108, 108, 1.0))
    assert points.shape == (68, 2) and points.dtype == np.float32


def test_missing_and_malformed_checkpoints(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=f"{FAN_CHECKPOINT}.*docs/pretrained.md § face-alignment"):
        check_checkpoints()
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for name in (FAN_CHECKPOINT, S3FD_CHECKPOINT):
        (folder / name).write_bytes(b"truncated download")
    with pytest.raises(MalformedWeightsError, match="do not load"):
        FanLandmarker(device="cpu")


def test_cli_fan_missing_checkpoint_is_one_line(tmp_path, monkeypatch) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    result = cli("preprocess", video, "--out", tmp_path / "d", "--detector", "fan")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1, result.stderr
    assert FAN_CHECKPOINT in lines[0] and "docs/pretrained.md § face-alignment (FAN)" in lines[0]
