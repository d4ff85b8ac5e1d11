"""Streaming training data for the disentangler stages: random windows cut from the clips that
`imagineid.data.clips` reads (splits, whole clips, mel statistics).

    loader = DataLoader(WindowDataset(store, splits["train"], window=32, stats=stats), batch_size=32)
    for sample in iter_clips(store, splits["val"]):       # whole clips for validation
        batch = clip_tensors(sample, stats)

`ray_dataset` hands a table to Ray Data for cluster-scale passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from imagineid.audio.features import MELS_PER_FRAME, mel_envelope
from imagineid.data.clips import (
    ClipSample,
    DataArg,
    MelStats,
    as_store,
    clip_rows,
    read_clip,
)

if TYPE_CHECKING:
    from imagineid.training.voice_bank import VoiceBank

# -- windows -----------------------------------------------------------------------------------------------


def _arrays(sample: ClipSample, stats: MelStats, bank: VoiceBank | None = None) -> dict[str, np.ndarray | int]:
    """What a window is cut from: normalised mel plus the per-frame and per-clip fields. With a voice
    bank, `mels` (V, 4T, 80) and `voices` (V, VOICE_DIM) hold every variant and `mel` / `voice` variant 0."""
    extra: dict = {}
    if bank is not None:
        entry = bank.get(sample.clip_id)
        mels = np.stack([stats.normalize(m) for m in entry.mel])  # (V, 4T, 80)
        levels = np.stack([stats.level(m) for m in entry.mel])  # (V, 80)
        envelopes = np.stack([mel_envelope(m) for m in entry.mel])  # (V, 4T, 2)
        extra = {
            "mels": mels,
            "voices": entry.voice,
            "voice": entry.voice[0],
            "levels": levels,
            "level": levels[0],
            "envelopes": envelopes,
        }
    return {
        "level": stats.level(sample.mel),
        **extra,
        "mel": extra["mels"][0] if extra else stats.normalize(sample.mel),
        "envelope": extra["envelopes"][0] if extra else mel_envelope(sample.mel),
        "mouth": sample.mouth,
        "expression": sample.expression,
        "opening": sample.opening,
        "shape": sample.shape,
        "gender": sample.gender,
        "age": sample.age,
        "emotion": sample.emotion,
        "speaker": sample.speaker_index,
    }


def _cut(clip: dict, start: int, window: int) -> dict[str, torch.Tensor]:
    """Frames [start, start + window) of a clip, zero-padded past its end (`valid` marks real frames)."""
    n = len(clip["mouth"])
    stop = min(start + window, n)
    valid = np.zeros(window, bool)
    valid[: stop - start] = True

    def pad(array: np.ndarray, rows: int, lo: int, hi: int) -> torch.Tensor:
        out = np.zeros((rows, *array.shape[1:]), np.float32)
        out[: hi - lo] = array[lo:hi]
        return torch.from_numpy(out)

    return {
        "mel": pad(clip["mel"], MELS_PER_FRAME * window, MELS_PER_FRAME * start, MELS_PER_FRAME * stop),  # (4W, 80)
        "envelope": pad(
            clip["envelope"], MELS_PER_FRAME * window, MELS_PER_FRAME * start, MELS_PER_FRAME * stop
        ),  # (4W, 2)
        "mouth": pad(clip["mouth"], window, start, stop),  # (W, n_mouth)
        "expression": pad(clip["expression"], window, start, stop),  # (W, n_expr)
        "opening": pad(clip["opening"], window, start, stop),  # (W,)
        "valid": torch.from_numpy(valid),  # (W,)
        "shape": torch.from_numpy(np.asarray(clip["shape"], np.float32)),  # (n_shape,)
        **{key: torch.tensor(clip[key], dtype=torch.long) for key in ("gender", "age", "emotion", "speaker")},
        **(
            {"voice": torch.from_numpy(np.asarray(clip["voice"], np.float32))} if "voice" in clip else {}
        ),  # (VOICE_DIM,)
        **({"level": torch.from_numpy(np.asarray(clip["level"], np.float32))} if "level" in clip else {}),  # (80,)
    }


class WindowDataset(IterableDataset):
    """Random `window`-frame windows across clips: uniform over clips, then a uniform start.

    Each DataLoader worker takes every n-th clip. With `cache_clips` a worker keeps the clips it read in
    memory (small datasets); otherwise it streams its clips from disk through a shuffle buffer of
    `buffer_clips` clips, each giving about ceil(T / window) windows before it is replaced.
    """

    def __init__(
        self,
        data: DataArg,
        clip_ids: Sequence[str],
        window: int = 32,
        stats: MelStats | None = None,
        seed: int = 0,
        windows_per_epoch: int | None = None,
        cache_clips: bool = True,
        buffer_clips: int = 64,
        bank: VoiceBank | None = None,
    ) -> None:
        if stats is None:
            raise ValueError("WindowDataset needs `stats` (see mel_stats) to normalise the log-mel")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.store = as_store(data)
        self.rows = clip_rows(self.store, clip_ids)
        if not self.rows:
            raise ValueError(f"no clips to sample from ({len(clip_ids)} ids given)")
        self.speakers = sorted({r["speaker_id"] for r in self.rows})
        self.window, self.stats, self.seed = window, stats, seed
        self.cache_clips, self.buffer_clips = cache_clips, max(1, buffer_clips)
        self.windows_per_epoch = windows_per_epoch or sum(max(1, math.ceil(r["n_frames"] / window)) for r in self.rows)
        self.epoch = 0
        self.bank = bank
        self._cache: dict[str, dict] = {}

    def __len__(self) -> int:
        return self.windows_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch's random stream (needed with workers, which each hold a copy of the dataset)."""
        self.epoch = epoch

    def _load(self, row: dict) -> dict:
        clip = self._cache.get(row["clip_id"])
        if clip is None:
            clip = _arrays(read_clip(self.store, row, self.speakers.index(row["speaker_id"])), self.stats, self.bank)
            if self.cache_clips:
                self._cache[row["clip_id"]] = clip
        return clip

    def _window(self, clip: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        start = int(rng.integers(0, max(1, len(clip["mouth"]) - self.window + 1)))
        if "mels" in clip:  # one augmented variant of the clip's audio per window
            v = int(rng.integers(len(clip["mels"])))
            # the level stays the recording's own: a gain drawn by augmentation is not the speaker's loudness
            clip = {**clip, "mel": clip["mels"][v], "voice": clip["voices"][v], "envelope": clip["envelopes"][v]}
        return _cut(clip, start, self.window)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # 1. This worker's clips and share of the epoch's windows
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        rows = self.rows[worker::n_workers] or self.rows[worker % len(self.rows) :: len(self.rows)]
        n_windows = self.windows_per_epoch // n_workers + (worker < self.windows_per_epoch % n_workers)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        self.epoch += 1  # single-process loaders get a fresh stream per epoch without set_epoch

        # 2. Cached: uniform over clips, then a uniform start
        if self.cache_clips:
            for _ in range(n_windows):
                yield self._window(self._load(rows[int(rng.integers(len(rows)))]), rng)
            return

        # 3. Streamed: a shuffle buffer of clips, each replaced after ~ceil(T / window) windows
        def stream() -> Iterator[dict]:
            while True:
                for i in rng.permutation(len(rows)):
                    yield rows[i]

        source = stream()
        buffer: list[list] = []  # [clip arrays, windows left]
        for _ in range(min(self.buffer_clips, len(rows))):
            clip = self._load(next(source))
            buffer.append([clip, max(1, math.ceil(len(clip["mouth"]) / self.window))])
        for _ in range(n_windows):
            slot = int(rng.integers(len(buffer)))
            yield self._window(buffer[slot][0], rng)
            buffer[slot][1] -= 1
            if buffer[slot][1] == 0:
                clip = self._load(next(source))
                buffer[slot] = [clip, max(1, math.ceil(len(clip["mouth"]) / self.window))]


def clip_tensors(sample: ClipSample, stats: MelStats) -> dict[str, torch.Tensor]:
    """A whole clip as a batch of one: mel (1, 4T, 80) normalised, mouth (1, T, n_mouth), ... valid all True."""
    arrays = _arrays(sample, stats)
    if sample.voice is not None:
        arrays["voice"] = sample.voice
    batch = _cut(arrays, 0, sample.n_frames)
    return {key: value.unsqueeze(0) for key, value in batch.items()}


def ray_dataset(data: DataArg, table: str = "frames", columns: Sequence[str] | None = None):
    """One table as a `ray.data.Dataset` (committed shards only), for cluster-scale passes over the data."""
    import ray.data  # lazy: Ray is only needed for cluster-scale work

    store = as_store(data)
    paths = sorted(str(p) for p in (store.root / table).glob("*.parquet") if not p.name.startswith("."))
    if not paths:
        raise ValueError(f"no shards in {store.root / table}")
    return ray.data.read_parquet(paths, columns=list(columns) if columns is not None else None)
