"""Preprocess configuration and the content-hash identities derived from it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

PIPELINE_VERSION = "preprocess-2"  # bump when outputs change for the same config (2: track-level subject policy)
_OPTIONAL = ("flame", "deca", "speech_model")  # left out of the hash while unset
# Not part of the config (it changes which sources a run takes, not their outputs). Interactive runs take
# every file as it is; a deployment watching a folder that files are copied into sets a settle time, so a
# video still being written is left for the next run instead of being processed half-written.
SETTLE_S = 0.0
DETECTORS = ("dlib", "fan")
MORPHABLES = ("pca", "flame")
SUBJECTS = ("one", "all")  # one: the speaker's face track per source | all: one clip per persistent face


@dataclass(frozen=True)
class PreprocessConfig:
    fps: float = 25.0  # video frames per second after decoding
    sample_rate: int = 16000  # audio rate after decoding (mono)
    crop_size: int = 256  # aligned face crop size in pixels
    detector: str = "dlib"  # dlib | fan
    detect_every: int = 5  # run the detector every N frames, track in between
    subject: str = "one"  # one: the subject's face track per source | all: one clip per persistent face track
    min_face_px: float = 48.0  # a subject face narrower than this (median detector box) is rejected as too small
    morphable: str = "pca"  # pca (offline default) | flame (FLAME + DECA, docs/pretrained.md)
    n_shape: int = 10  # identity (shape) components of the PCA model
    n_expression: int = 12  # full-expression components
    n_mouth: int = 6  # mouth-only components
    blend_dilation: float = 0.08  # blending-mask dilation, fraction of the face width
    flame: str | None = None  # --morphable flame: generic_model.pkl or its folder (embedding beside it)
    deca: str | None = None  # --morphable flame: deca_model.tar or its folder
    speech_model: str | None = None  # wav2vec2 / HuBERT folder: audio/ gets `speech` features on the mel grid

    def __post_init__(self) -> None:
        """The checks every caller gets (CLI, flows, deployments), before any work is done."""
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if self.morphable not in MORPHABLES:
            raise ValueError(f"morphable must be one of {', '.join(MORPHABLES)}, got {self.morphable!r}")
        if self.morphable == "flame" and not (self.flame and self.deca):
            raise ValueError("morphable flame needs both flame (generic_model.pkl) and deca (deca_model.tar)")
        if self.morphable != "flame" and (self.flame or self.deca):
            raise ValueError("flame / deca are used with morphable flame only")
        if self.subject not in SUBJECTS:
            raise ValueError(f"subject must be one of {', '.join(SUBJECTS)}, got {self.subject!r}")
        if not self.min_face_px > 0:
            raise ValueError(f"min_face_px must be positive, got {self.min_face_px}")

    def to_dict(self) -> dict:
        """Everything that changes outputs; unset optional paths are left out, so adding options keeps the
        hash (and the clip ids) of existing datasets."""
        fields = {k: v for k, v in asdict(self).items() if not (k in _OPTIONAL and v is None)}
        return {**fields, "pipeline_version": PIPELINE_VERSION}

    @property
    def hash(self) -> str:
        """Short hash of everything that changes the outputs: a new config makes new clip ids."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def clip_id_for(sha256: str, config_hash: str) -> str:
    """hash(source sha256, config hash): the same file under the same config is the same clip."""
    return hashlib.sha256(f"{sha256}:{config_hash}".encode()).hexdigest()[:16]


def track_clip_id(clip_id: str, rank: int) -> str:
    """The clip id of a source's rank-th kept face track (subject=all): the source's own id for the
    subject, a derived stable id for each further face."""
    return clip_id if rank == 0 else hashlib.sha256(f"{clip_id}:track{rank}".encode()).hexdigest()[:16]
