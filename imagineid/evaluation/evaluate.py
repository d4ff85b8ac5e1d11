"""The evaluate job: GEN (videos + index) → GEN/metrics.json + an HTML report (issue 7).

    metrics = evaluate(GEN, DATA, report=GEN / "report.html")

Per video: `video_metrics`; per audio: diversity = mean pairwise descriptor distance of frame 1 across
seeds; where synthetic ground truth exists next to the audio (`<corpus>/metadata.parquet` of
`imagineid synth`): landmark distance to the true face after a per-frame similarity alignment (shape
and mouth, not pose), and whether the predicted gender / emotion match. The field's metrics (LSE-C /
LSE-D, CSIM, M-LMD / F-LMD, FID; `field_metrics`) are computed where their weight files are given
(`FieldWeights`), against the driving clip's own frames when it is a video; the rest are listed under
`skipped` with the reason and the file that enables them. Aggregates are NaN-aware means over videos.
The numbers are deterministic.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from imagineid.data.parquet_io import write_json_atomic
from imagineid.errors import ImagineIDError
from imagineid.evaluation.field_metrics import SKIP_REASONS, FieldMetrics, FieldWeights
from imagineid.evaluation.foreign import folder_rows
from imagineid.evaluation.video_metrics import (
    VideoFaces,
    detect_video,
    read_audio,
    video_metrics,
)
from imagineid.evaluation.voice_face import imagined_shape, true_shape, voice_face_match
from imagineid.face import landmarks68 as lm
from imagineid.face.dlib_backend import DlibLandmarker
from imagineid.media import probe

SKIPPED = SKIP_REASONS  # with no weight files given
AGGREGATED = (
    "face_detection_rate",
    "identity_distance_to_frame1",
    "lipsync_audio_r",
    "lipsync_audio_best_r",
    "lipsync_mesh_r",
    "lipsync_mesh_best_r",
    "background_psnr_db",
    "landmark_jitter",
    "truth_landmark_distance",
    "gender_agrees",
    "emotion_agrees",
)


def _similarity_residual(a: np.ndarray, b: np.ndarray) -> float:
    """Mean point distance after aligning b onto a by a similarity transform, / a's face width."""
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    za, zb = za - za.mean(), zb - zb.mean()
    scale = (np.conj(zb) @ za) / (np.conj(zb) @ zb)
    return float(np.abs(za - scale * zb).mean() / lm.face_width(a))


@functools.lru_cache(maxsize=8)
def _synth_metadata(meta: Path) -> dict[str, dict]:
    """A synthetic corpus' ground truth by video name, read once per evaluation (not once per video)."""
    names = set(pq.read_schema(meta).names)
    columns = [c for c in ("video", "gender", "emotion", "landmarks", "speaker_id") if c in names]
    rows = pq.read_table(meta, columns=columns).to_pylist()
    return {r["video"]: r for r in rows}


def ground_truth(audio: str) -> dict | None:
    """The synth metadata row of an audio file inside a synthetic corpus (…/videos/<clip>.mp4), if any."""
    path = Path(audio)
    meta = path.parent.parent / "metadata.parquet"
    if not meta.exists():
        return None
    return _synth_metadata(meta).get(f"{path.parent.name}/{path.name}")


def _points(truth: dict) -> np.ndarray:
    return np.stack([np.asarray(p, np.float64).reshape(68, 2) for p in truth["landmarks"]])  # (T, 68, 2)


def _dataset_model(data: Path):
    """The dataset's morphable model, for the voice-to-face match (None when there is none to read)."""
    from imagineid.data.morphable import current_model
    from imagineid.data.store import Store

    try:
        return current_model(Store(data)) if (data / "morphable").is_dir() else None
    except ImagineIDError:  # a FLAME dataset: no PCA shape to compare
        return None


def truth_metrics(faces: VideoFaces, row: dict, truth: dict, every: int) -> dict:
    out = {
        "gender_agrees": float(row["predicted_gender"] == truth["gender"]) if row["predicted_gender"] else float("nan"),
        "emotion_agrees": float(row["predicted_emotion"] == truth["emotion"])
        if row["predicted_emotion"]
        else float("nan"),
    }
    true_points = [np.asarray(p, np.float64).reshape(68, 2) for p in truth["landmarks"]][::every]
    residuals = [_similarity_residual(t, g) for g, t in zip(faces.landmarks, true_points) if g is not None]
    out["truth_landmark_distance"] = float(np.mean(residuals)) if residuals else float("nan")
    return out


def _nanmean(values: list[float]) -> float | None:
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def _clean(value):
    """JSON-safe: NaN → None (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _reference_faces(audio: str, landmarker: DlibLandmarker, every: int) -> VideoFaces | None:
    """The driving clip's own frames as ground truth, when it is a video (None for an audio-only file)."""
    try:
        return detect_video(audio, landmarker, every) if probe(audio).video_index is not None else None
    except (ImagineIDError, OSError):
        return None


def evaluate(
    gen: str | Path,
    data: str | Path,
    report: str | Path | None = None,
    every: int = 1,
    progress: bool = True,
    weights: FieldWeights | None = None,
    sources: str | Path | None = None,
) -> dict:
    """Measure every generated video; write GEN/metrics.json and the HTML report; → the metrics.

    `weights` names the local files of the field's metrics (SyncNet, FID Inception, ArcFace). A folder
    without index.parquet is another method's videos (`foreign.py`): their driving clips are looked up
    under `sources`. A video that cannot be measured is listed under `errors`; the others go on."""
    gen, data = Path(gen), Path(data)
    if (gen / "index.parquet").exists():
        index = pq.read_table(gen / "index.parquet").to_pylist()
    else:
        index = folder_rows(gen, Path(sources) if sources else None)
    rows = [r for r in index if r["status"] == "ok"]
    if not rows:
        raise ImagineIDError(f"{gen}/index.parquet lists no finished video to evaluate")
    landmarker = DlibLandmarker(upsample=1)
    field, reference = FieldMetrics(weights), {}
    videos, first_descriptors, samples = [], {}, {}
    model = _dataset_model(data)
    imagined, voices, true_shapes = [], [], {}  # voice-to-face match: videos of held-out speakers
    errors = []
    for row in tqdm(sorted(rows, key=lambda r: r["key"]), desc="evaluate", unit="video", disable=not progress):
        try:
            faces = detect_video(gen / row["video"], landmarker, every)
            audio = read_audio(gen / row["video"])
        except (ImagineIDError, OSError) as err:  # e.g. a truncated video in another method's folder
            errors.append({"key": row["key"], "video": row["video"], "error": f"{type(err).__name__}: {err}"})
            continue
        metrics = video_metrics(faces, audio, row["mesh_mouth_opening"], every)
        if row["audio"] not in reference:  # seeds of one audio share its ground truth; keep one clip's frames
            reference = {row["audio"]: _reference_faces(row["audio"], landmarker, every) if row["audio"] else None}
        metrics.update(field.video(faces, audio, reference[row["audio"]], every))
        truth = ground_truth(row["audio"]) if row["audio"] else None
        if truth is not None:
            metrics.update(truth_metrics(faces, row, truth, every))
            shape = imagined_shape(model, faces.landmarks) if model is not None else None
            if shape is not None and truth.get("speaker_id"):
                imagined.append(shape)
                voices.append(truth["speaker_id"])
                true_shapes.setdefault(truth["speaker_id"], []).append(true_shape(model, _points(truth)))
        videos.append(
            {
                "key": row["key"],
                "audio": row["audio"],
                "seed": row["seed"],
                "video": row["video"],
                "frames": row["frames"],
                "predicted_gender": row["predicted_gender"],
                "predicted_emotion": row["predicted_emotion"],
                **metrics,
            }
        )
        descriptor = next((d for d in faces.descriptors if d is not None), None)
        if descriptor is not None:
            first_descriptors.setdefault(row["audio"], []).append(descriptor)
        samples[row["key"]] = faces.frames[:: max(1, len(faces.frames) // 8)][:8]
    if not videos:
        raise ImagineIDError(f"no video in {gen} could be measured: " + "; ".join(e["error"] for e in errors[:3]))
    diversity = [
        float(np.linalg.norm(a - b)) for ds in first_descriptors.values() for a, b in itertools.combinations(ds, 2)
    ]
    summary = {name: _nanmean([v.get(name) for v in videos]) for name in AGGREGATED}
    summary["seed_diversity"] = float(np.mean(diversity)) if diversity else None
    summary.update(voice_face_match(imagined, voices, {s: np.mean(v, axis=0) for s, v in true_shapes.items()}))
    summary.update(field.summary(videos))
    summary["videos"] = len(videos)
    summary["failed_in_index"] = len(index) - len(rows)
    _synth_metadata.cache_clear()  # a corpus may change between evaluations
    summary["unreadable"] = len(errors)
    metrics = _clean({"summary": summary, "skipped": field.skipped, "every": every, "videos": videos, "errors": errors})
    write_json_atomic(gen / "metrics.json", metrics)
    if report is not None:
        from imagineid.evaluation.report import write_report

        write_report(Path(report), metrics, samples, gen, data)
    return metrics
