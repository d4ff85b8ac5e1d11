"""Passes 2 and 3: fit (or reuse) the dataset's morphable model, then project every staged clip and
write its frames / audio / clips shards — the clips/ shard last, as the clip's commit marker."""

from __future__ import annotations

import json
import platform

import numpy as np
import pyarrow as pa

from imagineid import __version__
from imagineid.data.morphable import current_kind, current_model, point_current
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
from imagineid.preprocessing.config import PIPELINE_VERSION, PreprocessConfig
from imagineid.preprocessing.extract import staged_clip_ids, staged_npz

FLAME_COLUMNS = {"flame_pose": 6, "camera": 3}  # extra frame columns of a FLAME dataset (DECA's pose, camera)


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
    staged = [load_staged(store, cid) for cid in clip_ids]
    if not staged:
        raise ImagineIDError("no clip could be processed, so there is nothing to fit the morphable model on")
    # Shape from per-speaker means, so a clip's emotion goes to expression, not identity.
    groups = [s["meta"]["source"].get("speaker_id") or cid for s, cid in zip(staged, clip_ids)]
    model = PCAMorphableModel.fit(
        [s["crop_landmarks"] for s in staged], config.n_shape, config.n_expression, config.n_mouth, groups=groups
    )
    point_current(store, model.save_versioned(store.morphable))
    return model


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


def finalize_all(store: Store, clip_ids: list[str], model: PCAMorphableModel, config: PreprocessConfig) -> list[str]:
    """Finalize the staged sources `clip_ids`; returns every clip written (several per source with subject=all)."""
    written = []
    for clip_id in expand_staged(store, clip_ids):
        finalize_clip(store, clip_id, model, config)
        written.append(clip_id)
    return written
