"""Pass 1, per clip: decode at 25 fps / 16 kHz, track the face, align and crop, log-mel → staging.

Runs inside Ray workers, so it takes and returns only small, picklable values (paths, ids, status).
With `subject="all"` one source stages one clip per persistent face track: the subject under the
source's clip id, written last, so its staging file means the source's clips are all staged.
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
from imagineid.face.align import (
    AlignConfig,
    alignment_transforms,
    crop_frames,
    transform_points,
)
from imagineid.face.track import FaceTrack, TrackConfig, track_faces
from imagineid.media import iter_frames, load_audio, probe, write_video
from imagineid.preprocessing.config import PreprocessConfig, track_clip_id


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
    error_type: str = ""  # the rule that rejected the clip: ambiguous_subject, face_too_small, no_face, ...
    message: str = ""
    clip_ids: tuple[str, ...] = ()  # staged: every clip of this source, the subject's (clip_id) last


def _landmarker(config: PreprocessConfig):
    if config.detector == "dlib":
        return None  # track_face builds the default dlib landmarker
    if config.detector == "fan":
        from imagineid.face.fan_backend import FanLandmarker

        return FanLandmarker()
    raise ValueError(f"detector must be 'dlib' or 'fan', got {config.detector!r}")


def record_failure(
    store: Store, job: ClipJob, stage: str, error_type: str, message: str, detail: dict | None = None
) -> None:
    row = {
        "clip_id": [job.clip_id],
        "source": [str(job.source.path)],
        "sha256": [job.sha256],
        "stage": [stage],
        "error_type": [error_type],
        "message": [message],
        "detail": [json.dumps(detail, sort_keys=True) if detail else None],
    }
    write_table_atomic(pa.table(row, schema=FAILURES_SCHEMA), store.shard("failures", job.clip_id))


@dataclass
class _Progress:
    """The stage a clip is in, for the failures/ row when something goes wrong there."""

    stage: str = "probe"


def _extract(job: ClipJob, store: Store, config: PreprocessConfig) -> tuple[str, ...]:
    """Stage every kept face track of one source; returns their clip ids, the subject's last."""
    path = job.source.path
    at = _Progress()
    try:
        info = probe(path)
        at.stage = "audio"
        samples = load_audio(path, config.sample_rate)
        check_audio(samples, config.sample_rate)
        at.stage = "track"
        tracks = track_faces(
            iter_frames(path, fps=config.fps),
            fps=config.fps,
            landmarker=_landmarker(config),
            config=TrackConfig(
                detect_every=config.detect_every, subject=config.subject, min_face_px=config.min_face_px
            ),
            audio=(samples, config.sample_rate),
        )
        clip_ids = [track_clip_id(job.clip_id, rank) for rank in range(len(tracks))]
        meta = {
            "source": asdict(job.source) | {"path": str(path)},
            "sha256": job.sha256,
            "width": info.width,
            "height": info.height,
            "seconds": len(samples) / config.sample_rate,
            "clip_ids": clip_ids[::-1],  # finalize order: the subject's clip (the source's done marker) last
        }
        for rank in reversed(range(len(tracks))):
            _stage_track(store, clip_ids[rank], tracks[rank], samples, path, config, meta, at)
    except ImagineIDError as err:
        raise _StageError(at.stage, err.kind, str(err), getattr(err, "detail", None)) from err
    except Exception as err:  # an unexpected bug in one clip must not stop the batch
        detail = traceback.format_exception_only(err)[-1].strip()
        raise _StageError(at.stage, type(err).__name__, f"{path}: unexpected error: {detail}") from err
    return tuple(meta["clip_ids"])


def _stage_track(
    store: Store,
    clip_id: str,
    track: FaceTrack,
    samples: np.ndarray,
    path: Path,
    config: PreprocessConfig,
    meta: dict,
    at: _Progress,
) -> None:
    """Crops, log-mel and the staging npz of one kept face track."""
    at.stage = "align"
    n_frames = len(track.landmarks)
    align = AlignConfig(crop_size=config.crop_size)
    transforms = alignment_transforms(track.landmarks, align)  # (T, 2, 3)
    write_video(
        store.crops(clip_id),
        crop_frames(iter_frames(path, fps=config.fps), transforms, config.crop_size),
        fps=config.fps,
        preset="veryfast",
    )
    at.stage = "audio_features"
    mel = mel_for_frames(samples, n_frames, config.fps, config.sample_rate)  # (4T, 80)
    speech = {}
    if config.speech_model:  # optional wav2vec2 / HuBERT features on the same 100 Hz grid, (4T, D)
        from imagineid.audio.speech_model import cached_encoder

        speech["speech"] = cached_encoder(config.speech_model).features_for_frames(samples, n_frames, config.fps)
    subject = {
        "track": track.track_id,
        "reason": track.subject_reason,
        "runner_up": track.runner_up,
        "source_clip_id": meta["clip_ids"][-1],
    }
    np.savez(
        _staging_npz(store, clip_id, tmp=True),
        landmarks=track.landmarks,
        raw_landmarks=track.raw_landmarks,
        boxes=track.boxes,
        found=track.found,
        transforms=transforms,
        crop_landmarks=transform_points(track.landmarks, transforms),
        log_mel=mel,
        **speech,
        pcm16=to_pcm16(samples),
        meta=np.frombuffer(json.dumps(meta | {"subject": subject}).encode(), np.uint8),
    )
    _staging_npz(store, clip_id, tmp=True).replace(_staging_npz(store, clip_id))


class _StageError(Exception):
    def __init__(self, stage: str, error_type: str, message: str, detail: dict | None = None) -> None:
        super().__init__(message)
        self.stage, self.error_type, self.message, self.detail = stage, error_type, message, detail


def _staging_npz(store: Store, clip_id: str, tmp: bool = False) -> Path:
    return store.staging / (f".tmp-{clip_id}.npz" if tmp else f"{clip_id}.npz")


def staged_npz(store: Store, clip_id: str) -> Path:
    return _staging_npz(store, clip_id)


def staged_clip_ids(store: Store, clip_id: str) -> list[str]:
    """Every staged clip of the source staged as clip_id (one per kept face track), the subject's last."""
    with np.load(staged_npz(store, clip_id)) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
    return meta.get("clip_ids") or [clip_id]


def extract_clip(job: ClipJob, root: str, config: PreprocessConfig) -> ExtractResult:
    """Stage one clip, or record why it was rejected; never raises for bad input."""
    store = Store(Path(root))
    try:
        clip_ids = _extract(job, store, config)
    except _StageError as err:
        store.crops(job.clip_id).unlink(missing_ok=True)
        record_failure(store, job, err.stage, err.error_type, err.message, err.detail)
        return ExtractResult(job.clip_id, str(job.source.path), "failed", err.error_type, err.message)
    return ExtractResult(job.clip_id, str(job.source.path), "staged", clip_ids=clip_ids)
