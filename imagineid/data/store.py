"""The preprocessed dataset on disk (docs/architecture.md §3): layout, Parquet schemas, shard commits and readers.

    DATA/clips/<clip_id>.parquet      one row per clip (written last: it marks the clip as done)
    DATA/frames/<clip_id>.parquet     one row per frame, sorted by frame_idx
    DATA/audio/<clip_id>.parquet      one row per clip: log-mel (4·T, 80), the 16 kHz waveform (PCM16)
    DATA/failures/<clip_id>.parquet   one row per rejected source
    DATA/crops/<clip_id>.mp4          aligned face crops (frame i of the mp4 = frame_idx i)
    DATA/morphable/<version>/         the fitted morphable model; CURRENT names the one in use
    DATA/manifest.json

One shard per clip keeps every write atomic and every rerun idempotent: a clip is done when its clips/
shard exists. Shards of a clip whose clips/ marker is missing (a run killed mid-clip) are removed by
`remove_orphans` before the next run, so readers never see frames of an unfinished clip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from imagineid.audio.features import N_MELS
from imagineid.data.parquet_io import to_numpy_vectors, vector_type
from imagineid.errors import ImagineIDError

TABLES = ("clips", "frames", "audio", "failures")

FAILURES_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source", pa.string()),
        ("sha256", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),  # the rule that decided: ambiguous_subject, face_too_small, no_face, ...
        ("message", pa.string()),
        ("detail", pa.string()),  # JSON: the figures behind the rule (face size, per-track evidence), or null
    ]
)


def clips_schema(n_shape: int) -> pa.Schema:
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("source", pa.string()),
            ("sha256", pa.string()),
            ("dataset", pa.string()),
            ("split", pa.string()),
            ("speaker_id", pa.string()),
            ("gender", pa.string()),
            ("age_group", pa.string()),
            ("emotion", pa.string()),
            ("emotion_intensity", pa.float32()),
            ("labels", pa.string()),  # JSON: every label the layout reader found
            ("fps", pa.float32()),
            ("n_frames", pa.int32()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("crop_size", pa.int32()),
            ("crops", pa.string()),  # relative path of the aligned-crop mp4
            ("shape", vector_type(n_shape)),
            ("morphable_version", pa.string()),
            ("config_hash", pa.string()),
            ("versions", pa.string()),  # JSON: pipeline and library versions
            ("subject_track", pa.int32()),  # which of the source's face tracks this clip follows
            ("subject_reason", pa.string()),  # why that track was kept (the rule and its figures)
            ("runner_up", pa.string()),  # JSON: the best track not kept, why not, and its evidence; or null
            ("source_clip_id", pa.string()),  # the source's subject clip (itself, except for further faces)
        ]
    )


def frames_schema(n_expression: int, n_mouth: int) -> pa.Schema:
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("frame_idx", pa.int32()),
            ("timestamp", pa.float32()),
            ("found", pa.bool_()),  # False: face lost here, landmarks interpolated
            ("bbox", vector_type(4)),  # x0, y0, x1, y1 in source pixels
            ("landmarks", vector_type(136)),  # 68 × (x, y) in source pixels, smoothed
            ("crop_landmarks", vector_type(136)),  # the same in aligned-crop pixels
            ("crop_transform", vector_type(6)),  # 2×3 similarity, source → crop
            ("expression", vector_type(n_expression)),
            ("mouth", vector_type(n_mouth)),
            ("pose", vector_type(4)),  # log-scale, rotation (rad), tx, ty: model frame → crop
            ("face_mask", pa.binary()),  # PNG, crop pixels
            ("mouth_mask", pa.binary()),
            ("blend_mask", pa.binary()),
        ]
    )


AUDIO_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("sample_rate", pa.int32()),
        ("mel_fps", pa.float32()),
        ("n_mel", pa.int32()),
        ("log_mel", pa.list_(vector_type(N_MELS))),  # (4·T, 80) at 100 Hz
        ("seconds", pa.float32()),
        # The clip's 16 kHz mono waveform as 16-bit PCM: training augments it (pitch, room, codec) and runs
        # the pretrained voice front end on it, so DATA alone is enough to train on.
        ("pcm16", pa.large_binary()),
    ]
)


@dataclass(frozen=True)
class Store:
    """Paths of one dataset folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def shard(self, table: str, clip_id: str) -> Path:
        return self.root / table / f"{clip_id}.parquet"

    def crops(self, clip_id: str) -> Path:
        return self.root / "crops" / f"{clip_id}.mp4"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def morphable(self) -> Path:
        return self.root / "morphable"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One writer at a time (preprocess runs, from the CLI or a deployment): an advisory lock on
        DATA/.preprocess.lock, dropped by the OS when the process dies. A second writer is refused at
        once with a one-line message instead of deleting the first one's temp files as orphans."""
        fd = os.open(self.root / ".preprocess.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ImagineIDError(
                f"another `imagineid preprocess` is writing to {self.root}; "
                "wait for it to finish (or use another --out)"
            ) from None
        try:
            yield
        finally:
            os.close(fd)

    def make_dirs(self) -> None:
        for name in (*TABLES, "crops", "morphable", ".staging"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def done_ids(self, table: str) -> set[str]:
        folder = self.root / table
        return {p.stem for p in folder.glob("*.parquet")} if folder.exists() else set()

    def remove_orphans(self) -> list[str]:
        """Delete shards and crops of clips with no clips/ or failures/ row (a killed run); returns their ids."""
        finished = self.done_ids("clips") | self.done_ids("failures")
        removed = set()
        for table in ("frames", "audio"):
            for path in (self.root / table).glob("*.parquet"):
                if path.stem not in finished:
                    path.unlink(missing_ok=True)
                    removed.add(path.stem)
        for path in (self.root / "crops").glob("*.mp4"):
            if path.stem not in self.done_ids("clips"):
                path.unlink(missing_ok=True)
                removed.add(path.stem)
        for folder in (self.root / t for t in (*TABLES, "crops")):
            for tmp in folder.glob(".*tmp*"):
                tmp.unlink(missing_ok=True)
        return sorted(removed)

    def remove_clip(self, clip_id: str) -> None:
        """Delete every shard and the crops of one clip (a source whose file changed since)."""
        for table in TABLES:
            self.shard(table, clip_id).unlink(missing_ok=True)
        self.crops(clip_id).unlink(missing_ok=True)
        (self.staging / f"{clip_id}.npz").unlink(missing_ok=True)

    # -- readers: project columns, stream, never load the whole dataset --------------------------------

    def dataset(self, table: str) -> ds.Dataset:
        """A pyarrow dataset over one table's shards, with the union of their schemas: shards written
        by an earlier pipeline version (fewer columns) read as nulls in the newer columns instead of
        hiding the newer shards' columns. Hidden temp files are left out."""
        shards = sorted(p for p in (self.root / table).glob("*.parquet") if not p.name.startswith((".", "_")))
        if not shards:
            return ds.dataset(self.root / table, format="parquet")
        schema = pa.unify_schemas([pq.read_schema(p) for p in shards], promote_options="permissive")
        return ds.dataset([str(p) for p in shards], format="parquet", schema=schema)

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        if not any((self.root / table).glob("*.parquet")):
            return pa.table({})
        return self.dataset(table).to_table(columns=columns)

    def clip_frames(self, clip_id: str, columns: list[str] | None = None) -> pa.Table:
        """One clip's frames, read from its own shard only."""
        return pq.read_table(self.shard("frames", clip_id), columns=columns)

    def iter_frame_batches(self, columns: list[str] | None = None, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        """Every frame row in bounded memory."""
        yield from self.dataset("frames").to_batches(columns=columns, batch_size=batch_size)

    def clip_landmarks(self, clip_id: str) -> np.ndarray:
        """(T, 68, 2) smoothed source-pixel landmarks of one clip."""
        return to_numpy_vectors(self.clip_frames(clip_id, ["landmarks"])["landmarks"]).reshape(-1, 68, 2)
