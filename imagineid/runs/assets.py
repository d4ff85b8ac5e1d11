"""What generation needs from a training run besides the networks: the morphable model and the face pose.

A run keeps its own copy (`RUN/morphable/`, `RUN/face_geometry.json`, written when training starts) so
`imagineid generate RUN ...` works without the dataset. Older runs only point at their dataset
(`RUN/morphable.json`); then both are read from there once and saved into the run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from imagineid.data.parquet_io import to_numpy_vectors, write_json_atomic
from imagineid.data.store import Store
from imagineid.errors import ImagineIDError
from imagineid.face.morphable import PCAMorphableModel
from imagineid.runs.folder import RunDir

MORPHABLE_DIR = "morphable"
GEOMETRY_FILE = "face_geometry.json"


def typical_pose(data: str | Path, clip_ids: list[str]) -> list[float]:
    """Median crop pose of the training frames, relative to the crop size: (log scale, angle, x, y).

    The generator learnt faces where the aligned crops put them; a generated mesh goes to the same place.
    """
    store = Store(Path(data))
    sizes = {r["clip_id"]: r["crop_size"] for r in store.read_table("clips", ["clip_id", "crop_size"]).to_pylist()}
    poses = []
    for clip_id in clip_ids:
        pose = to_numpy_vectors(store.clip_frames(clip_id, ["pose"])["pose"]).astype(np.float64)  # (T, 4)
        size = float(sizes[clip_id])
        poses.append(np.stack([pose[:, 0] - np.log(size), pose[:, 1], pose[:, 2] / size, pose[:, 3] / size], 1))
    if not poses:
        raise ImagineIDError(f"{data}: no training clips to take the face pose from")
    return np.median(np.concatenate(poses), axis=0).tolist()


def save_run_assets(run: Path, model: PCAMorphableModel, data: str | Path, clip_ids: list[str]) -> None:
    """Copy the morphable model and the typical pose into the run (once)."""
    if not (run / MORPHABLE_DIR).is_dir():
        tmp = model.save(run / f".{MORPHABLE_DIR}.{os.getpid()}.tmp")
        try:
            os.replace(tmp, run / MORPHABLE_DIR)  # a whole folder or none
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process got there first
    if not (run / GEOMETRY_FILE).exists():
        write_json_atomic(run / GEOMETRY_FILE, {"pose": typical_pose(data, clip_ids)})


def load_run_assets(run: str | Path) -> tuple[PCAMorphableModel, np.ndarray]:
    """→ (morphable model, relative pose (4,)); falls back to the dataset the run was trained on."""
    run = Path(run)
    if not (run / GEOMETRY_FILE).exists() or not (run / MORPHABLE_DIR).is_dir():
        pointer = RunDir(run).dataset_pointer
        if not pointer.exists():
            raise ImagineIDError(
                f"{run} is not a training run (no {GEOMETRY_FILE} / morphable.json); "
                f"train one with `imagineid train DATA --out {run}`"
            )
        info = json.loads(pointer.read_text())
        data = Path(info["data"])
        if not (data / "morphable" / info["version"]).is_dir():
            raise ImagineIDError(
                f"{run} predates {GEOMETRY_FILE} and its dataset {data} is gone; "
                "re-run `imagineid train` to record the face geometry in the run"
            )
        split = RunDir(run).split()
        save_run_assets(run, PCAMorphableModel.load(data / "morphable" / info["version"]), data, split["train"])
    pose = np.asarray(json.loads((run / GEOMETRY_FILE).read_text())["pose"], np.float64)
    return PCAMorphableModel.load(run / MORPHABLE_DIR), pose


def pose_at(relative: np.ndarray, size: int) -> np.ndarray:
    """Relative pose → pose (4,) for a `size` px frame."""
    return np.array([relative[0] + np.log(size), relative[1], relative[2] * size, relative[3] * size], np.float64)
