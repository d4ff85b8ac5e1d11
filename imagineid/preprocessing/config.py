"""Preprocess configuration and the content-hash identities derived from it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

PIPELINE_VERSION = "preprocess-1"  # bump when outputs change for the same config


@dataclass(frozen=True)
class PreprocessConfig:
    fps: float = 25.0  # video frames per second after decoding
    sample_rate: int = 16000  # audio rate after decoding (mono)
    crop_size: int = 256  # aligned face crop size in pixels
    detector: str = "dlib"  # dlib | fan
    detect_every: int = 5  # run the detector every N frames, track in between
    morphable: str = "pca"  # pca (offline default) | flame (issue 9)
    n_shape: int = 10  # identity (shape) components of the PCA model
    n_expression: int = 12  # full-expression components
    n_mouth: int = 6  # mouth-only components
    blend_dilation: float = 0.08  # blending-mask dilation, fraction of the face width

    def to_dict(self) -> dict:
        return {**asdict(self), "pipeline_version": PIPELINE_VERSION}

    @property
    def hash(self) -> str:
        """Short hash of everything that changes the outputs: a new config makes new clip ids."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def clip_id_for(sha256: str, config_hash: str) -> str:
    """hash(source sha256, config hash): the same file under the same config is the same clip."""
    return hashlib.sha256(f"{sha256}:{config_hash}".encode()).hexdigest()[:16]
