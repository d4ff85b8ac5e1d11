"""FLAME layer, DECA encoder and `preprocess --morphable flame` on stand-in files in the official formats."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import copy_videos
from standins import N_EXPRESSION_MOUTH, cli, write_deca, write_flame

from imagineid.errors import MalformedWeightsError, MissingWeightsError
from imagineid.face.deca import N_PARAMS, DecaEncoder, crop_transform, decompose
from imagineid.face.flame import (
    FLAME,
    batch_rodrigues,
    load_landmark_embedding,
    lower_face_share,
)
from imagineid.face.flame_morphable import FlameMorphableModel


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    write_flame(root / "flame")
    write_deca(root / "deca" / "deca_model.tar")
    return root


def imagineid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imagineid.cli", *args], capture_output=True, text=True, timeout=180, check=False
    )


def test_flame_blend_shapes_and_skinning(files) -> None:
    flame = FLAME.from_files(files / "flame")
    b = 2
    rest = flame(torch.zeros(b, 100), torch.zeros(b, 50))
    assert rest.vertices.shape == (b, flame.v_template.shape[0], 3) and rest.landmarks.shape == (b, 68, 3)
    assert torch.allclose(rest.vertices[0], flame.v_template, atol=1e-6)
    shape = torch.randn(1, 100)
    shaped = flame(shape, torch.zeros(1, 50)).vertices[0]
    assert torch.allclose(shaped, flame.v_template + torch.einsum("k,vck->vc", shape[0], flame.shapedirs), atol=1e-5)
    # A global rotation turns the whole mesh rigidly about the root joint (no pose correctives for the root).
    rot = torch.tensor([[0.1, 0.4, -0.2]])
    turned = flame(torch.zeros(1, 100), torch.zeros(1, 50), global_pose=rot)
    r, root = batch_rodrigues(rot)[0], (flame.J_regressor @ flame.v_template)[0]
    assert torch.allclose(turned.vertices[0], (flame.v_template - root) @ r.T + root, atol=1e-5)
    # Opening the jaw moves the lower face (jaw-weighted) and leaves the forehead where it was.
    jaw = flame(torch.zeros(1, 100), torch.zeros(1, 50), jaw_pose=torch.tensor([[0.3, 0.0, 0.0]])).vertices[0]
    moved = (jaw - flame.v_template).norm(dim=1)
    top = flame.v_template[:, 1] > 0.05
    assert moved[~top].max() > 1e-3 and moved[top].max() < 1e-3


def test_landmark_embedding_layouts(files, tmp_path) -> None:
    faces, bary = load_landmark_embedding(files / "flame" / "landmark_embedding.npy")
    assert faces.shape == (68,) and bary.shape == (68, 3)
    import pickle

    (tmp_path / "static68.pkl").write_bytes(pickle.dumps({"lmk_face_idx": faces, "lmk_b_coords": bary}, protocol=2))
    assert np.array_equal(load_landmark_embedding(tmp_path / "static68.pkl")[0], faces)
    (tmp_path / "static51.pkl").write_bytes(pickle.dumps({"lmk_face_idx": faces[17:], "lmk_b_coords": bary[17:]}))
    with pytest.raises(MalformedWeightsError, match="51 landmarks.*docs/pretrained.md § FLAME"):
        load_landmark_embedding(tmp_path / "static51.pkl")


def test_mouth_components_are_the_lower_face_ones(files) -> None:
    share = lower_face_share(FLAME.from_files(files / "flame"))
    assert share.shape == (50,)
    assert np.flatnonzero(share >= 0.9).tolist() == list(range(N_EXPRESSION_MOUTH))


def test_deca_checkpoint_layouts(files, tmp_path) -> None:
    encoder = DecaEncoder.from_checkpoint(files / "deca")
    code = encoder.encode(torch.rand(3, 3, 224, 224))
    assert code.shape.shape == (3, 100) and code.expression.shape == (3, 50) and code.pose.shape == (3, 6)
    assert code.cam.shape == (3, 3) and code.tex.shape == (3, 50) and code.light.shape == (3, 9, 3)
    flat = {f"E_flame.{k}": v for k, v in torch.load(files / "deca" / "deca_model.tar")["E_flame"].items()}
    torch.save(flat, tmp_path / "flat.tar")
    again = DecaEncoder.from_checkpoint(tmp_path / "flat.tar")
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(encoder(x), again(x))
    torch.save({"E_detail": {}}, tmp_path / "other.tar")
    with pytest.raises(MalformedWeightsError, match="no E_flame weights"):
        DecaEncoder.from_checkpoint(tmp_path / "other.tar")
    with pytest.raises(MissingWeightsError, match="docs/pretrained.md § DECA"):
        DecaEncoder.from_checkpoint(tmp_path / "nowhere")


def test_full_resnet50_geometry() -> None:
    """The default encoder is DECA's: ResNet-50 without its classifier (23,508,032 weights) + 2048→1024→236."""
    encoder = DecaEncoder()
    assert sum(p.numel() for p in encoder.encoder.parameters()) == 23_508_032
    assert [m.out_features for m in encoder.layers if isinstance(m, torch.nn.Linear)] == [1024, N_PARAMS]
    assert decompose(np.zeros((2, N_PARAMS))).light.shape == (2, 9, 3)


def test_projection_round_trip(files) -> None:
    """Projected FLAME landmarks land where DECA's camera says, in crop pixels."""
    model = FlameMorphableModel.load(files / "flame", files / "deca")
    rng = np.random.default_rng(0)
    points = np.repeat(model.landmarks_2d(np.zeros(100), np.zeros((1, 50)), np.zeros((1, 6)))[:, :, :], 4, 0)
    landmarks = (points * 900 + 128 + rng.normal(0, 1, points.shape)).astype(np.float32)  # a face in a 256 crop
    frames = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(4)]
    coeffs = model.project(landmarks, frames, batch_size=3)
    assert coeffs.shape.shape == (100,) and coeffs.expression.shape == (4, 50)
    assert coeffs.mouth.shape == (4, 3 + N_EXPRESSION_MOUTH) and coeffs.pose.shape == (4, 4)
    drawn = model.landmarks_2d(coeffs.shape, coeffs.expression, coeffs.flame_pose, coeffs.pose)
    assert np.allclose(np.linalg.norm(drawn - landmarks, axis=-1).mean(axis=-1), coeffs.residual_px, atol=1e-3)
    m = crop_transform(landmarks[0])  # the DECA crop of these landmarks is centred on them
    centre = m[:, :2] @ landmarks[0].mean(axis=0) + m[:, 2]
    assert np.all(np.abs(centre - 112) < 40)


def test_preprocess_flame_writes_100_shape_and_50_expression(small_corpus, files, tmp_path) -> None:
    videos = copy_videos(small_corpus, tmp_path / "src")[:2]
    data = tmp_path / "data"
    result = imagineid(
        "preprocess",
        *map(str, videos),
        "--out",
        str(data),
        "--workers",
        "1",
        "--morphable",
        "flame",
        "--flame",
        str(files / "flame"),
        "--deca",
        str(files / "deca" / "deca_model.tar"),
    )
    assert result.returncode == 0, result.stderr
    assert "2 processed, 0 rejected" in result.stdout
    clips = pq.read_table(data / "clips").to_pylist()
    frames = pq.read_table(data / "frames")
    assert len(clips) == 2 and all(len(c["shape"]) == 100 for c in clips)
    assert frames.num_rows == sum(c["n_frames"] for c in clips)
    assert frames.schema.field("expression").type.list_size == 50
    assert frames.schema.field("mouth").type.list_size == 3 + N_EXPRESSION_MOUTH
    assert frames.schema.field("flame_pose").type.list_size == 6
    assert np.isfinite(np.array(frames["expression"].to_pylist())).all()
    version = (data / "morphable" / "CURRENT").read_text().strip()
    config = json.loads((data / "morphable" / version / "config.json").read_text())
    assert config["format"] == "imagineid.flame/1" and config["mouth"]["expression_components"] == [0, 1, 2]
    assert {c["morphable_version"] for c in clips} == {version}
    again = cli(
        "preprocess",
        *videos,
        "--out",
        data,
        "--workers",
        "1",
        "--morphable",
        "flame",
        "--flame",
        files / "flame",
        "--deca",
        files / "deca",
    )  # the folder: same files, same config
    assert again.exit_code == 0 and "2 already done" in again.stdout
    train = cli("train", data, "--out", tmp_path / "run", "--no-ray")
    assert train.exit_code != 0 and "FLAME coefficients" in train.stderr


@pytest.mark.parametrize("missing", ["flame", "deca", "embedding"])
def test_preprocess_flame_missing_file_is_one_line(files, tmp_path, missing) -> None:
    import shutil

    flame, deca = tmp_path / "flame", files / "deca"
    shutil.copytree(files / "flame", flame)
    if missing == "flame":
        (flame / "generic_model.pkl").unlink()
    elif missing == "embedding":
        (flame / "landmark_embedding.npy").unlink()
    else:
        deca = tmp_path / "no-deca"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    result = cli("preprocess", video, "--out", tmp_path / "d", "--morphable", "flame", "--flame", flame, "--deca", deca)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1, result.stderr
    name = {"flame": "generic_model.pkl", "deca": "no-deca", "embedding": "landmark_embedding.npy"}[missing]
    section = "DECA" if missing == "deca" else "FLAME"
    assert name in lines[0] and f"docs/pretrained.md § {section}" in lines[0]
    assert not (tmp_path / "d").exists()  # nothing was started
