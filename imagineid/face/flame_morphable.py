"""FLAME + DECA as a dataset's morphable model (`imagineid preprocess --morphable flame`, docs/architecture.md §4).

    model = FlameMorphableModel.load(flame="models/flame", deca="models/deca/deca_model.tar")
    coeffs = model.project(crop_landmarks, crop_frames)  # FlameCoefficients of one clip
    folder = model.save_versioned(DATA / "morphable")    # config.json: files, their sha256, mouth selection

Per frame, DECA's coarse encoder reads the aligned crop (re-cropped DECA's way around the 68 landmarks)
and predicts FLAME shape (100), expression (50), pose (global + jaw) and an orthographic camera. A clip's
**shape** is the mean of its frames' shapes (DECA sees one image at a time; identity is per clip).
**Mouth-only** coefficients are the jaw pose (3) followed by the expression components that move only
the lower face: `flame.lower_face_share` ≥ `LOWER_FACE_SHARE` (0.9) of their squared vertex displacement
lies below the nose. Which components those are depends on the FLAME file; `config.json` lists them
with every component's share. **pose** (the 4-vector of the PCA model) is the 2D similarity from the
FLAME model frame (x right, y down, metres; head rotation already applied) to crop pixels implied by
DECA's camera, so `apply_pose` draws projected FLAME landmarks on the crop; `flame_pose` (global,
jaw axis-angle) and `camera` keep DECA's own numbers. `residual_px` is the mean distance between the
projected FLAME landmarks and the tracked ones.

The version hashes the FLAME, embedding and DECA files (sha256) and the selection, so a dataset's
coefficients stay comparable; the weights themselves are never copied into the dataset (licences).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from imagineid.errors import ImagineIDError, MissingWeightsError, see_docs
from imagineid.face.deca import CHECKPOINT, IMAGE_SIZE, DecaEncoder, deca_crops
from imagineid.face.deca import SECTION as DECA_SECTION
from imagineid.face.flame import EMBEDDING_FILES, FLAME, MODEL_FILE, lower_face_share
from imagineid.face.flame import SECTION as FLAME_SECTION
from imagineid.face.morphable import MorphableCoefficients, apply_pose
from imagineid.media.hashing import file_sha256

FORMAT = "imagineid.flame/1"
CONFIG = "config.json"
LOWER_FACE_SHARE = 0.9  # an expression component is mouth-only when this share of its motion is below the nose
N_JAW = 3  # jaw axis-angle leads the mouth coefficients


@dataclass
class FlameCoefficients(MorphableCoefficients):
    """`MorphableCoefficients` plus DECA's own pose and camera."""

    flame_pose: np.ndarray | None = None  # (T, 6) global rotation + jaw, axis-angle
    camera: np.ndarray | None = None  # (T, 3) DECA orthographic scale, tx, ty


class FlameMorphableModel:
    """FLAME layer + DECA encoder + the mouth-component selection, for one dataset."""

    def __init__(self, flame: FLAME, encoder: DecaEncoder, files: dict[str, Path]) -> None:
        self.flame, self.encoder, self.files = flame.eval(), encoder.eval(), files
        self.lower_share = lower_face_share(flame)  # (n_expression,)
        self.mouth_components = [int(j) for j in np.flatnonzero(self.lower_share >= LOWER_FACE_SHARE)]
        self._digests: dict[str, str] | None = None

    @classmethod
    def load(cls, flame: str | Path, deca: str | Path, landmarks: str | Path | None = None) -> FlameMorphableModel:
        """`flame`: generic_model.pkl or its folder (embedding beside it unless `landmarks`); `deca`:
        deca_model.tar or its folder. Missing or malformed files raise one-line errors naming docs/pretrained.md."""
        files = resolve_files(flame, deca, landmarks)
        layer = FLAME.from_files(files["flame"], files["landmarks"])
        return cls(layer, DecaEncoder.from_checkpoint(files["deca"]), files)

    # -- sizes -----------------------------------------------------------------------------------------
    @property
    def n_shape(self) -> int:
        return self.flame.n_shape

    @property
    def n_expression(self) -> int:
        return self.flame.n_expression

    @property
    def n_mouth(self) -> int:
        return N_JAW + len(self.mouth_components)

    # -- projection ------------------------------------------------------------------------------------
    def project(self, landmarks: np.ndarray, frames: Iterable[np.ndarray], batch_size: int = 32) -> FlameCoefficients:
        """One clip: landmarks (T, 68, 2) in crop pixels and its crop frames (RGB uint8, same order)."""
        codes, transforms = [], []
        frames_iter = iter(frames)
        for start in range(0, len(landmarks), batch_size):
            chunk = landmarks[start : start + batch_size]
            images = list(islice(frames_iter, len(chunk)))
            if len(images) != len(chunk):
                raise ImagineIDError(
                    f"the crop video has {start + len(images)} frames for {len(landmarks)} landmark sets"
                )
            crops, m = deca_crops(images, chunk)
            codes.append(self.encoder.encode(crops))
            transforms.append(m)
        if not codes:
            raise ImagineIDError("no frames to project")
        code = {k: np.concatenate([getattr(c, k) for c in codes]) for k in ("shape", "expression", "pose", "cam")}
        m = np.concatenate(transforms)  # (T, 2, 3) crop px → DECA crop px
        shape = code["shape"].mean(axis=0)
        mouth = np.concatenate([code["pose"][:, 3:], code["expression"][:, self.mouth_components]], axis=1)
        pose = _similarity(code["cam"], m)
        points = self.landmarks_2d(shape, code["expression"], code["pose"], pose)
        residual = np.linalg.norm(points - landmarks, axis=-1).mean(axis=-1)
        return FlameCoefficients(
            shape=shape.astype(np.float32),
            expression=code["expression"],
            mouth=mouth.astype(np.float32),
            pose=pose,
            residual_px=residual.astype(np.float32),
            flame_pose=code["pose"],
            camera=code["cam"],
        )

    @torch.no_grad()
    def landmarks_2d(
        self, shape: np.ndarray, expression: np.ndarray, flame_pose: np.ndarray, pose: np.ndarray | None = None
    ) -> np.ndarray:
        """The 68 FLAME landmarks (T, 68, 2): model frame (x, −y), or crop pixels through `pose` (T, 4)."""
        t = len(expression)
        f = lambda a: torch.as_tensor(np.asarray(a, np.float32))
        out = self.flame(
            f(np.repeat(np.reshape(shape, (1, -1)), t, axis=0)),
            f(expression),
            global_pose=f(flame_pose[:, :3]),
            jaw_pose=f(flame_pose[:, 3:]),
        )
        points = out.landmarks[..., :2].numpy() * np.array([1.0, -1.0], np.float32)  # y down
        return points if pose is None else apply_pose(points, pose)

    # -- storage ---------------------------------------------------------------------------------------
    def digests(self) -> dict[str, str]:
        if self._digests is None:
            self._digests = {name: file_sha256(path) for name, path in self.files.items()}
        return self._digests

    def config(self) -> dict:
        cfg = {
            "format": FORMAT,
            "n_shape": self.n_shape,
            "n_expression": self.n_expression,
            "n_mouth": self.n_mouth,
            "mouth": {
                "jaw_pose": N_JAW,
                "expression_components": self.mouth_components,
                "lower_face_share_threshold": LOWER_FACE_SHARE,
            },
            "lower_face_share": [round(float(s), 4) for s in self.lower_share],
            "sha256": self.digests(),
            "files": {name: str(path) for name, path in self.files.items()},
            "deca_image_size": IMAGE_SIZE,
        }
        hashed = {k: v for k, v in cfg.items() if k != "files"}  # moving the files keeps the version
        version = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:12]
        return {"version": version, **cfg}

    @property
    def version(self) -> str:
        return self.config()["version"]

    def save_versioned(self, root: str | Path) -> Path:
        """Write `root/<version>/config.json` atomically; an existing version is kept."""
        cfg = self.config()
        root = Path(root)
        final = root / cfg["version"]
        if final.exists():
            return final
        tmp = root / f".tmp-{cfg['version']}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.exists():
                raise
        return final


def resolve_files(flame: str | Path, deca: str | Path, landmarks: str | Path | None = None) -> dict[str, Path]:
    """The three files `--flame` / `--deca` point at (a file, or the folder holding it); a missing one raises
    MissingWeightsError naming it and its docs section. Cheap: run it before any long work."""
    flame_path, deca_path = Path(flame).expanduser(), Path(deca).expanduser()
    model_file = flame_path / MODEL_FILE if flame_path.is_dir() else flame_path
    if landmarks is None:
        found = [model_file.parent / n for n in EMBEDDING_FILES if (model_file.parent / n).is_file()]
        landmarks = found[0] if found else model_file.parent / EMBEDDING_FILES[0]
    files = {
        "flame": model_file,
        "landmarks": Path(landmarks).expanduser(),
        "deca": deca_path / CHECKPOINT if deca_path.is_dir() else deca_path,
    }
    what = {
        "flame": f"FLAME model ({MODEL_FILE})",
        "landmarks": "FLAME 68-landmark embedding",
        "deca": f"DECA model ({CHECKPOINT})",
    }
    for name, path in files.items():
        if not path.is_file():
            raise MissingWeightsError(
                f"missing {what[name]}: {path} ({see_docs(DECA_SECTION if name == 'deca' else FLAME_SECTION)})"
            )
    return files


def is_flame_folder(folder: str | Path) -> bool:
    """Whether DATA/morphable/<version>/ holds a FLAME model record (not a PCA model)."""
    config = Path(folder) / CONFIG
    return config.is_file() and json.loads(config.read_text()).get("format") == FORMAT


def _similarity(cam: np.ndarray, to_deca: np.ndarray) -> np.ndarray:
    """DECA camera (T, 3) and crop → DECA-crop transforms (T, 2, 3) → pose (T, 4): log-scale, rotation,
    tx, ty of the similarity model frame (x, −y) → crop pixels.

    DECA: q = (s·(X + t) · (1, −1) + 1) · S/2 in its S-pixel crop; the crop is p ↦ k·p + c.
    """
    half = IMAGE_SIZE / 2
    s, tx, ty = cam[:, 0].astype(np.float64), cam[:, 1], cam[:, 2]
    k, cx, cy = to_deca[:, 0, 0].astype(np.float64), to_deca[:, 0, 2], to_deca[:, 1, 2]
    scale = half * s / k  # may be negative for a garbage camera: then a rotation by π
    offset_x = (half * (1 + s * tx) - cx) / k
    offset_y = (half * (1 - s * ty) - cy) / k
    return np.stack(
        [np.log(np.abs(scale) + 1e-12), np.where(scale < 0, np.pi, 0.0), offset_x, offset_y], axis=1
    ).astype(np.float32)
