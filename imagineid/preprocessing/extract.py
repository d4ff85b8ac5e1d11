"""Pass 1, per clip: decode at 25 fps / 16 kHz, track the face, align and crop, log-mel → staging.

Runs inside Ray workers, so it takes and returns only small, picklable values (paths, ids, status).
"""

from __future__ import annotations

import json
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from imagineid.audio.features import check_audio, mel_for_frames, to_pcm16
from imagineid.data.layouts import SourceClip
from imagineid.data.parquet_io import write_table_atomic
from imagineid.data.store import FAILURES_SCHEMA, Store
from imagineid.errors import ImagineIDError
from imagineid.face.align import AlignConfig, alignment_transforms, crop_frames, transform_points
from imagineid.face.track import TrackConfig, track_face
from imagineid.media import iter_frames, load_audio, probe, write_video
from imagineid.preprocessing.config import PreprocessConfig


@dataclass(frozen=True)
class ClipJob:
    """One source to process, with its content identity."""

    source: SourceClip
    sha256: str
    clip_id: str


@dataclass(frozen=True)
class ExtractResult:
    clip_id: str
    source: str
    status: str  # staged | failed (recorded in failures/) | lost (worker died; the next run retries it)
    error_type: str = ""
    message: str = ""


def _landmarker(config: PreprocessConfig):
    if config.detector == "dlib":
        return None  # track_face builds the default dlib landmarker
    if config.detector == "fan":
        from imagineid.face.fan_backend import FanLandmarker

        return FanLandmarker()
    raise ValueError(f"detector must be 'dlib' or 'fan', got {config.detector!r}")


def record_failure(store: Store, job: ClipJob, stage: str, error_type: str, message: str) -> None:
    row = {
        "clip_id": [job.clip_id], "source": [str(job.source.path)], "sha256": [job.sha256],
        "stage": [stage], "error_type": [error_type], "message": [message],
    }
    write_table_atomic(pa.table(row, schema=FAILURES_SCHEMA), store.shard("failures", job.clip_id))


def _extract(job: ClipJob, store: Store, config: PreprocessConfig) -> None:
    path = job.source.path
    stage = "probe"
    try:
        info = probe(path)
        stage = "audio"
        samples = load_audio(path, config.sample_rate)
        check_audio(samples, config.sample_rate)
        stage = "track"
        track = track_face(
            iter_frames(path, fps=config.fps), fps=config.fps,
            config=TrackConfig(detect_every=config.detect_every), landmarker=_landmarker(config),
        )
        n_frames = len(track.landmarks)
        stage = "align"
        align = AlignConfig(crop_size=config.crop_size)
        transforms = alignment_transforms(track.landmarks, align)  # (T, 2, 3)
        write_video(
            store.crops(job.clip_id),
            crop_frames(iter_frames(path, fps=config.fps), transforms, config.crop_size),
            fps=config.fps, preset="veryfast",
        )
        stage = "audio_features"
        mel = mel_for_frames(samples, n_frames, config.fps, config.sample_rate)  # (4T, 80)
        speech = {}
        if config.speech_model:  # optional wav2vec2 / HuBERT features on the same 100 Hz grid, (4T, D)
            from imagineid.audio.speech_model import cached_encoder

            speech["speech"] = cached_encoder(config.speech_model).features_for_frames(samples, n_frames, config.fps)
    except ImagineIDError as err:
        raise _StageError(stage, err.kind, str(err)) from err
    except Exception as err:  # an unexpected bug in one clip must not stop the batch
        detail = traceback.format_exception_only(err)[-1].strip()
        raise _StageError(stage, type(err).__name__, f"{path}: unexpected error: {detail}") from err
    meta = {
        "source": asdict(job.source) | {"path": str(path)},
        "sha256": job.sha256,
        "width": info.width, "height": info.height,
        "seconds": len(samples) / config.sample_rate,
    }
    np.savez(
        _staging_npz(store, job.clip_id, tmp=True),
        landmarks=track.landmarks, raw_landmarks=track.raw_landmarks, boxes=track.boxes, found=track.found,
        transforms=transforms, crop_landmarks=transform_points(track.landmarks, transforms), log_mel=mel, **speech,
        pcm16=to_pcm16(samples),
        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
    )
    _staging_npz(store, job.clip_id, tmp=True).replace(_staging_npz(store, job.clip_id))


class _StageError(Exception):
    def __init__(self, stage: str, error_type: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.error_type, self.message = stage, error_type, message


def _staging_npz(store: Store, clip_id: str, tmp: bool = False) -> Path:
    return store.staging / (f".tmp-{clip_id}.npz" if tmp else f"{clip_id}.npz")


def staged_npz(store: Store, clip_id: str) -> Path:
    return _staging_npz(store, clip_id)


def extract_clip(job: ClipJob, root: str, config: PreprocessConfig) -> ExtractResult:
    """Stage one clip, or record why it was rejected; never raises for bad input."""
    store = Store(Path(root))
    try:
        _extract(job, store, config)
    except _StageError as err:
        store.crops(job.clip_id).unlink(missing_ok=True)
        record_failure(store, job, err.stage, err.error_type, err.message)
        return ExtractResult(job.clip_id, str(job.source.path), "failed", err.error_type, err.message)
    return ExtractResult(job.clip_id, str(job.source.path), "staged")
