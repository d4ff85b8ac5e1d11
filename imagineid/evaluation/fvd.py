"""FVD between two sets of videos: I3D logits of 16-frame clips → Gaussian fit → Fréchet distance.

Each video is cut into consecutive, non-overlapping clips of `CLIP_FRAMES` frames (a shorter tail is
dropped); each clip is resized so its shorter side is 224 px, centre-cropped, and scaled as VideoGPT's
reference FVD code scales it (x / 255 − 0.5), so scores compare with that code's. The clip counts are
part of the result: like FID, FVD is biased upward at small N and compares only at equal counts.

    result = fvd(generated_videos, reference_videos, load_i3d(path))
    # {"fvd": ..., "fvd_clips_generated": N, "fvd_clips_reference": M, "fvd_clip_frames": 16, ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagineid.evaluation.fid import fid_from_features
from imagineid.evaluation.i3d import SIZE

CLIP_FRAMES = 16  # frames per clip, as VideoGPT / StyleGAN-V measure FVD
BATCH = 2  # clips per I3D call (16 × 224² × 3 floats each)


def video_clips(frames: Sequence[np.ndarray], length: int = CLIP_FRAMES) -> Iterator[np.ndarray]:
    """Consecutive non-overlapping clips (length, H, W, 3) of one video's frames; the tail is dropped."""
    for start in range(0, len(frames) - length + 1, length):
        yield np.stack(frames[start : start + length])


def preprocess(clip: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """(T, H, W, 3) uint8 → (3, T, size, size) float: shorter side resized to `size`, centre crop, x/255 − 0.5."""
    video = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    target = (size, int(np.ceil(w * scale))) if h < w else (int(np.ceil(h * scale)), size)
    video = F.interpolate(video, size=target, mode="bilinear", align_corners=False)
    top, left = (video.shape[-2] - size) // 2, (video.shape[-1] - size) // 2
    video = video[..., top : top + size, left : left + size]
    return video.permute(1, 0, 2, 3) - 0.5  # (3, T, size, size)


@torch.no_grad()
def clip_features(clips: Iterable[np.ndarray], model: nn.Module, batch: int = BATCH) -> np.ndarray:
    """Clips (T, H, W, 3) uint8 → (N, classes) float64 I3D logits."""
    device = next(model.parameters()).device
    out, pending = [], []

    def flush() -> None:
        out.append(model(torch.stack(pending).to(device)).double().cpu().numpy())
        pending.clear()

    for clip in clips:
        pending.append(preprocess(clip))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 0))


def video_features(videos: Iterable[Sequence[np.ndarray]], model: nn.Module) -> np.ndarray:
    """Every clip of every video (frames (H, W, 3) uint8 each) → (N, classes) features."""
    feats = [clip_features(video_clips(frames), model) for frames in videos]
    feats = [f for f in feats if len(f)]
    return np.concatenate(feats) if feats else np.zeros((0, 0))


def fvd_from_features(generated: np.ndarray, reference: np.ndarray) -> dict:
    """FVD of two (N, D) clip-feature sets, with the counts it was measured on (None below 2 clips a side)."""
    enough = len(generated) >= 2 and len(reference) >= 2
    return {
        "fvd": fid_from_features(generated, reference) if enough else None,
        "fvd_clips_generated": len(generated),
        "fvd_clips_reference": len(reference),
        "fvd_clip_frames": CLIP_FRAMES,
        "fvd_resolution": SIZE,
    }


def fvd(generated: Iterable[Sequence[np.ndarray]], reference: Iterable[Sequence[np.ndarray]], model: nn.Module) -> dict:
    """FVD of generated vs reference videos (each a sequence of RGB uint8 frames)."""
    return fvd_from_features(video_features(generated, model), video_features(reference, model))
