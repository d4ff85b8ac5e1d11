"""FLAME fit and render cost on CPU: fit ms/frame (one clip, batched over its frames) and render ms/frame
at 256 px; prints JSON with the host CPU.

    .venv/bin/python benchmarks/flame.py [--flame models/flame] [--frames 100] [--renders 32]

Without `--flame` it runs on the test suite's stand-in head (tests/standins.py), which has fewer
triangles than FLAME 2020 (4,368 against 9,976): give real files for figures that transfer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from imagineid.face.flame import FLAME
from imagineid.face.flame_fit import FlameFitter, project
from imagineid.face.flame_render import render

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listen_real import cpu_name  # noqa: E402


def measure(flame: FLAME, frames: int, renders: int) -> dict:
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, frames)[:, None]
    shape = torch.randn(1, flame.n_shape, generator=g)
    expression = 0.7 * torch.randn(1, flame.n_expression, generator=g) * torch.sin(6 * t)
    jaw = torch.cat([0.15 + 0.1 * torch.sin(9 * t), torch.zeros(frames, 2)], 1)
    pose = torch.cat([0.2 * torch.sin(4 * t), 0.5 * torch.cos(3 * t), 0.1 * torch.sin(5 * t)], 1)
    camera = torch.cat([torch.full((frames, 1), math.log(900.0)), torch.full((frames, 2), 128.0)], 1)
    out = flame(shape.expand(frames, -1), expression, pose, jaw_pose=jaw)
    landmarks = project(out.landmarks, camera)
    fitter = FlameFitter(flame)
    start = time.perf_counter()
    fit = fitter.fit(landmarks)
    fit_s = time.perf_counter() - start
    vertices = out.vertices[:renders]
    render(vertices[:2], flame.faces, camera[:2], 256)  # warm-up
    start = time.perf_counter()
    for i in range(len(vertices)):
        render(vertices[i : i + 1], flame.faces, camera[i : i + 1], 256)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    render(vertices, flame.faces, camera[: len(vertices)], 256)
    batched_s = time.perf_counter() - start
    return {
        "benchmark": "flame",
        "host_cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "vertices": int(flame.v_template.shape[0]),
        "triangles": int(flame.faces.shape[0]),
        "frames": frames,
        "fit_ms_per_frame": round(1000 * fit_s / frames, 2),
        "fit_target_ms_per_frame": 20,
        "fit_mean_residual_px": round(float(fit.residual_px.mean()), 3),
        "render_size": 256,
        "render_ms_per_frame": round(1000 * render_s / len(vertices), 2),
        "render_batched_ms_per_frame": round(1000 * batched_s / len(vertices), 2),
        "render_target_ms_per_frame": 5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flame", type=Path, default=None, help="generic_model.pkl or its folder (default: stand-in)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--renders", type=int, default=32)
    args = parser.parse_args()
    if args.flame is not None:
        result = measure(FLAME.from_files(args.flame), args.frames, args.renders)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from standins import write_flame

        with tempfile.TemporaryDirectory() as tmp:
            write_flame(Path(tmp))
            result = measure(FLAME.from_files(tmp), args.frames, args.renders)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
