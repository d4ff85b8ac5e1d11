"""Passes 2 and 3: fit (or reuse) the dataset's morphable model, then project every staged clip and
write its frames / audio / clips shards — the clips/ shard last, as the clip's commit marker."""

from __future__ import annotations

import functools
import json
import platform
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from imagineid import __version__
from imagineid.data.morphable import CURRENT, current_kind, current_model, point_current
from imagineid.data.parquet_io import (
    vector_lists,
    vector_type,
    vectors,
    write_table_atomic,
)
from imagineid.data.store import AUDIO_SCHEMA, Store, clips_schema, frames_schema
from imagineid.errors import ImagineIDError
from imagineid.face.masks import blend_mask, encode_mask_png, face_mask, mouth_mask
from imagineid.face.morphable import PCAMorphableModel
from imagineid.media import iter_frames
from imagineid.parallel import parallel_map, remote_traceback
from imagineid.preprocessing.config import PIPELINE_VERSION, PreprocessConfig
from imagineid.preprocessing.extract import ExtractResult, staged_clip_ids, staged_npz

FLAME_COLUMNS = {"flame_pose": 6, "camera": 3}
# Frames the PCA fit reads at most: enough for a stable 68-point basis, bounded memory on any corpus.
MORPHABLE_FIT_FRAMES = 200_000  # extra frame columns of a FLAME dataset (DECA's pose, camera)


def load_staged(store: Store, clip_id: str) -> dict:
    with np.load(staged_npz(store, clip_id)) as npz:
        data = {k: npz[k] for k in npz.files}
    data["meta"] = json.loads(data["meta"].tobytes().decode())
    return data


def load_flame_model(store: Store, config: PreprocessConfig):
    """FLAME + DECA from the configured local files; the dataset records which files (by sha256) made its
    coefficients. A dataset holds one kind of coefficients: PCA and FLAME never mix in one folder."""
    from imagineid.face.flame_morphable import FlameMorphableModel

    if not config.flame or not config.deca:
        raise ImagineIDError(
            "--morphable flame needs --flame PATH (generic_model.pkl) and --deca PATH (deca_model.tar); "
            "see docs/pretrained.md § FLAME and § DECA"
        )
    if current_kind(store) == "pca":
        raise ImagineIDError(
            f"{store.root} already holds PCA coefficients; use a new --out folder for --morphable flame"
        )
    model = FlameMorphableModel.load(config.flame, config.deca)
    point_current(store, model.save_versioned(store.morphable))
    return model


def fit_or_load_model(
    store: Store, config: PreprocessConfig, clip_ids: list[str], refit: bool = False
) -> PCAMorphableModel:
    """The dataset keeps one model so coefficients stay comparable across nightly increments;
    `refit` fits a new version (old versions stay on disk)."""
    if config.morphable == "flame":
        return load_flame_model(store, config)
    if config.morphable != "pca":
        raise ImagineIDError(f"--morphable must be pca or flame, got {config.morphable!r}")
    if current_kind(store) == "flame":
        raise ImagineIDError(
            f"{store.root} already holds FLAME coefficients; use a new --out folder for --morphable pca"
        )
    model = None if refit else current_model(store)
    if model is not None:
        return model
    clip_ids = expand_staged(store, clip_ids)
    if not clip_ids:
        raise ImagineIDError("no clip could be processed, so there is nothing to fit the morphable model on")
    clips, groups = fit_landmarks(store, clip_ids)
    model = PCAMorphableModel.fit(clips, config.n_shape, config.n_expression, config.n_mouth, groups=groups)
    point_current(store, model.save_versioned(store.morphable))
    return model


def fit_landmarks(
    store: Store, clip_ids: list[str], max_frames: int = MORPHABLE_FIT_FRAMES
) -> tuple[list[np.ndarray], list[str]]:
    """Each staged clip's crop landmarks, every k-th frame so that all clips together hold at most
    `max_frames`, and its identity group (speaker id, else the clip).

    Why: the fit needs only landmarks, so audio, speech features and boxes stay on disk, and a corpus
    of 10^6 frames fits in the memory of 10^5. Striding keeps every clip and its within-clip motion.
    """
    lengths, groups = [], []
    for cid in clip_ids:
        with np.load(staged_npz(store, cid)) as npz:  # an .npz reads only the members asked for
            lengths.append(len(npz["found"]))  # (T,) bools: the frame count without reading landmarks
            meta = json.loads(npz["meta"].tobytes().decode())
        groups.append(meta["source"].get("speaker_id") or cid)
    stride = max(1, -(-sum(lengths) // max_frames))  # ceil
    clips = []
    for cid, n in zip(clip_ids, lengths):
        with np.load(staged_npz(store, cid)) as npz:
            pts = npz["crop_landmarks"]  # (T, 68, 2)
        step = min(stride, n - 1) if n > 1 else 1  # a short clip keeps at least 2 frames
        clips.append(pts[::step])
    return clips, groups


def _versions(model: PCAMorphableModel) -> str:
    return json.dumps(
        {
            "imagineid": __version__,
            "pipeline": PIPELINE_VERSION,
            "morphable": model.version,
            "python": platform.python_version(),
        }
    )


def finalize_clip(store: Store, clip_id: str, model: PCAMorphableModel, config: PreprocessConfig) -> None:
    staged = load_staged(store, clip_id)
    meta, source = staged["meta"], staged["meta"]["source"]
    crop_pts = staged["crop_landmarks"]  # (T, 68, 2)
    t = len(crop_pts)
    extra: dict[str, np.ndarray] = {}
    if config.morphable == "flame":  # DECA reads the aligned crops the extract pass wrote
        coeffs = model.project(crop_pts, iter_frames(store.crops(clip_id)))
        extra = {"flame_pose": coeffs.flame_pose, "camera": coeffs.camera}
    else:
        coeffs = model.project(crop_pts)
    size = config.crop_size
    masks = {"face_mask": [], "mouth_mask": [], "blend_mask": []}
    for pts in crop_pts:
        masks["face_mask"].append(encode_mask_png(face_mask(pts, size)))
        masks["mouth_mask"].append(encode_mask_png(mouth_mask(pts, size)))
        masks["blend_mask"].append(encode_mask_png(blend_mask(pts, size, config.blend_dilation)))
    frames = pa.table(
        {
            "clip_id": pa.array([clip_id] * t),
            "frame_idx": pa.array(np.arange(t, dtype=np.int32)),
            "timestamp": pa.array((np.arange(t) / config.fps).astype(np.float32)),
            "found": pa.array(staged["found"].astype(bool)),
            "bbox": vectors(staged["boxes"]),
            "landmarks": vectors(staged["landmarks"].reshape(t, 136)),
            "crop_landmarks": vectors(crop_pts.reshape(t, 136)),
            "crop_transform": vectors(staged["transforms"].reshape(t, 6)),
            "expression": vectors(coeffs.expression),
            "mouth": vectors(coeffs.mouth),
            "pose": vectors(coeffs.pose),
            **{k: pa.array(v, pa.binary()) for k, v in masks.items()},
            **{k: vectors(v) for k, v in extra.items()},
        },
        schema=_frames_schema(model, extra),
    )
    mel = staged["log_mel"]  # (4T, 80)
    audio_schema, speech = AUDIO_SCHEMA, {}
    if "speech" in staged:  # optional wav2vec2 / HuBERT features, (4T, D) on the mel grid
        audio_schema = AUDIO_SCHEMA.append(pa.field("speech", pa.list_(vector_type(staged["speech"].shape[1]))))
        speech["speech"] = vector_lists([staged["speech"]])
    audio = pa.table(
        {
            "clip_id": [clip_id],
            "sample_rate": [config.sample_rate],
            "mel_fps": [100.0],
            "n_mel": [len(mel)],
            "log_mel": vector_lists([mel]),
            "seconds": [meta["seconds"]],
            "pcm16": [staged["pcm16"].tobytes() if "pcm16" in staged else None],
            **speech,
        },
        schema=audio_schema,
    )
    labels = source.get("labels") or {}
    subject = meta.get("subject") or {}
    clip = pa.table(
        {
            "clip_id": [clip_id],
            "source": [source["path"]],
            "sha256": [meta["sha256"]],
            "dataset": [source.get("dataset")],
            "split": [source.get("split")],
            "speaker_id": [source.get("speaker_id")],
            "gender": [labels.get("gender")],
            "age_group": [labels.get("age_group")],
            "emotion": [labels.get("emotion")],
            "emotion_intensity": [_float_or_none(labels.get("intensity"))],
            "labels": [json.dumps(labels, sort_keys=True)],
            "fps": [config.fps],
            "n_frames": [t],
            "width": [meta["width"]],
            "height": [meta["height"]],
            "crop_size": [size],
            "crops": [f"crops/{clip_id}.mp4"],
            "shape": vectors(coeffs.shape[None, :]),
            "morphable_version": [model.version],
            "config_hash": [config.hash],
            "versions": [_versions(model)],
            "subject_track": [subject.get("track")],
            "subject_reason": [subject.get("reason")],
            "runner_up": [json.dumps(subject["runner_up"], sort_keys=True) if subject.get("runner_up") else None],
            "source_clip_id": [subject.get("source_clip_id", clip_id)],
        },
        schema=clips_schema(model.n_shape),
    )
    write_table_atomic(frames, store.shard("frames", clip_id))
    write_table_atomic(audio, store.shard("audio", clip_id))
    write_table_atomic(clip, store.shard("clips", clip_id))
    staged_npz(store, clip_id).unlink(missing_ok=True)


def _frames_schema(model, extra: dict[str, np.ndarray]) -> pa.Schema:
    schema = frames_schema(model.n_expression, model.n_mouth)
    for name in extra:
        schema = schema.append(pa.field(name, vector_type(FLAME_COLUMNS[name])))
    return schema


def _float_or_none(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def expand_staged(store: Store, clip_ids: list[str]) -> list[str]:
    """Source clip ids (one per staged source) → every staged clip, each source's subject clip after its
    further faces, so the subject's clips/ shard still marks the whole source as done. Two paths with the
    same content share one clip id, which is finalized once."""
    return [cid for source_id in dict.fromkeys(clip_ids) for cid in staged_clip_ids(store, source_id)]


# Loaded once per process: a Ray worker finalizes many clips with the same model.
@functools.lru_cache(maxsize=2)
def _flame_model(flame: str, deca: str):
    from imagineid.face.flame_morphable import FlameMorphableModel

    return FlameMorphableModel.load(flame, deca)


@functools.lru_cache(maxsize=4)
def _pca_model(root: str, version: str) -> PCAMorphableModel:
    return PCAMorphableModel.load(Path(root) / version)


def finalize_source(staged: ExtractResult, root: str, config: PreprocessConfig) -> list[str]:
    """Finalize every staged clip of one source, the subject's last (its clips/ shard marks the source
    done); returns the clip ids written. Runs in a Ray worker or in process."""
    store = Store(Path(root))
    if config.morphable == "flame":
        model = _flame_model(config.flame, config.deca)
    else:  # by version, so a worker that outlives a refit never projects with the old basis
        model = _pca_model(str(store.morphable), (store.morphable / CURRENT).read_text().strip())
    written = []
    for clip_id in expand_staged(store, [staged.clip_id]):
        finalize_clip(store, clip_id, model, config)
        written.append(clip_id)
    return written


def finalize_all(
    store: Store,
    staged: list[ExtractResult],
    config: PreprocessConfig,
    workers: int | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> tuple[list[str], list[ExtractResult]]:
    """Finalize the staged sources, one task per source through the same bounded fan-out as extraction,
    so no step after it holds more than one clip per worker. Returns the clips written (several per
    source with subject=all) and the sources whose finalizing failed: these are listed, not recorded in
    failures/, and their staged files stay, so the next run tries them again."""
    fn = functools.partial(finalize_source, root=str(store.root.absolute()), config=config)

    def failed(result: ExtractResult, err: Exception) -> ExtractResult:
        if type(err).__module__.startswith("ray"):  # the worker's traceback, or why it was lost
            detail = remote_traceback(err)
        else:
            detail = "".join(traceback.format_exception(err)).strip()
        return ExtractResult(
            result.clip_id,
            result.source,
            "lost",
            "finalize_failed",
            f"finalizing failed; not recorded, the next run retries it. {detail}".strip(),
        )

    outcomes = parallel_map(fn, staged, workers, "finalize", progress, ray_address, on_done=on_done, on_error=failed)
    written = [cid for out in outcomes if isinstance(out, list) for cid in out]
    return written, [out for out in outcomes if isinstance(out, ExtractResult)]
