"""FLAME meshes rendered in torch: z-buffered, normal-shaded, with the fitted camera (docs/architecture.md §4).

    out = render(vertices, flame.faces, fit.camera, size=256)   # vertices (B, V, 3) on any device
    out.image      # (B, H, W) shading in [0, 1], 0 off the face
    out.face_index # (B, H, W) winning triangle, −1 where no triangle covers the pixel
    out.depth      # (B, H, W) model z of the visible surface (larger is nearer), −inf off the face

The camera is `flame_fit.project` (scaled orthographic, looking down −z from +z), so a render lines up
with the landmarks the fit projected. Pixel centres are at integer coordinates, as landmark pixels are.

Rasterisation is per triangle over its bounding box, all triangles of all frames at once: every
(triangle, pixel-in-its-box) pair becomes one row (`repeat_interleave`), barycentric coordinates decide
coverage, and the z-buffer is two scatter reductions — the nearest depth per pixel (`amax`), then the
lowest triangle index among the candidates at that depth (a deterministic tie-break on shared edges).
No Python loop runs per triangle or pixel, so the same code runs on CUDA tensors; the memory is the
summed bounding-box area, which is small for a mesh whose triangles are a few pixels wide.

Back-face culling is on by default because it halves the work for a closed head; occlusion never
depends on it (the depth test alone decides), which is what `cull_backfaces=False` lets tests check.
Shading is Lambert with a light from the camera, on vertex normals interpolated across each triangle,
so the picture shows the surface's shape rather than its triangulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imagineid.face.flame_fit import project


@dataclass
class Render:
    image: torch.Tensor  # (B, H, W) float in [0, 1]
    face_index: torch.Tensor  # (B, H, W) int64, −1 background
    depth: torch.Tensor  # (B, H, W) model z of the winning surface, −inf background
    bary: torch.Tensor  # (B, H, W, 3) barycentric coordinates in the winning triangle


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (B, V, 3) of counter-clockwise (outward) triangles."""
    tri = vertices[:, faces]  # (B, F, 3, 3)
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)  # (B, F, 3), |n| = 2·area
    out = torch.zeros_like(vertices)
    for k in range(3):
        out.index_add_(1, faces[:, k], n)
    return torch.nn.functional.normalize(out, dim=-1)


def render(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: torch.Tensor,
    size: int = 256,
    cull_backfaces: bool = True,
    ambient: float = 0.1,
) -> Render:
    """vertices (B, V, 3) model frame (y up, viewer at +z), faces (F, 3), camera (B, 3) → `Render` at size²."""
    b, device = vertices.shape[0], vertices.device
    faces = faces.to(device=device, dtype=torch.long)
    n_faces = faces.shape[0]
    screen = project(vertices, camera)  # (B, V, 2) px, y down
    tri = screen[:, faces]  # (B, F, 3, 2)
    z = vertices[..., 2][:, faces]  # (B, F, 3)
    a, e1, e2 = tri[:, :, 0], tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]  # (B, F); < 0: facing the camera (y flipped)
    keep = det.abs() > 1e-12
    if cull_backfaces:
        keep &= det < 0
    lo = tri.amin(dim=2).ceil().clamp(0, size - 1)  # (B, F, 2) first pixel centre inside the box
    hi = tri.amax(dim=2).floor().clamp(0, size - 1)
    inside_image = (tri.amax(dim=2) >= 0).all(-1) & (tri.amin(dim=2) <= size - 1).all(-1)
    wh = (hi - lo + 1).clamp(min=0).long()  # (B, F, 2)
    count = (wh[..., 0] * wh[..., 1]) * (keep & inside_image)  # (B, F) candidate pixels per triangle
    flat_count = count.reshape(-1)
    which = torch.nonzero(flat_count, as_tuple=True)[0]  # triangles (over the batch) with candidates
    counts = flat_count[which]
    total = int(counts.sum())
    row = torch.repeat_interleave(torch.arange(len(which), device=device), counts, output_size=total)
    start = torch.cumsum(counts, 0) - counts
    offset = torch.arange(total, device=device) - start[row]
    tri_id = which[row]  # (P,) index into B·F
    width = wh.reshape(-1, 2)[tri_id, 0]
    px = lo.reshape(-1, 2)[tri_id, 0] + (offset % width)
    py = lo.reshape(-1, 2)[tri_id, 1] + torch.div(offset, width, rounding_mode="floor")
    # barycentric coordinates of the pixel centres
    a_, e1_, e2_ = a.reshape(-1, 2)[tri_id], e1.reshape(-1, 2)[tri_id], e2.reshape(-1, 2)[tri_id]
    det_ = det.reshape(-1)[tri_id]
    dx, dy = px - a_[:, 0], py - a_[:, 1]
    u = (dx * e2_[:, 1] - dy * e2_[:, 0]) / det_
    v = (e1_[:, 0] * dy - e1_[:, 1] * dx) / det_
    bary = torch.stack([1 - u - v, u, v], dim=1)  # (P, 3)
    covered = (bary >= -1e-6).all(dim=1)
    bary, tri_id, px, py = bary[covered], tri_id[covered], px[covered], py[covered]
    depth = (bary * z.reshape(-1, 3)[tri_id]).sum(1)  # (P,)
    frame = torch.div(tri_id, n_faces, rounding_mode="floor")
    pixel = (frame * size + py.long()) * size + px.long()  # (P,) flat index into (B, H, W)
    # z-buffer: nearest depth per pixel, then the lowest triangle among those at that depth
    n_pixels = b * size * size
    zbuf = torch.full((n_pixels,), float("-inf"), device=device, dtype=depth.dtype)
    zbuf.scatter_reduce_(0, pixel, depth, reduce="amax")
    front = depth == zbuf[pixel]
    sentinel = b * n_faces
    best = torch.full((n_pixels,), sentinel, device=device, dtype=torch.long)
    best.scatter_reduce_(0, pixel[front], tri_id[front], reduce="amin")
    won = front & (best[pixel] == tri_id)
    face_index = torch.full((n_pixels,), -1, device=device, dtype=torch.long)
    face_index[pixel[won]] = tri_id[won] % n_faces
    bary_map = torch.zeros(n_pixels, 3, device=device, dtype=vertices.dtype)
    bary_map[pixel[won]] = bary[won]
    # shading: interpolated vertex normals against a light from the camera (+z)
    normals = vertex_normals(vertices, faces)  # (B, V, 3)
    corner_normals = normals[:, faces].reshape(-1, 3, 3)[tri_id[won]]  # (W, 3 corners, 3)
    n = torch.nn.functional.normalize((bary[won, :, None] * corner_normals).sum(1), dim=-1)
    image = torch.zeros(n_pixels, device=device, dtype=vertices.dtype)
    image[pixel[won]] = ambient + (1 - ambient) * n[:, 2].clamp(min=0)
    shape = (b, size, size)
    return Render(image.view(shape), face_index.view(shape), zbuf.view(shape), bary_map.view(*shape, 3))
