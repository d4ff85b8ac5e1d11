"""Frame-generator metrics on held-out clips with teacher-forced conditions, plus adapter ablations.

    python -m imagineid.evaluation.generator_check RUN DATA [--clips 4] [--frames 8] [--steps 20]

Prints JSON: invariant-mode face detection rate (dlib on frames upscaled to 256 px), dlib-descriptor
distance to the true frame, background PSNR vs the reference (adapter + pixel paste / adapter only /
no blending), correlation of the generated mouth opening with the conditioning mesh's; variable-mode
seed reproducibility and the mean pairwise descriptor distance of 8 seeds (raw, and with generate's
frame-1 face check); and the same invariant metrics with each adapter off, and with invariant frames
denoised from pure noise instead of the noised reference (`strength` 1).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from imagineid.data.morphable import current_model
from imagineid.data.store import Store
from imagineid.face import landmarks68 as lm
from imagineid.face.dlib_backend import DlibLandmarker, upscaled
from imagineid.generation.config import GenerateConfig
from imagineid.generation.scheduler import to_uint8
from imagineid.generation.shard import face_found
from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline
from imagineid.runs.folder import RunDir
from imagineid.training.adapters import clip_heard_features, invariant_args
from imagineid.training.frame_data import FrameConditionDataset
from imagineid.training.ldm import psnr


def _uint8(frames: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, S, S) in [-1, 1] → RGB uint8 frames upscaled for dlib."""
    images = ((frames.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return [upscaled(im) for im in images]


def _faces(frames: torch.Tensor, landmarker: DlibLandmarker) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per frame: (68 landmarks, 128-d descriptor) of the best face, or None."""
    found = []
    for image in _uint8(frames):
        boxes = landmarker.detect(image)
        found.append((landmarker.landmarks(image, boxes[0]), landmarker.descriptor(image, boxes[0])) if boxes else None)
    return found


def invariant_metrics(
    pipe: ImagineIDPipeline, batch: dict, mesh_opening: np.ndarray, landmarker: DlibLandmarker, steps: int, **switches
) -> dict:
    args = invariant_args(batch, steps)
    frames = pipe(**args, generator=torch.Generator().manual_seed(0), **switches)
    generated, truth = _faces(frames, landmarker), _faces(batch["image"], landmarker)
    distances = [float(np.linalg.norm(g[1] - t[1])) for g, t in zip(generated, truth) if g and t]
    opened = [(lm.mouth_opening(g[0]), m) for g, m in zip(generated, mesh_opening) if g]
    outside = (batch["blend_mask"] < 0.01).float()  # strictly outside the dilated face mask
    return {
        "face_detection_rate": sum(g is not None for g in generated) / len(generated),
        "face_detection_rate_true_frames": sum(t is not None for t in truth)
        / len(truth),  # dlib's ceiling at this size
        "descriptor_distance_to_truth": float(np.mean(distances)) if distances else float("nan"),
        "background_psnr_db": psnr(frames, batch["reference"], outside),
        "mouth_opening_correlation": float(np.corrcoef(*zip(*opened))[0, 1]) if len(opened) > 2 else float("nan"),
    }


def check(run: Path, data: Path, clips: int = 4, frames: int = 8, steps: int = 20) -> dict:
    pipe = ImagineIDPipeline.from_pretrained(RunDir(run).pipeline)
    split = RunDir(run).split()
    store = Store(data)
    heard = clip_heard_features(run, data, split["val"][:clips])
    dataset = FrameConditionDataset(
        data, split["val"][:clips], current_model(store), pipe.vae.config.sample_size, seed=0, heard=heard
    )
    picks = [
        i
        for c in range(len(dataset.clips))
        for i in [k for k, (cc, _) in enumerate(dataset.index) if cc == c][:: max(1, 49 // frames)][:frames]
    ]
    items = [dataset[i] for i in picks]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    mesh_opening = np.array(
        [lm.mouth_opening(dataset.clips[c].points[t]) for c, t in (dataset.index[i] for i in picks)]
    )
    landmarker = DlibLandmarker(upsample=1)
    report = {
        "frames": len(items),
        "steps": steps,
        "invariant": invariant_metrics(pipe, batch, mesh_opening, landmarker, steps),
    }
    report["invariant"]["background_psnr_adapter_only_db"] = invariant_metrics(
        pipe, batch, mesh_opening, landmarker, steps, paste=False
    )["background_psnr_db"]
    report["invariant"]["background_psnr_no_blending_db"] = invariant_metrics(
        pipe, batch, mesh_opening, landmarker, steps, blend=False
    )["background_psnr_db"]
    report["ablations"] = {
        name: invariant_metrics(pipe, batch, mesh_opening, landmarker, steps, **switch)
        for name, switch in (
            ("no_textual_inversion", {"identity_tokens": False}),
            ("no_spatial_adapter", {"conditioning_scale": 0.0}),
            ("no_blending", {"blend": False}),
            ("pure_noise_start", {"strength": 1.0}),
        )
    }
    # Variable mode: one identity, eight seeds.
    one = dict(
        mesh=batch["mesh"][:1],
        identity=batch["heard_identity"][:1],
        emotion=batch["heard_emotion"][:1],
        num_inference_steps=steps,
    )
    seeds = torch.cat([pipe(**one, generator=torch.Generator().manual_seed(s)) for s in range(8)])
    again = pipe(**one, generator=torch.Generator().manual_seed(0))
    descriptors = [f[1] for f in _faces(seeds, landmarker) if f]
    pairs = [float(np.linalg.norm(a - b)) for a, b in itertools.combinations(descriptors, 2)]
    report["variable"] = {
        "same_seed_identical": bool(torch.equal(seeds[:1], again)),
        "faces_found_of_8": len(descriptors),
        "mean_pairwise_descriptor_distance": float(np.mean(pairs)) if pairs else float("nan"),
        **_with_frame1_check(pipe, one, landmarker),
    }
    return report


def _with_frame1_check(pipe: ImagineIDPipeline, one: dict, landmarker: DlibLandmarker, seeds: int = 8) -> dict:
    """Variable mode as `imagineid generate` runs it: each seed's generator redraws frame 1 while the
    frame-1 check finds no face (up to `GenerateConfig.first_frame_retries` times)."""
    accept, retries = face_found(), GenerateConfig.first_frame_retries
    shape = pipe.latent_shape(1, pipe.vae.config.sample_size)
    frames, attempts = [], []
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        for attempt in range(1, retries + 2):
            frame = pipe(**one, latents=torch.randn(shape, generator=generator))
            if accept(to_uint8(frame)[0]) or attempt == retries + 1:
                break
        frames.append(frame)
        attempts.append(attempt)
    descriptors = [f[1] for f in _faces(torch.cat(frames), landmarker) if f]
    pairs = [float(np.linalg.norm(a - b)) for a, b in itertools.combinations(descriptors, 2)]
    return {
        "with_frame1_check": {
            "faces_found_of_8": len(descriptors),
            "mean_attempts": float(np.mean(attempts)),
            "mean_pairwise_descriptor_distance": float(np.mean(pairs)) if pairs else float("nan"),
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(json.dumps(check(args.run, args.data, args.clips, args.frames, args.steps), indent=2))


if __name__ == "__main__":
    main()
