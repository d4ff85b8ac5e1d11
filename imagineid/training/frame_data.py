"""Training samples for the frame generator (issue 5): target frame + the conditions that drive it.

Per sample, from one clip of the preprocessed dataset (teacher forcing: conditions come from the data):
- `image` (3, H, W): the aligned crop of frame t, in [-1, 1];
- `mesh` (3, H, W): the morphable-model mesh of frame t (shape + full expression + pose), rendered;
- `reference` (3, H, W): a random other frame of the same clip (appearance and background);
- `neighbour` (3, H, W): frame t-1 with its mouth region greyed out (motion cue without the mouth);
- `blend_mask` (1, H, W) in [0, 1]: the dilated face mask of frame t; `mouth_mask` (1, H, W);
- `shape` (n_shape,), `emotion` (long, -1 unknown), `expression` (n_expression,): identity / emotion features;
- with `heard`: `heard_identity` (n_shape + 5,) and `heard_emotion` (4,), what the disentangler heard in
  the clip's own audio (the generator's inputs at inference);
- with `latents`: `posterior` (2, 4, s, s) fp16, the frozen VAE's mean and std of the crop (`latent_cache`).

`FrameConditionDataset` decodes every clip once at `image_size` and keeps it in memory (64 px: ~4 MB per
3 s clip); `FrameStream` streams segments through a bounded buffer for datasets that do not fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from imagineid.data.labels import EMOTIONS
from imagineid.data.parquet_io import to_numpy_vectors
from imagineid.data.store import Store
from imagineid.face.masks import decode_mask_png
from imagineid.face.mesh_render import render_mesh
from imagineid.face.morphable import PCAMorphableModel
from imagineid.media import iter_frames

if TYPE_CHECKING:
    from imagineid.training.latent_cache import LatentCache

NEUTRAL_GREY = 0.0  # mouth-masked pixels in [-1, 1] units


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0


def _mask(png: bytes, size: int) -> np.ndarray:
    mask = decode_mask_png(png)
    mask = mask.astype(np.float32) if mask.dtype == np.bool_ else mask.astype(np.float32) / 255.0
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)


class ClipFrames:
    """One clip's crops, masks and mesh renders at `size` px (decoded once): the whole clip, or the
    segment of `count` frames from `start` (a long clip is never decoded whole)."""

    def __init__(
        self,
        store: Store,
        clip: dict,
        model: PCAMorphableModel,
        size: int,
        start: int = 0,
        count: int | None = None,
        latents: LatentCache | None = None,
    ) -> None:
        frames = store.clip_frames(clip["clip_id"], ["expression", "pose", "blend_mask", "mouth_mask"])
        frames = frames.slice(start, count)
        crops = iter_frames(store.root / clip["crops"], size=size, start=start, count=count)
        self.images = np.stack(list(crops))  # (T, S, S, 3)
        t = min(len(self.images), frames.num_rows)
        self.images = self.images[:t]
        self.expression = to_numpy_vectors(frames["expression"])[:t]  # (T, n_expression)
        pose = to_numpy_vectors(frames["pose"])[:t].copy()  # (T, 4): model frame → crop pixels
        pose[:, 0] += np.log(size / clip["crop_size"])  # crop pixels → `size` pixels
        pose[:, 2:] *= size / clip["crop_size"]
        self.shape = np.asarray(clip["shape"], np.float32)
        self.points = model.reconstruct(self.shape, expression=self.expression, pose=pose)  # (T, 68, 2)
        self.meshes = render_mesh(self.points, size)  # (T, S, S, 3) uint8
        self.blend = np.stack([_mask(b, size) for b in frames["blend_mask"].to_pylist()[:t]])  # (T, S, S)
        self.mouth = np.stack([_mask(m, size) for m in frames["mouth_mask"].to_pylist()[:t]])
        self.emotion = EMOTIONS.index(clip["emotion"]) if clip.get("emotion") in EMOTIONS else -1
        # (T, 2, 4, s, s) fp16: the frozen VAE's posterior of each crop, when the run caches it
        self.posterior = latents.read(clip["clip_id"], start, t) if latents is not None else None

    def __len__(self) -> int:
        return len(self.images)


class FrameConditionDataset(Dataset):
    """Map-style dataset over (clip, frame ≥ 1) pairs; the reference frame is drawn per access."""

    def __init__(
        self,
        data: str | Path,
        clip_ids: list[str],
        model: PCAMorphableModel,
        image_size: int = 64,
        seed: int = 0,
        heard: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        latents: LatentCache | None = None,
    ) -> None:
        store = Store(Path(data))
        self.clips = [ClipFrames(store, row, model, image_size, latents=latents) for row in clip_rows(store, clip_ids)]
        self.index = [(c, t) for c, clip in enumerate(self.clips) for t in range(1, len(clip))]
        self.rng = np.random.default_rng(seed)
        self.heard = [heard[c] for c in clip_ids] if heard is not None else None  # (identity, emotion) per clip

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, t = self.index[i]
        return frame_sample(self.clips[c], t, self.rng, self.heard[c] if self.heard is not None else None)


def frame_sample(
    clip: ClipFrames, t: int, rng: np.random.Generator, heard: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, torch.Tensor]:
    """Frame t (≥ 1) of a decoded clip with its conditions; the reference is any other frame, drawn here."""
    r = int(rng.integers(len(clip) - 1))
    r = r + 1 if r >= t else r  # any frame but t
    neighbour = _to_tensor(clip.images[t - 1])
    mouth_prev = torch.from_numpy(clip.mouth[t - 1])[None] > 0.5  # (1, S, S)
    return {
        "image": _to_tensor(clip.images[t]),
        "mesh": _to_tensor(clip.meshes[t]),
        "reference": _to_tensor(clip.images[r]),
        "neighbour": neighbour.masked_fill(mouth_prev, NEUTRAL_GREY),
        "blend_mask": torch.from_numpy(clip.blend[t])[None],
        "mouth_mask": torch.from_numpy(clip.mouth[t])[None],
        "shape": torch.from_numpy(clip.shape),
        "expression": torch.from_numpy(clip.expression[t].copy()),
        "emotion": torch.tensor(clip.emotion, dtype=torch.long),
        **(
            {"heard_identity": torch.from_numpy(heard[0]), "heard_emotion": torch.from_numpy(heard[1])}
            if heard is not None
            else {}
        ),
        **({"posterior": torch.from_numpy(clip.posterior[t].copy())} if clip.posterior is not None else {}),
    }


def clip_rows(store: Store, clip_ids: list[str]) -> list[dict]:
    """The clips/ rows the frame datasets read, in the order of `clip_ids` (one table read)."""
    columns = ["clip_id", "crops", "crop_size", "shape", "emotion", "n_frames"]
    rows = {r["clip_id"]: r for r in store.read_table("clips", columns).to_pylist()}
    return [rows[c] for c in clip_ids]


def decoded_bytes(n_frames: int, size: int) -> int:
    """Memory of `n_frames` decoded at `size` px: crop and mesh (uint8 RGB), two float masks."""
    return n_frames * size * size * (3 + 3 + 4 + 4)


STREAM_BUFFER = 8  # segments a FrameStream holds
LONGEST_SEGMENT = 64  # frames per segment where the budget allows


def stream_segment(size: int, budget_mb: float, buffer: int = STREAM_BUFFER) -> int:
    """Frames per streamed segment so that `buffer` segments decoded at `size` px fit in `budget_mb`:
    64 at the tiny profile's 64 px, a few at 512 px (at least 2: a target and its reference)."""
    fitting = int(budget_mb * 2**20 // (buffer * decoded_bytes(1, size)))
    return max(2, min(LONGEST_SEGMENT, fitting))


class FrameStream(IterableDataset):
    """Training frames streamed from a bounded buffer of clip segments, for datasets too large to decode
    into memory (`FrameConditionDataset` holds every clip).

    The clips are visited in a shuffled order; each visit decodes one random segment of `segment`
    frames (seeking, so a long clip costs no more than a short one) into a buffer of `buffer` segments,
    and each segment gives about as many samples as it has frames before a new one replaces it. Memory
    is `buffer` × `decoded_bytes(segment, size)`, whatever the dataset's size. The reference frame comes
    from the same segment. DataLoader workers each take every n-th clip.
    """

    def __init__(
        self,
        data: str | Path,
        clip_ids: list[str],
        model: PCAMorphableModel,
        image_size: int = 64,
        seed: int = 0,
        heard: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        buffer: int = STREAM_BUFFER,
        segment: int = LONGEST_SEGMENT,
        latents: LatentCache | None = None,
    ) -> None:
        self.store = Store(Path(data))
        self.rows = [r for r in clip_rows(self.store, clip_ids) if r["n_frames"] >= 2]
        if not self.rows:
            raise ValueError(f"no clip of at least 2 frames among {len(clip_ids)} ids")
        self.model, self.size, self.seed = model, image_size, seed
        self.heard, self.buffer, self.segment = heard, max(1, buffer), max(2, segment)
        self.latents = latents
        self.epoch = 0

    def __len__(self) -> int:
        return sum(r["n_frames"] - 1 for r in self.rows)

    def _decode(self, row: dict, rng: np.random.Generator) -> list:
        count = min(self.segment, row["n_frames"])
        start = int(rng.integers(0, row["n_frames"] - count + 1))
        clip = ClipFrames(self.store, row, self.model, self.size, start=start, count=count, latents=self.latents)
        heard = self.heard[row["clip_id"]] if self.heard is not None else None
        return [clip, heard, max(1, len(clip) - 1)]  # [frames, heard features, samples left]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        rows = self.rows[worker::n_workers] or self.rows[worker % len(self.rows) :: len(self.rows)]
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        self.epoch += 1

        def visits() -> Iterator[dict]:
            while True:
                for i in rng.permutation(len(rows)):
                    yield rows[i]

        order = visits()
        slots = [self._decode(next(order), rng) for _ in range(min(self.buffer, len(rows)))]
        for _ in range(len(self) // n_workers):
            k = int(rng.integers(len(slots)))
            clip, heard, _ = slots[k]
            if len(clip) < 2:
                slots[k] = self._decode(next(order), rng)
                continue
            yield frame_sample(clip, int(rng.integers(1, len(clip))), rng, heard)
            slots[k][2] -= 1
            if slots[k][2] == 0:
                slots[k] = self._decode(next(order), rng)
