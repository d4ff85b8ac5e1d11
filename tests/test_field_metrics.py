"""The field's metrics (issue 19): FID, CSIM, LSE-C / LSE-D, M-LMD / F-LMD against known answers, each
network loaded from a stand-in file in its official layout (random weights) through the real loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imagineid.errors import ImagineIDError, MalformedWeightsError, MissingWeightsError
from imagineid.evaluation.arcface import IResNet, load_arcface
from imagineid.evaluation.csim import aligned_crops, csim
from imagineid.evaluation.face_align5 import ARCFACE_TEMPLATE, align_face, five_points, similarity
from imagineid.evaluation.fid import fid, fid_from_features
from imagineid.evaluation.fid_inception import FIDInceptionV3, load_fid_inception
from imagineid.evaluation.field_metrics import FieldMetrics, FieldWeights
from imagineid.evaluation.frechet import feature_stats, frechet_distance
from imagineid.evaluation.fvd import CLIP_FRAMES, fvd_from_features, preprocess, video_clips, video_features
from imagineid.evaluation.i3d import MIXED, InceptionI3d, load_i3d, same_padding
from imagineid.evaluation.landmark_distance import landmark_distances
from imagineid.evaluation.lse import (
    audio_embeddings,
    face_boxes,
    lip_embeddings,
    lse,
    syncnet_crop,
    usable_windows,
)
from imagineid.evaluation.sync_mfcc import pcm16_scale, sync_mfcc
from imagineid.evaluation.syncnet import SyncNet, load_syncnet
from imagineid.evaluation.video_metrics import VideoFaces


def _kaiming(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations at unit scale through the depth (default init shrinks them)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model.eval()


def _save(model: nn.Module, path: Path, drop_batch_counts: bool = False) -> Path:
    state = model.state_dict()
    if drop_batch_counts:  # files written by torch < 0.4.1 have no num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return path


def _face_points(rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """68 plausible landmarks: the ArcFace five-point template's geometry scaled into a size-px frame."""
    points = rng.uniform(0.3, 0.7, (68, 2)) * size
    scale = size / 112 * 0.9
    five = ARCFACE_TEMPLATE * scale + size * 0.05
    points[36:42], points[42:48] = five[0], five[1]
    points[30], points[48], points[54] = five[2], five[3], five[4]
    return points.astype(np.float32)


# --- FID --------------------------------------------------------------------------------------------


def test_frechet_distance_of_shifted_gaussians_is_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a, b = np.diag(rng.uniform(0.5, 2.0, 6)), np.diag(rng.uniform(0.5, 2.0, 6))
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(np.diag(a) + np.diag(b) - 2 * np.sqrt(np.diag(a) * np.diag(b)))
    assert frechet_distance(mu1, a, mu2, b) == pytest.approx(closed, rel=1e-9)
    features = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))  # full covariance
    shift = rng.normal(size=6)
    assert fid_from_features(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    few, other = rng.normal(size=(5, 40)), rng.normal(size=(6, 40)) * 2 + 1  # fewer samples than dimensions
    assert fid_from_features(few, other) == pytest.approx(frechet_distance(*feature_stats(few), *feature_stats(other)))
    assert fid_from_features(few, few + shift[0]) == pytest.approx(40 * shift[0] ** 2)


def test_fid_stand_in_inception_loads_and_a_set_matches_itself(tmp_path: Path) -> None:
    path = _save(_kaiming(FIDInceptionV3()), tmp_path / "pt_inception-2015-12-05-6726825d.pth", True)
    model = load_fid_inception(path)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(3)]
    flat = [np.full((48, 48, 3), v, np.uint8) for v in (30, 120, 220)]
    with torch.no_grad():
        same, other = fid(frames, frames, model, size=64), fid(frames, flat, model, size=64)
    assert same["fid_samples_generated"] == same["fid_samples_reference"] == 3 and same["fid_resolution"] == 64
    assert abs(same["fid"]) < 1e-6 * other["fid"] and other["fid"] > 0


def test_weight_files_fail_with_one_line_naming_file_and_section(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match=r"nowhere\.pth.*docs/pretrained\.md § FID Inception"):
        load_fid_inception(tmp_path / "nowhere.pth")
    wrong = tmp_path / "syncnet_v2.model"
    torch.save({"netcnnaud.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(MalformedWeightsError) as err:
        load_syncnet(wrong)
    assert "\n" not in str(err.value) and "syncnet_v2.model" in str(err.value) and "§ SyncNet" in str(err.value)
    garbage = tmp_path / "backbone.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(MalformedWeightsError, match="§ ArcFace"):
        load_arcface(garbage)


# --- FVD --------------------------------------------------------------------------------------------


def test_i3d_pads_like_tensorflow_same_and_has_pytorch_i3d_layout() -> None:
    import math

    for n in (7, 8, 9, 16, 17, 224):
        for k, s in ((7, 2), (3, 2), (3, 1), (1, 1), (2, 2)):
            padded = same_padding(torch.ones(1, 1, n, n, n), (k,) * 3, (s,) * 3)
            tf_total = max((math.ceil(n / s) - 1) * s + k - n, 0)  # TensorFlow's 'SAME' rule
            assert padded.shape[-1] == n + tf_total
            before = tf_total // 2  # TensorFlow puts the odd pixel after
            row = padded[0, 0, before, before]  # a line through the input along W
            assert row[:before].sum() == 0 and bool(row[before : before + n].all()) and row[before + n :].sum() == 0
            assert F.max_pool3d(padded, k, s).shape[-1] == math.ceil(n / s)
    state = InceptionI3d().state_dict()
    expected = {  # shapes in pytorch-i3d's Kinetics-400 file, from its channel table
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_2c_3x3.bn.running_var": (192,),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
        "Mixed_5c.b0.bn.running_mean": (384,),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert sum(out[0] + out[2] + out[4] + out[5] for _, out in MIXED.values()) == sum(
        state[f"{name}.{b}.bn.running_var"].shape[0] for name in MIXED for b in ("b0", "b1b", "b2b", "b3b")
    )


def test_fvd_clips_are_consecutive_resized_centre_crops_scaled_as_videogpt() -> None:
    frames = [np.full((40, 60, 3), t, np.uint8) for t in range(40)]
    clips = list(video_clips(frames))
    assert len(clips) == 2 and [c[0, 0, 0, 0] for c in clips] == [0, CLIP_FRAMES]  # the 8-frame tail dropped
    ramp = np.tile(np.linspace(0, 255, 60).astype(np.uint8)[None, :, None], (40, 1, 3))
    x = preprocess(np.stack([ramp, np.zeros_like(ramp), np.full_like(ramp, 255)]))
    assert x.shape == (3, 3, 224, 224)
    assert float(x[:, 1].max()) == -0.5 and float(x[:, 2].min()) == 0.5  # black → −0.5, white → +0.5
    edge = float(x[0, 0, 112, 0]) + 0.5  # the crop keeps the middle 40 of 60 columns: the left edge ≈ 1/6 grey
    assert 0.12 < edge < 0.2


def test_fvd_stand_in_i3d_loads_and_a_set_matches_itself(tmp_path: Path) -> None:
    model = load_i3d(_save(_kaiming(InceptionI3d()), tmp_path / "i3d_pretrained_400.pt"))
    rng = np.random.default_rng(3)
    videos = [[rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2 * CLIP_FRAMES)]]
    flat = [[np.full((40, 48, 3), v, np.uint8) for v in rng.integers(0, 256, 2 * CLIP_FRAMES)]]
    feats, flat_feats = video_features(videos, model), video_features(flat, model)
    assert feats.shape == (2, 400)
    same, other = fvd_from_features(feats, feats), fvd_from_features(feats, flat_feats)
    assert same["fvd_clips_generated"] == same["fvd_clips_reference"] == 2 and same["fvd_resolution"] == 224
    assert abs(same["fvd"]) < 1e-6 * other["fvd"] and other["fvd"] > 0
    assert fvd_from_features(feats[:1], feats)["fvd"] is None  # one clip fits no Gaussian
    charades = load_i3d(_save(InceptionI3d(157), tmp_path / "rgb_charades.pt"))  # class count from the file
    assert charades.logits.conv3d.out_channels == 157
    wrong = tmp_path / "rgb_imagenet.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 3, 7, 7, 7)}, wrong)
    with pytest.raises(MalformedWeightsError) as err:
        load_i3d(wrong)
    assert "\n" not in str(err.value) and "rgb_imagenet.pt" in str(err.value) and "§ FVD I3D" in str(err.value)


# --- CSIM -------------------------------------------------------------------------------------------


def test_five_point_alignment_maps_the_template_onto_itself() -> None:
    rng = np.random.default_rng(2)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_TEMPLATE @ (scale * rot).T + shift
    matrix = similarity(moved, ARCFACE_TEMPLATE)
    assert np.allclose(moved @ matrix[:, :2].T + matrix[:, 2], ARCFACE_TEMPLATE, atol=1e-9)
    points = rng.uniform(0, 112, (68, 2))
    points[36:42], points[42:48], points[30], points[48], points[54] = ARCFACE_TEMPLATE
    assert np.allclose(five_points(points), ARCFACE_TEMPLATE)
    image = rng.integers(0, 256, (130, 140, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, points), image[:112, :112])  # identity warp


@pytest.fixture(scope="module")
def arcface_files(tmp_path_factory) -> dict[str, Path]:
    """A cut-down IResNet (one block per stage, 64-d) as arcface_torch's backbone.pth and as insightface ONNX."""
    folder = tmp_path_factory.mktemp("arcface")
    model = _kaiming(IResNet((1, 1, 1, 1), num_features=64))
    files = {"torch": _save(model, folder / "backbone.pth")}
    pytest.importorskip("onnx")
    files["onnx"] = folder / "w600k_r50.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 112, 112), files["onnx"], dynamo=False, input_names=["input.1"])
    return files


def test_csim_of_identical_frames_is_one_with_either_official_format(arcface_files: dict[str, Path]) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)] * 3  # one face, held
    points = [_face_points(rng)] * 3
    others = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(3)]
    torch_net, onnx_net = load_arcface(arcface_files["torch"]), load_arcface(arcface_files["onnx"])
    crops = aligned_crops(frames, points)
    assert crops.shape == (3, 112, 112, 3)
    assert np.allclose(torch_net(crops), onnx_net(crops), atol=1e-4)  # the same network through both loaders
    for net in (torch_net, onnx_net):
        assert csim(net, (frames, points), (frames, points)) == pytest.approx(1.0, abs=1e-6)
        assert csim(net, (frames, points), (others, points)) < 0.999


def test_onnx_arcface_without_onnxruntime_says_how_to_get_it(arcface_files, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(ImagineIDError, match="pip install onnxruntime"):
        load_arcface(arcface_files["onnx"])


# --- LSE-C / LSE-D ----------------------------------------------------------------------------------


def test_sync_mfcc_is_python_speech_features_mfcc() -> None:
    psf = pytest.importorskip("python_speech_features")
    samples = pcm16_scale(np.random.default_rng(4).uniform(-0.5, 0.5, 16000 + 77))
    assert np.allclose(sync_mfcc(samples), psf.mfcc(samples, 16000), atol=1e-9)


def test_offset_search_finds_a_known_three_frame_audio_delay(tmp_path: Path) -> None:
    """Random SyncNet towers make unrelated embeddings; so the stand-in's last layers (netfclip.3, netfcaud.3)
    are solved so that the real pipeline (crops, MFCC windows, both towers) maps video window i and audio
    window i + 3 to the same embedding. The saved file then goes through the loader and `lse` must report
    the 3-frame delay (syncnet_python's sign: offset −3), a near-zero LSE-D and a clear confidence."""
    rng = np.random.default_rng(5)
    n_frames = 17
    frames = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(n_frames)]
    landmarks = [_face_points(rng, 96) for _ in range(n_frames)]
    audio = rng.uniform(-0.3, 0.3, n_frames * 640).astype(np.float32)
    windows = usable_windows(n_frames, len(audio))
    assert windows == 12

    net = _kaiming(SyncNet())
    heads = net.netfclip[3], net.netfcaud[3]
    net.netfclip[3] = net.netfcaud[3] = nn.Identity()  # the towers' 512-d features, through the real windowing
    crops = np.stack([syncnet_crop(f, b) for f, b in zip(frames, face_boxes(landmarks))])
    hidden_v = lip_embeddings(net, crops, windows).double().numpy()  # (12, 512)
    hidden_a = audio_embeddings(net, sync_mfcc(pcm16_scale(audio)), windows).double().numpy()
    net.netfclip[3], net.netfcaud[3] = heads
    delay = 3
    targets = rng.normal(size=(windows + delay, 1024)) * 10
    want_v, want_a = targets[delay:], targets[:windows]  # audio window j ↔ video window j − 3
    for head, hidden, want in ((net.netfclip[3], hidden_v, want_v), (net.netfcaud[3], hidden_a, want_a)):
        design = np.hstack([hidden, np.ones((windows, 1))])
        solved = np.linalg.lstsq(design, want, rcond=None)[0]  # (513, 1024)
        head.weight.data = torch.from_numpy(solved[:-1].T.copy()).float()
        head.bias.data = torch.from_numpy(solved[-1].copy()).float()
    loaded = load_syncnet(_save(net, tmp_path / "syncnet_v2.model"))

    found = lse(loaded, frames, landmarks, audio)
    assert found["sync_offset"] == -delay and found["sync_windows"] == windows
    typical = float(np.linalg.norm(targets, axis=1).mean())
    assert found["lse_d"] < 0.3 * typical and found["lse_c"] > 0.5 * typical
    shuffled = lse(loaded, frames, landmarks, np.roll(audio, 640 * 2))  # audio moved 2 frames later still: −5
    assert shuffled["sync_offset"] == -delay - 2


# --- M-LMD / F-LMD ----------------------------------------------------------------------------------


def test_landmark_distances_match_known_offsets() -> None:
    rng = np.random.default_rng(6)
    truth = [rng.uniform(0, 256, (68, 2)) for _ in range(4)]
    shifted = [p + np.array([3.0, 4.0]) for p in truth]  # every point 5 px away
    assert landmark_distances(shifted, truth) == {
        "m_lmd": pytest.approx(5.0),
        "f_lmd": pytest.approx(5.0),
        "lmd_frames": 4,
    }
    mouth_only = [p.copy() for p in truth]
    for p in mouth_only:
        p[48:68, 0] += 2.0
    out = landmark_distances(mouth_only + [None], truth + [truth[0]])  # a frame without a face is left out
    assert (
        out["m_lmd"] == pytest.approx(2.0) and out["f_lmd"] == pytest.approx(2.0 * 20 / 68) and out["lmd_frames"] == 4
    )


# --- wiring -----------------------------------------------------------------------------------------


def test_field_metrics_compute_what_is_configured_and_name_the_file_for_the_rest(arcface_files, tmp_path) -> None:
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)] * 8  # one face, held: CSIM 1 against itself
    points = [_face_points(rng, 96)] * 8
    descriptors = [rng.normal(size=128)] * 8
    faces = VideoFaces(frames, points, descriptors)

    bare = FieldMetrics()
    assert set(bare.skipped) == {"lse_c", "lse_d", "fid", "fvd", "csim"}
    assert "--syncnet" in bare.skipped["lse_c"] and "§ SyncNet" in bare.skipped["lse_c"]
    assert "--fid-inception" in bare.skipped["fid"] and "--arcface" in bare.skipped["csim"]
    row = bare.video(faces, None, faces)
    assert row["csim_dlib"] == pytest.approx(1.0) and row["m_lmd"] == row["f_lmd"] == 0.0
    assert np.isnan(row["csim"]) and np.isnan(row["lse_c"])

    inception = _save(_kaiming(FIDInceptionV3()), tmp_path / "pt_inception.pth")
    field = FieldMetrics(FieldWeights(arcface=arcface_files["torch"], fid_inception=inception))
    assert set(field.skipped) == {"lse_c", "lse_d", "fvd"}
    row = field.video(faces, None, faces)
    assert row["csim"] == pytest.approx(1.0, abs=1e-6)
    summary = field.summary([row])
    assert summary["fid_samples_generated"] == summary["fid_samples_reference"] == 8
    assert abs(summary["fid"]) < 1e-3 and summary["csim"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_command_names_a_missing_weight_file_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    gen = tmp_path / "gen"
    gen.mkdir()
    pq.write_table(pa.Table.from_pylist([{"key": "a", "status": "ok", "video": "a.mp4"}]), gen / "index.parquet")
    missing = tmp_path / "models" / "syncnet_v2.model"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagineid.cli",
            "evaluate",
            str(gen),
            "--data",
            str(tmp_path),
            "--syncnet",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, lines
    assert "syncnet_v2.model" in lines[0] and "§ SyncNet" in lines[0]


def test_evaluate_measures_a_video_against_itself_with_every_file_given(arcface_files, tmp_path: Path) -> None:
    """A GEN folder whose 'generated' video is its own driving clip (synthetic, with a face): with stand-in
    SyncNet / Inception / ArcFace / I3D files the field's metrics are all computed and take their known
    values (identical landmarks, identity, frame and clip statistics); nothing is left skipped."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from imagineid.evaluation.evaluate import evaluate
    from imagineid.synth.corpus import SynthConfig, synthesize_corpus

    corpus = tmp_path / "corpus"
    synthesize_corpus(corpus, SynthConfig(speakers=1, clips_per_speaker=1, seconds=1.28, seed=4), progress=False)
    clip = sorted((corpus / "videos").glob("*.mp4"))[0]
    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copy2(clip, gen / "self.mp4")
    row = {
        "key": "self",
        "status": "ok",
        "video": "self.mp4",
        "audio": str(clip),
        "seed": 0,
        "frames": 32,
        "predicted_gender": None,
        "predicted_emotion": None,
        "mesh_mouth_opening": None,
    }
    pq.write_table(pa.Table.from_pylist([row]), gen / "index.parquet")
    weights = FieldWeights(
        syncnet=_save(_kaiming(SyncNet()), tmp_path / "syncnet_v2.model"),
        fid_inception=_save(_kaiming(FIDInceptionV3()), tmp_path / "pt_inception.pth"),
        arcface=arcface_files["torch"],
        i3d=_save(_kaiming(InceptionI3d()), tmp_path / "i3d_pretrained_400.pt"),
    )
    metrics = evaluate(gen, tmp_path, None, progress=False, weights=weights)
    video, summary = metrics["videos"][0], metrics["summary"]
    assert metrics["skipped"] == {}
    assert video["lmd_frames"] > 0 and video["m_lmd"] == video["f_lmd"] == 0.0
    for name in ("csim", "csim_dlib"):  # each talking frame against the clip's mean identity: near, not at, 1
        assert 0.9 < video[name] <= 1.0 + 1e-9
    assert np.isfinite(video["lse_c"]) and np.isfinite(video["lse_d"]) and video["sync_windows"] == 27
    assert summary["fid_samples_generated"] == summary["fid_samples_reference"] == 32 and abs(summary["fid"]) < 1e-3
    assert summary["fvd_clips_generated"] == summary["fvd_clips_reference"] == 2 and abs(summary["fvd"]) < 1e-3
