"""A run folder, RUN/, and the one place that knows its layout:

    RUN/<stage>/            a stage's weights (safetensors) + config.json; done.json when finished
    RUN/<stage>/checkpoint.pt   an interrupted stage's resume point
    RUN/metrics.jsonl       every logged training / validation record
    RUN/tensorboard/<stage>/  the same for TensorBoard, with per-step losses and sample frames
    RUN/split.json          the speaker-disjoint train / val clip ids, fixed at the first stage
    RUN/mel_stats.json      the log-mel normalisation of the training clips
    RUN/train_config.json   the resolved training configuration
    RUN/voice_bank/         the training clips' audio variants and voice vectors
    RUN/morphable.json      which dataset and morphable-model version the run was trained on
    RUN/morphable/, RUN/face_geometry.json   the run's own copy of both (`imagineid.runs.assets`)
    RUN/pipeline/           the frame generator (diffusers layout), saved whole by the adapters stage
    RUN/latents/<vae>/      the frozen VAE's posterior of each training clip's crops, for the adapters stage

A stage is done when its done.json exists (written last, atomically).
"""

from __future__ import annotations

import json
import os
import pickle
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from imagineid.data.parquet_io import write_json_atomic


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def stage(self, name: str) -> Path:
        return self.root / name

    @property
    def split_file(self) -> Path:
        return self.root / "split.json"

    @property
    def mel_stats_file(self) -> Path:
        return self.root / "mel_stats.json"

    @property
    def train_config_file(self) -> Path:
        return self.root / "train_config.json"

    @property
    def voice_bank(self) -> Path:
        return self.root / "voice_bank"

    @property
    def dataset_pointer(self) -> Path:
        return self.root / "morphable.json"

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline"

    @property
    def latents(self) -> Path:
        return self.root / "latents"

    def has_generator(self) -> bool:
        """The frame generator is complete: the adapters stage finished and its pipeline folder is whole
        (the folder is renamed into place, so model_index.json is there only with everything else)."""
        return (self.pipeline / "model_index.json").exists() and self.is_done("adapters")

    def split(self) -> dict[str, list[str]]:
        return json.loads(self.split_file.read_text())

    def is_done(self, name: str) -> bool:
        return (self.stage(name) / "done.json").exists()

    def mark_done(self, name: str, metrics: dict) -> None:
        write_json_atomic(self.stage(name) / "done.json", {"stage": name, "metrics": metrics, "time": time.time()})
        (self.stage(name) / "checkpoint.pt").unlink(missing_ok=True)

    def done_metrics(self, name: str) -> dict:
        return json.loads((self.stage(name) / "done.json").read_text())["metrics"]

    @property
    def metrics_log(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def log(self, record: dict) -> None:
        """Append one JSON line (flushed and fsynced: a killed run keeps every line it reported)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_log, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def checkpoint_path(self, name: str) -> Path:
        return self.stage(name) / "checkpoint.pt"

    def save_checkpoint(self, name: str, state: dict) -> None:
        path = self.checkpoint_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.pt")
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())  # the rename must not land before the bytes do (power loss)
        os.replace(tmp, path)

    def load_checkpoint(self, name: str) -> dict | None:
        """The stage's last checkpoint, or None. A checkpoint that does not load (torn by a crash, a full
        disk) is set aside as `checkpoint.pt.corrupt-<time>` with a logged message, and the stage
        starts over instead of crashing every resume."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            aside = path.with_name(f"checkpoint.pt.corrupt-{int(time.time())}")
            os.replace(path, aside)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            self.log({"event": "checkpoint_corrupt", "stage": name, "moved_to": aside.name, "error": first})
            print(f"{name}: checkpoint does not load ({first}); moved to {aside}, training the stage from the start")
            return None
