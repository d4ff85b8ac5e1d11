"""LSE-C / LSE-D: lip-sync confidence and distance from SyncNet, as syncnet_python computes them.

Wav2Lip's `scores_LSE` runs syncnet_python on each video; this is that computation on frames already in
memory, step for step:
- face crops: the face box (centre, half size s) median-filtered over 13 frames, the frame padded with
  grey 110, a crop from s above to 1.8 s below the centre and 1.4 s either side (crop scale 0.4),
  resized to 224 × 224, BGR;
- audio: `sync_mfcc` of the int16 samples; video frame i owns MFCC frames 4i .. 4i + 19 (0.2 s);
- one embedding per 5-frame window (i .. i + 4) and per audio window, for i < min(frames, samples / 640) − 5;
- for every shift k in ±`VSHIFT` frames: the mean over i of ‖video_i − audio_(i+k)‖ (audio beyond the
  ends is a zero vector, as in `calc_pdist`); LSE-D = the minimum of that curve, LSE-C = its median
  minus its minimum, offset = −argmin (syncnet_python's sign: positive when the audio comes first).
Face boxes come from the 68 landmarks' bounding box: syncnet_python uses S3FD boxes, which sit a little
higher and larger, so scores are close to but not exactly those of its pipeline.
"""

from __future__ import annotations

import numpy as np
import torch

from imagineid.evaluation.sync_mfcc import RATE, pcm16_scale, sync_mfcc
from imagineid.evaluation.syncnet import SyncNet

FPS = 25
VSHIFT = 15  # frames searched either side (Wav2Lip's evaluation uses syncnet_python's default)
WINDOW = 5  # video frames per SyncNet input
CROP = 224  # px
CROP_SCALE = 0.4  # syncnet_python's --crop_scale
PAD_VALUE = 110  # grey the frame is padded with before cropping
SMOOTH = 13  # median filter length over the track's box centre and size
MFCC_PER_FRAME = RATE // FPS  # 4
BATCH = 8


def face_boxes(landmarks: list[np.ndarray | None]) -> np.ndarray:
    """Per-frame (x centre, y centre, half size) from 68 landmarks, gaps interpolated, median-filtered → (T, 3)."""
    from scipy.signal import medfilt

    found = [i for i, p in enumerate(landmarks) if p is not None]
    if not found:
        raise ValueError("no frame has a face")
    raw = np.array(
        [
            [(p[:, 0].min() + p[:, 0].max()) / 2, (p[:, 1].min() + p[:, 1].max()) / 2, np.ptp(p, axis=0).max() / 2]
            for p in (landmarks[i] for i in found)
        ]
    )  # (F, 3)
    t = np.arange(len(landmarks))
    boxes = np.stack([np.interp(t, found, raw[:, c]) for c in range(3)], axis=1)  # (T, 3)
    if len(boxes) >= SMOOTH:
        boxes = np.stack([medfilt(boxes[:, c], kernel_size=SMOOTH) for c in range(3)], axis=1)
    return boxes


def syncnet_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """RGB frame (H, W, 3) + (x, y, s) → the 224 × 224 BGR face crop syncnet_python's `crop_video` writes."""
    import cv2

    x, y, s = (float(v) for v in box)
    pad = int(s * (1 + 2 * CROP_SCALE))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
    my, mx = y + pad, x + pad
    face = padded[
        int(my - s) : int(my + s * (1 + 2 * CROP_SCALE)),
        int(mx - s * (1 + CROP_SCALE)) : int(mx + s * (1 + CROP_SCALE)),
    ]
    return cv2.resize(np.ascontiguousarray(face[..., ::-1]), (CROP, CROP))  # RGB → BGR, as cv2.imread gives


def usable_windows(n_frames: int, n_samples: int, sample_rate: int = 16000) -> int:
    """How many 5-frame windows syncnet_python scores: min(frames, samples / 640) − 5 (never negative)."""
    per_frame = sample_rate // FPS
    return max(0, min(n_frames, n_samples // per_frame) - WINDOW)


@torch.no_grad()
def lip_embeddings(net: SyncNet, crops: np.ndarray, windows: int) -> torch.Tensor:
    """(T, 224, 224, 3) BGR crops → (windows, E): window i holds frames i .. i + 4."""
    video = torch.from_numpy(np.ascontiguousarray(crops)).float().permute(3, 0, 1, 2)  # (3, T, 224, 224)
    out = []
    for start in range(0, windows, BATCH):
        batch = [video[:, i : i + WINDOW] for i in range(start, min(windows, start + BATCH))]
        out.append(net.forward_lip(torch.stack(batch)))  # (b, 3, 5, 224, 224) → (b, E)
    return torch.cat(out) if out else torch.zeros((0, net.netfclip[-1].out_features))


@torch.no_grad()
def audio_embeddings(net: SyncNet, mfcc: np.ndarray, windows: int) -> torch.Tensor:
    """(T_mfcc, 13) → (windows, E): window i holds MFCC frames 4i .. 4i + 19."""
    cc = torch.from_numpy(np.ascontiguousarray(mfcc.T)).float()  # (13, T_mfcc)
    span = WINDOW * MFCC_PER_FRAME
    out = []
    for start in range(0, windows, BATCH):
        batch = [
            cc[:, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + span] for i in range(start, min(windows, start + BATCH))
        ]
        out.append(net.forward_aud(torch.stack(batch)[:, None]))  # (b, 1, 13, 20) → (b, E)
    return torch.cat(out) if out else torch.zeros((0, net.netfcaud[-1].out_features))


def offset_search(video: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> dict:
    """syncnet_python's `calc_pdist` + the offset / confidence / min distance it reports."""
    padded = torch.nn.functional.pad(audio, (0, 0, vshift, vshift))  # (N + 2 vshift, E)
    span = 2 * vshift + 1
    dists = torch.stack(
        [
            torch.nn.functional.pairwise_distance(video[[i]].repeat(span, 1), padded[i : i + span])
            for i in range(len(video))
        ],
        dim=1,
    )  # (span, N)
    curve = dists.mean(dim=1)  # (span,)
    minval, minidx = torch.min(curve, 0)
    return {
        "lse_d": float(minval),
        "lse_c": float(torch.median(curve) - minval),
        "sync_offset": int(vshift - minidx),
        "distance_curve": curve.tolist(),
    }


def lse(
    net: SyncNet, frames: list[np.ndarray], landmarks: list[np.ndarray | None], audio: np.ndarray, vshift: int = VSHIFT
) -> dict:
    """LSE-C / LSE-D of one 25 fps video: RGB frames, their 68 landmarks (None where no face), 16 kHz audio."""
    windows = usable_windows(len(frames), len(audio))
    if windows < 1 or not any(p is not None for p in landmarks):
        return {"lse_c": float("nan"), "lse_d": float("nan"), "sync_offset": None, "sync_windows": windows}
    boxes = face_boxes(landmarks)
    crops = np.stack([syncnet_crop(f, b) for f, b in zip(frames, boxes)])  # (T, 224, 224, 3)
    found = offset_search(
        lip_embeddings(net, crops, windows), audio_embeddings(net, sync_mfcc(pcm16_scale(audio)), windows), vshift
    )
    found.pop("distance_curve")
    return {**found, "sync_windows": windows}
