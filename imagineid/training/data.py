"""Streaming training data for the disentangler stages: speaker-disjoint splits, clips, random windows.

    store = "DATA"                                        # a dataset written by `imagineid preprocess`
    splits = split_clips(store)                           # {"train": [...], "val": [...]}, speaker-disjoint
    stats = mel_stats(store, splits["train"])             # per-bin log-mel mean / std, streamed
    loader = DataLoader(WindowDataset(store, splits["train"], window=32, stats=stats), batch_size=32)
    for sample in iter_clips(store, splits["val"]):       # whole clips for validation / inference
        batch = clip_tensors(sample, stats)

Every reader projects columns and reads one clip's shards at a time (docs/architecture.md §3): the clips table (one
small row per clip) is the only table read as a whole. `ray_dataset` hands a table to Ray Data for
cluster-scale passes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from imagineid.audio.features import mel_envelope
from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS
from imagineid.data.parquet_io import to_numpy_vectors
from imagineid.data.store import N_MELS, Store
from imagineid.face.landmarks68 import mouth_opening

if TYPE_CHECKING:
    from imagineid.training.voice_bank import VoiceBank

MELS_PER_FRAME = 4  # 100 Hz log-mel vs 25 fps video
VAL_SPLITS = ("test", "val", "valid", "validation")  # `split` values that mark held-out clips
CLIP_COLUMNS = ["clip_id", "speaker_id", "gender", "age_group", "emotion", "n_frames", "shape"]
FRAME_COLUMNS = ["mouth", "expression", "crop_landmarks"]

DataArg = str | Path | Store


def as_store(data: DataArg) -> Store:
    return data if isinstance(data, Store) else Store(Path(data))


@dataclass
class ClipSample:
    """One whole clip, as the disentangler sees it."""

    clip_id: str
    speaker_id: str
    gender: int  # index in GENDERS, -1 if unknown
    age: int  # index in AGE_GROUPS, -1 if unknown
    emotion: int  # index in EMOTIONS, -1 if unknown
    shape: np.ndarray  # (n_shape,) identity coefficients
    mel: np.ndarray  # (4T, 80) raw log-mel
    mouth: np.ndarray  # (T, n_mouth) mouth-only coefficients
    expression: np.ndarray  # (T, n_expr) full-expression coefficients
    opening: np.ndarray  # (T,) ground-truth mouth opening of the crop landmarks
    speaker_index: int  # index into the sorted speaker list of the clip ids being read
    voice: np.ndarray | None = None  # (VOICE_DIM,) voice front-end vector of the clip's own audio (with a bank)

    @property
    def n_frames(self) -> int:
        return len(self.mouth)


# -- splits ----------------------------------------------------------------------------------------------


def _label_index(value: str | None, vocabulary: Sequence[str]) -> int:
    return vocabulary.index(value) if value in vocabulary else -1


def _speaker_hash(speaker_id: str) -> float:
    """Stable value in [0, 1) per speaker (Python's `hash` is salted per process)."""
    return int(hashlib.sha256(speaker_id.encode()).hexdigest()[:12], 16) / 16**12


def clip_rows(data: DataArg, clip_ids: Sequence[str] | None = None, columns: Sequence[str] = CLIP_COLUMNS) -> list[dict]:
    """Rows of the clips table (small: one row per clip), optionally only `clip_ids`, in clip_id order."""
    store = as_store(data)
    if not any((store.root / "clips").glob("*.parquet")):
        return []
    dataset = store.dataset("clips")
    wanted = [c for c in dict.fromkeys(["clip_id", *columns]) if c in dataset.schema.names]
    filt = pads.field("clip_id").isin(list(clip_ids)) if clip_ids is not None else None
    rows = dataset.to_table(columns=wanted, filter=filt).to_pylist()
    for row in rows:
        row["speaker_id"] = row.get("speaker_id") or row["clip_id"]  # unknown speaker: its own identity
    return sorted(rows, key=lambda r: r["clip_id"])


def split_clips(data: DataArg, val_fraction: float = 0.25, seed: int = 0) -> dict[str, list[str]]:
    """Speaker-disjoint {'train', 'val'} clip ids, sorted.

    Clips whose `split` is test/val, and every clip of their speakers, are 'val'. Without such a column
    value, ~val_fraction of the speakers go to 'val', chosen by a stable hash of (seed, speaker_id); with
    two or more speakers each split gets at least one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rows = clip_rows(data, columns=["speaker_id", "split"])
    speakers = sorted({r["speaker_id"] for r in rows})
    marked = {r["speaker_id"] for r in rows if (r.get("split") or "").lower() in VAL_SPLITS}
    if marked:
        val = marked
        if len(val) == len(speakers):
            raise ValueError(f"every speaker ({len(speakers)}) has test/val clips: no speaker is left to train on")
    else:
        ranked = sorted(speakers, key=lambda s: _speaker_hash(f"{seed}:{s}"))
        n_val = round(val_fraction * len(speakers))
        if len(speakers) >= 2 and val_fraction > 0:
            n_val = min(max(n_val, 1), len(speakers) - 1)
        val = set(ranked[:n_val])
    return {
        "train": sorted(r["clip_id"] for r in rows if r["speaker_id"] not in val),
        "val": sorted(r["clip_id"] for r in rows if r["speaker_id"] in val),
    }


# -- clips -----------------------------------------------------------------------------------------------


def read_mel(store: Store, clip_id: str) -> np.ndarray:
    """(4T, 80) raw log-mel of one clip, from its own audio shard."""
    column = pq.read_table(store.shard("audio", clip_id), columns=["log_mel"])["log_mel"].combine_chunks()
    return to_numpy_vectors(column.flatten()) if len(column) else np.zeros((0, N_MELS), np.float32)


def _read_clip(store: Store, row: dict, speaker_index: int, bank: "VoiceBank | None" = None) -> ClipSample:
    clip_id = row["clip_id"]
    frames = store.clip_frames(clip_id, FRAME_COLUMNS)
    mouth = to_numpy_vectors(frames["mouth"])
    mel = read_mel(store, clip_id)
    if len(mel) != MELS_PER_FRAME * len(mouth):
        raise ValueError(f"clip {clip_id}: {len(mel)} mel rows for {len(mouth)} frames "
                         f"(expected {MELS_PER_FRAME * len(mouth)})")
    landmarks = to_numpy_vectors(frames["crop_landmarks"]).reshape(-1, 68, 2)
    return ClipSample(
        clip_id=clip_id,
        speaker_id=row["speaker_id"],
        gender=_label_index(row.get("gender"), GENDERS),
        age=_label_index(row.get("age_group"), AGE_GROUPS),
        emotion=_label_index(row.get("emotion"), EMOTIONS),
        shape=np.asarray(row["shape"], np.float32),
        mel=mel,
        mouth=mouth,
        expression=to_numpy_vectors(frames["expression"]),
        opening=mouth_opening(landmarks).astype(np.float32),
        speaker_index=speaker_index,
        voice=bank.get(clip_id).voice[0] if bank is not None else None,
    )


def iter_clips(data: DataArg, clip_ids: Sequence[str], bank: "VoiceBank | None" = None) -> Iterator[ClipSample]:
    """Whole clips in clip_id order, one at a time, each read from its own shards with projected columns
    (with a voice bank, each carries its own audio's voice vector)."""
    store = as_store(data)
    rows = clip_rows(store, clip_ids)
    missing = sorted(set(clip_ids) - {r["clip_id"] for r in rows})
    if missing:
        raise ValueError(f"{len(missing)} clip ids not in {store.root / 'clips'}: {missing[:5]}")
    speakers = sorted({r["speaker_id"] for r in rows})
    for row in rows:
        yield _read_clip(store, row, speakers.index(row["speaker_id"]), bank)


# -- mel normalisation -------------------------------------------------------------------------------------


def speech_mean(mel: np.ndarray, floor: float = 3.0) -> np.ndarray:
    """Per-bin mean of a log-mel (N, 80) over its speech frames: frames whose mean log energy is within
    `floor` (natural-log units, ~26 dB) of the loudest 5 %. Pauses would otherwise set the mean."""
    if len(mel) == 0:
        return np.zeros(mel.shape[1:], np.float32)
    energy = mel.mean(axis=1)  # (N,)
    speech = energy >= np.percentile(energy, 95) - floor
    return mel[speech].mean(axis=0).astype(np.float32)


@dataclass
class MelStats:
    """Per-bin log-mel normalisation of the training clips.

    mode "global": (mel - mean) / std with the training set's mean. mode "utterance": each utterance's
    own speech-frame mean is removed first (cepstral mean normalisation), so the microphone, the room and
    the loudness of a recording do not decide what the encoders hear; std is then that of the centred mel.
    """

    mean: np.ndarray  # (80,)
    std: np.ndarray  # (80,)
    mode: str = "global"

    def normalize(self, mel: np.ndarray) -> np.ndarray:
        centre = speech_mean(mel) if self.mode == "utterance" else self.mean
        return ((mel - centre) / self.std).astype(np.float32)

    def level(self, mel: np.ndarray) -> np.ndarray:
        """(80,) what utterance normalisation removed, in normalised units: the utterance's loudness and
        spectral balance against the training set's. The emotion stage adds it back (loudness is how
        anger and sadness are heard); identity and content never see it. Zeros in "global" mode."""
        if self.mode != "utterance":
            return np.zeros(len(self.mean), np.float32)
        return ((speech_mean(mel) - self.mean) / self.std).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist(), "mode": self.mode}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MelStats:
        payload = json.loads(Path(path).read_text())
        return cls(np.asarray(payload["mean"], np.float32), np.asarray(payload["std"], np.float32),
                   payload.get("mode", "global"))


def mel_stats(data: DataArg, clip_ids: Sequence[str], max_clips: int = 200, mode: str = "utterance") -> MelStats:
    """Mean / std per mel bin over up to `max_clips` evenly spaced clips, one audio shard at a time
    (in "utterance" mode the std is of each clip's mel less its own speech mean)."""
    if mode not in ("global", "utterance"):
        raise ValueError(f"mode must be 'global' or 'utterance', got {mode!r}")
    store = as_store(data)
    ids = sorted(clip_ids)
    if not ids:
        raise ValueError("mel_stats needs at least one clip id")
    if len(ids) > max_clips:
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, max_clips).round().astype(int)]
    total, total_sq, centred_sq, count = np.zeros(N_MELS), np.zeros(N_MELS), np.zeros(N_MELS), 0
    for clip_id in ids:
        mel = read_mel(store, clip_id).astype(np.float64)
        total += mel.sum(axis=0)
        total_sq += (mel**2).sum(axis=0)
        centred_sq += ((mel - speech_mean(mel)) ** 2).sum(axis=0)
        count += len(mel)
    if count == 0:
        raise ValueError(f"no mel frames in {len(ids)} clips")
    mean = total / count
    var = total_sq / count - mean**2 if mode == "global" else centred_sq / count
    std = np.sqrt(np.maximum(var, 1e-8))
    return MelStats(mean.astype(np.float32), std.astype(np.float32), mode)


# -- windows -----------------------------------------------------------------------------------------------


def _arrays(sample: ClipSample, stats: MelStats, bank: "VoiceBank | None" = None) -> dict[str, np.ndarray | int]:
    """What a window is cut from: normalised mel plus the per-frame and per-clip fields. With a voice
    bank, `mels` (V, 4T, 80) and `voices` (V, VOICE_DIM) hold every variant and `mel` / `voice` variant 0."""
    extra: dict = {}
    if bank is not None:
        entry = bank.get(sample.clip_id)
        mels = np.stack([stats.normalize(m) for m in entry.mel])  # (V, 4T, 80)
        levels = np.stack([stats.level(m) for m in entry.mel])  # (V, 80)
        envelopes = np.stack([mel_envelope(m) for m in entry.mel])  # (V, 4T, 2)
        extra = {"mels": mels, "voices": entry.voice, "voice": entry.voice[0], "levels": levels, "level": levels[0],
                 "envelopes": envelopes}
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
        "envelope": pad(clip["envelope"], MELS_PER_FRAME * window, MELS_PER_FRAME * start, MELS_PER_FRAME * stop),  # (4W, 2)
        "mouth": pad(clip["mouth"], window, start, stop),  # (W, n_mouth)
        "expression": pad(clip["expression"], window, start, stop),  # (W, n_expr)
        "opening": pad(clip["opening"], window, start, stop),  # (W,)
        "valid": torch.from_numpy(valid),  # (W,)
        "shape": torch.from_numpy(np.asarray(clip["shape"], np.float32)),  # (n_shape,)
        **{key: torch.tensor(clip[key], dtype=torch.long) for key in ("gender", "age", "emotion", "speaker")},
        **({"voice": torch.from_numpy(np.asarray(clip["voice"], np.float32))} if "voice" in clip else {}),  # (VOICE_DIM,)
        **({"level": torch.from_numpy(np.asarray(clip["level"], np.float32))} if "level" in clip else {}),  # (80,)
    }


class WindowDataset(IterableDataset):
    """Random `window`-frame windows across clips: uniform over clips, then a uniform start.

    Each DataLoader worker takes every n-th clip. With `cache_clips` a worker keeps the clips it read in
    memory (small datasets); otherwise it streams its clips from disk through a shuffle buffer of
    `buffer_clips` clips, each giving about ceil(T / window) windows before it is replaced.
    """

    def __init__(self, data: DataArg, clip_ids: Sequence[str], window: int = 32, stats: MelStats | None = None,
                 seed: int = 0, windows_per_epoch: int | None = None, cache_clips: bool = True,
                 buffer_clips: int = 64, bank: "VoiceBank | None" = None) -> None:
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
        self.windows_per_epoch = windows_per_epoch or sum(max(1, math.ceil(r["n_frames"] / window))
                                                          for r in self.rows)
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
            clip = _arrays(_read_clip(self.store, row, self.speakers.index(row["speaker_id"])), self.stats, self.bank)
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
        rows = self.rows[worker::n_workers] or self.rows[worker % len(self.rows)::len(self.rows)]
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
