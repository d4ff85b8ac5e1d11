"""What every disentangler stage needs: the dataset split, mel statistics, the morphable model, loaders.

The split and the mel statistics are fixed in the run folder the first time, so a resumed or later
stage sees exactly the same data normalisation as the stages before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from imagineid.audio.features import mel_envelope
from imagineid.data.clips import (
    ClipSample,
    MelStats,
    iter_clips,
    mel_stats,
    split_clips,
)
from imagineid.data.morphable import current_model
from imagineid.data.parquet_io import write_json_atomic
from imagineid.data.store import Store
from imagineid.errors import ImagineIDError
from imagineid.face.morphable import PCAMorphableModel
from imagineid.precision import pick_device
from imagineid.runs.assets import save_run_assets
from imagineid.runs.folder import RunDir
from imagineid.training.config import StageConfig, TrainConfig
from imagineid.training.data import WindowDataset
from imagineid.training.loop import fit
from imagineid.training.replicas import Replica
from imagineid.training.voice_bank import VoiceBank


@dataclass
class StageContext:
    data: Path
    run: RunDir
    config: TrainConfig
    split: dict[str, list[str]]
    stats: MelStats
    morphable: PCAMorphableModel
    bank: VoiceBank | None = None
    device: torch.device = field(default_factory=pick_device)
    replica: Replica = field(default_factory=Replica.current)
    _val: list[ClipSample] | None = None

    @classmethod
    def prepare(cls, data: str | Path, run: RunDir, config: TrainConfig, progress: bool = False) -> StageContext:
        """The stage's inputs; the first time, also written into RUN. With several workers rank 0 writes
        them while the others wait, then the others read what it wrote."""
        replica = Replica.current()
        if replica.is_main:
            ctx = cls._prepare(data, run, config, progress)
        replica.barrier()
        return ctx if replica.is_main else cls._prepare(data, run, config, False)

    @classmethod
    def _prepare(cls, data: str | Path, run: RunDir, config: TrainConfig, progress: bool) -> StageContext:
        data = Path(data)
        morphable = current_model(Store(data))
        if morphable is None or not any((data / "clips").glob("*.parquet")):
            raise ImagineIDError(
                f"{data} holds no preprocessed clips; run `imagineid preprocess ... --out {data}` first"
            )
        split_path, stats_path = run.split_file, run.mel_stats_file
        if split_path.exists():
            split = json.loads(split_path.read_text())
        else:
            split = split_clips(data)
            if not split["train"] or not split["val"]:
                raise ImagineIDError(
                    f"need clips of at least two speakers to hold one out, got {len(split['train'])} train / "
                    f"{len(split['val'])} validation clips"
                )
            write_json_atomic(split_path, split)
        if stats_path.exists():
            stats = MelStats.load(stats_path)
        else:
            stats = mel_stats(data, split["train"])
            stats.save(stats_path)
        if Replica.current().is_main:
            write_json_atomic(run.dataset_pointer, {"version": morphable.version, "data": str(data)})
            save_run_assets(run.root, morphable, data, split["train"])  # generation then needs no dataset
        bank = VoiceBank.build(
            data,
            run.voice_bank,
            split["train"],
            split["val"],
            config.voice_variants,
            seed=config.seed,
            progress=progress,
        )
        return cls(data=data, run=run, config=config, split=split, stats=stats, morphable=morphable, bank=bank)

    @property
    def n_shape(self) -> int:
        return self.morphable.n_shape

    @property
    def n_mouth(self) -> int:
        return self.morphable.n_mouth

    @property
    def n_expression(self) -> int:
        return self.morphable.n_expression

    def loader(self, stage: StageConfig) -> torch.utils.data.DataLoader:
        dataset = WindowDataset(
            self.data, self.split["train"], window=stage.window, stats=self.stats, seed=self.config.seed, bank=self.bank
        )
        return torch.utils.data.DataLoader(dataset, batch_size=stage.batch_size, num_workers=0)

    def fit(
        self,
        stage: str,
        model: torch.nn.Module,
        loader,
        step: Callable[[dict], tuple[torch.Tensor, dict]],
        cfg: StageConfig,
        progress: bool,
    ) -> dict:
        """The shared loop (`loop.fit`) with this run's folder, checkpoint interval and precision."""
        every = self.config.checkpoint_every
        return fit(stage, model, loader, step, cfg, self.run, every, progress, self.config.precision)

    def val_clips(self) -> list[ClipSample]:
        if self._val is None:
            self._val = list(iter_clips(self.data, self.split["val"], self.bank))
        return self._val

    def mel(self, sample: ClipSample) -> torch.Tensor:
        """Normalised full-clip mel (1, 4T, 80) on the device."""
        return torch.from_numpy(self.stats.normalize(sample.mel)).float()[None].to(self.device)

    def envelope(self, sample: ClipSample) -> torch.Tensor:
        """The clip's amplitude envelope (1, 4T, 2) on the device: the content stage's second input."""
        return torch.from_numpy(mel_envelope(sample.mel))[None].to(self.device)

    def level(self, sample: ClipSample) -> torch.Tensor:
        """The clip's level (1, 1, 80) on the device: added to `mel` for the emotion stage."""
        return torch.from_numpy(self.stats.level(sample.mel))[None, None].to(self.device)

    def voice(self, sample: ClipSample) -> torch.Tensor | None:
        """The clip's voice vector (1, VOICE_DIM) on the device, or None without a voice bank."""
        return None if sample.voice is None else torch.from_numpy(sample.voice)[None].to(self.device)
