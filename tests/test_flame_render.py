"""The torch FLAME renderer (imagineid.face.flame_render) on the stand-in head: occlusion and camera agreement."""

from __future__ import annotations

import math

import pytest
import torch
from standins import write_flame

from imagineid.face.flame import FLAME
from imagineid.face.flame_fit import project
from imagineid.face.flame_render import render

YAW = math.radians(30)  # turns the +x cheek away from the camera


@pytest.fixture(scope="module")
def flame(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    write_flame(folder)
    return FLAME.from_files(folder)


def posed(flame: FLAME, yaw: float, size: int):
    out = flame(torch.zeros(1, 100), torch.zeros(1, 50), global_pose=torch.tensor([[0.0, yaw, 0.0]]))
    camera = torch.tensor([[math.log(size * 3.5), size / 2, size / 2]])  # the head fills most of the crop
    return out, camera


def brute_force_depth(vertices: torch.Tensor, faces: torch.Tensor, camera: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest covering surface per pixel by testing every pixel against every triangle: (H, W)."""
    tri = project(vertices, camera)[0][faces]  # (F, 3, 2)
    z = vertices[0, :, 2][faces]  # (F, 3)
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    p = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # (P, 2)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    best = []
    for chunk in p.split(512):
        d = chunk[:, None] - tri[None, :, 0]  # (C, F, 2)
        u = (d[..., 0] * e2[:, 1] - d[..., 1] * e2[:, 0]) / det
        v = (e1[:, 0] * d[..., 1] - e1[:, 1] * d[..., 0]) / det
        inside = (u >= -1e-6) & (v >= -1e-6) & (1 - u - v >= -1e-6) & (det.abs() > 1e-12)
        depth = (1 - u - v) * z[:, 0] + u * z[:, 1] + v * z[:, 2]
        best.append(torch.where(inside, depth, torch.tensor(float("-inf"))).amax(dim=1))
    return torch.cat(best).view(size, size)


def test_depth_test_matches_brute_force_at_30_degrees_yaw(flame) -> None:
    size = 96
    out, camera = posed(flame, YAW, size)
    got = render(out.vertices, flame.faces, camera, size, cull_backfaces=False)
    want = brute_force_depth(out.vertices, flame.faces, camera, size)
    assert torch.equal(torch.isinf(got.depth[0]), torch.isinf(want))
    assert torch.allclose(got.depth[0][~torch.isinf(want)], want[~torch.isinf(want)], atol=1e-6)


def test_far_cheek_is_hidden_by_the_depth_test(flame) -> None:
    """Without back-face culling only the z-buffer can hide the far side: its triangles cover pixels on their
    own, and win none of them in the full render. Culling changes nothing visible."""
    size = 128
    out, camera = posed(flame, YAW, size)
    tri = out.vertices[0][flame.faces]  # (F, 3, 3) posed
    normal_z = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)[:, 2]
    centre = flame.v_template[flame.faces].mean(1)  # (F, 3) template
    far_cheek = (centre[:, 0] > 0.02) & (centre[:, 1].abs() < 0.05) & (normal_z < 0)
    alone = render(out.vertices, flame.faces[far_cheek], camera, size, cull_backfaces=False)
    assert (alone.face_index >= 0).sum() > 100
    full = render(out.vertices, flame.faces, camera, size, cull_backfaces=False)
    far_ids = torch.nonzero(far_cheek)[:, 0]
    assert not torch.isin(full.face_index, far_ids).any()
    culled = render(out.vertices, flame.faces, camera, size)
    assert torch.equal(culled.depth, full.depth) and torch.equal(culled.face_index, full.face_index)


@pytest.mark.parametrize("yaw", [0.0, YAW])
def test_rendered_landmarks_agree_with_the_model_within_a_pixel(flame, yaw) -> None:
    """Where the render shows each visible landmark's surface point is where `project` puts it."""
    size = 256
    out, camera = posed(flame, yaw, size)
    got = render(out.vertices, flame.faces, camera, size)
    assert got.image.shape == (1, size, size) and 0 < got.image.max() <= 1
    projected = project(out.landmarks, camera)[0]  # (68, 2)
    checked = 0
    for k in range(68):
        face = int(flame.landmark_faces[k])
        ys, xs = torch.nonzero(got.face_index[0] == face, as_tuple=True)
        if len(ys) == 0:
            continue  # hidden, or smaller than a pixel
        alone = render(out.vertices, flame.faces[face : face + 1], camera, size).face_index
        pixels = torch.stack([xs, ys], 1).double()  # (n, 2)
        if len(ys) < 3 or len(ys) < (alone >= 0).sum() or torch.linalg.svdvals(pixels - pixels.mean(0)).min() < 1:
            continue  # partly hidden, or too thin in the image to locate the triangle from its pixels
        shown = torch.linalg.lstsq(got.bary[0, ys, xs].double(), pixels).solution  # (3, 2) rendered corners
        pixel = (flame.landmark_bary[k].double() @ shown).float()  # where the render puts the landmark
        assert (pixel - projected[k]).norm() <= 1.0, k
        checked += 1
    assert checked >= 40


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_render_on_cuda_matches_cpu(flame) -> None:
    out, camera = posed(flame, YAW, 128)
    cpu = render(out.vertices, flame.faces, camera, 128)
    gpu = render(out.vertices.cuda(), flame.faces.cuda(), camera.cuda(), 128)
    assert torch.equal(gpu.face_index.cpu(), cpu.face_index)
