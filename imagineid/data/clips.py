"""Reading the clips of a dataset (DATA/) as whole samples: the clips table, speaker-disjoint splits,
one clip's mel, coefficients and waveform, and the log-mel normalisation of a set of clips.

    splits = split_clips("DATA")                          # {"train": [...], "val": [...]}, speaker-disjoint
    stats = mel_stats("DATA", splits["train"])            # per-bin log-mel mean / std, streamed
    for sample in iter_clips("DATA", splits["val"]):      # whole clips, one at a time
        ...

Every reader projects columns and reads one clip's shards at a time: the clips table (one small row per
clip) is the only table read as a whole. Training cuts windows from these samples; listening and
generation read clips the same way, without depending on training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from imagineid.audio.features import MELS_PER_FRAME, N_MELS, from_pcm16
from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS
from imagineid.data.parquet_io import to_numpy_vectors
from imagineid.data.store import Store
from imagineid.errors import ImagineIDError
from imagineid.face.landmarks68 import mouth_opening


class VoiceSource(Protocol):
    """Anything that gives a clip's voice vectors (a run's voice bank): `get(clip_id).voice` (V, VOICE_DIM)."""

    def get(self, clip_id: str): ...


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


def clip_rows(
    data: DataArg, clip_ids: Sequence[str] | None = None, columns: Sequence[str] = CLIP_COLUMNS
) -> list[dict]:
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


def read_clip(store: Store, row: dict, speaker_index: int, bank: VoiceSource | None = None) -> ClipSample:
    clip_id = row["clip_id"]
    frames = store.clip_frames(clip_id, FRAME_COLUMNS)
    mouth = to_numpy_vectors(frames["mouth"])
    mel = read_mel(store, clip_id)
    if len(mel) != MELS_PER_FRAME * len(mouth):
        raise ValueError(
            f"clip {clip_id}: {len(mel)} mel rows for {len(mouth)} frames (expected {MELS_PER_FRAME * len(mouth)})"
        )
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


def iter_clips(data: DataArg, clip_ids: Sequence[str], bank: VoiceSource | None = None) -> Iterator[ClipSample]:
    """Whole clips in clip_id order, one at a time, each read from its own shards with projected columns
    (with a voice bank, each carries its own audio's voice vector)."""
    store = as_store(data)
    rows = clip_rows(store, clip_ids)
    missing = sorted(set(clip_ids) - {r["clip_id"] for r in rows})
    if missing:
        raise ValueError(f"{len(missing)} clip ids not in {store.root / 'clips'}: {missing[:5]}")
    speakers = sorted({r["speaker_id"] for r in rows})
    for row in rows:
        yield read_clip(store, row, speakers.index(row["speaker_id"]), bank)


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
        return cls(
            np.asarray(payload["mean"], np.float32),
            np.asarray(payload["std"], np.float32),
            payload.get("mode", "global"),
        )


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


def clip_audio(store: Store, clip_id: str) -> tuple[np.ndarray, int]:
    """(16 kHz float32 samples, n_frames) of one clip from DATA/audio; a clear error for older datasets."""
    path = store.shard("audio", clip_id)
    names = pq.read_schema(path).names
    if "pcm16" not in names:
        raise ImagineIDError(
            f"{store.root} was preprocessed before DATA/audio kept the waveform (no pcm16 column): "
            f"re-run `imagineid preprocess ... --out {store.root}` into a new folder"
        )
    table = pq.read_table(path, columns=["pcm16", "n_mel"])
    pcm = table["pcm16"][0].as_py()
    if pcm is None:
        raise ImagineIDError(f"clip {clip_id} has no waveform in {path}")
    return from_pcm16(pcm), int(table["n_mel"][0].as_py()) // MELS_PER_FRAME
