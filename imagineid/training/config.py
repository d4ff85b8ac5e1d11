"""Training configuration shared by every stage (one dataclass, defaults sized for the 2-core demo).

    config = TrainConfig.load("run.yaml", overrides=["adapters.steps=500", "hidden=96"])

A file (YAML or JSON: RUN/train_config.json is one) gives any subset of the fields, nested per stage;
`key=value` overrides come last. Unknown keys and values of the wrong type fail at once, naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from imagineid.settings import read_settings, typed

DISENTANGLER_STAGES = ("identity", "content", "emotion")
GENERATOR_STAGES = ("ldm", "adapters")
PROFILES = ("tiny", "sd15")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # as imagineid.precision.CHOICES


@dataclass(frozen=True)
class StageConfig:
    steps: int = 600  # optimisation steps (capped by --max-steps)
    batch_size: int = 32  # windows per step
    window: int = 32  # video frames per training window (4 mel frames each)
    lr: float = 2e-3  # AdamW learning rate (cosine decay to 10 %)
    accumulate: int = 1  # micro-batches per step on each worker (the same step in less memory)
    dropout: float | None = None  # the stage's model dropout (None: the model's own default)
    augment: bool = True  # random audio augmentation of the disentangler stages (off: a deterministic step)

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


STAGE_TYPES = {f.name: f.type for f in fields(StageConfig)}


@dataclass(frozen=True)
class TrainConfig:
    identity: StageConfig = field(default_factory=lambda: StageConfig(steps=700, window=50))
    content: StageConfig = field(default_factory=lambda: StageConfig(steps=700, window=32))
    emotion: StageConfig = field(default_factory=lambda: StageConfig(steps=700, window=50))
    ldm: StageConfig = field(default_factory=lambda: StageConfig(steps=1000, batch_size=8, window=0, lr=1e-3))
    adapters: StageConfig = field(default_factory=lambda: StageConfig(steps=3000, batch_size=8, window=0, lr=5e-4))
    image_size: int = 64  # generator frame size for the tiny profile (sd15: from the base's UNet / VAE config)
    profile: str = "tiny"  # tiny: base trained here (stage ldm) | sd15: frozen base from `base_model`
    base_model: str | None = None  # sd15: local Stable Diffusion 1.5 folder (diffusers layout)
    max_steps: int | None = None  # cap for every stage (quick runs, tests)
    checkpoint_every: int = 100  # steps between resumable checkpoints
    num_gpus: float = 1.0  # GPUs per stage task when the cluster has them (0 on a CPU-only cluster)
    workers: int = 1  # data-parallel workers per stage (Ray Train); batch_size stays the global batch
    precision: str = "auto"  # auto (bf16 or fp16 on GPUs, fp32 on CPUs) | fp32 | bf16 | fp16 (GPUs)
    seed: int = 0  # the same seed and data give the same weights (on CPU)
    hidden: int = 128  # model width
    voice_variants: int = 6  # copies of each training clip's audio in the voice bank (1 = no augmentation)
    frame_memory_mb: int = 256  # frame stages: decode every clip into memory up to this size, else stream
    cache_latents: bool = True  # adapters: the frozen VAE encodes each crop once (RUN/latents/), not every step
    loader_workers: int = 0  # DataLoader processes decoding frames beside the step (0: in the training process)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.voice_variants < 1:
            raise ValueError(f"voice_variants must be >= 1, got {self.voice_variants}")
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for name in DISENTANGLER_STAGES + GENERATOR_STAGES:
            cfg = getattr(self, name)
            if cfg.batch_size % (self.workers * cfg.accumulate):
                raise ValueError(
                    f"{name}.batch_size {cfg.batch_size} must split evenly into workers × accumulate = "
                    f"{self.workers} × {cfg.accumulate} micro-batches"
                )

    def stage(self, name: str) -> StageConfig:
        cfg = getattr(self, name)
        if self.max_steps is not None and cfg.steps > self.max_steps:
            cfg = replace(cfg, steps=self.max_steps)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """`base` (default: the defaults) with `values` laid over it; per-stage dicts merge field by field."""
        base = base or cls()
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown training setting {key!r}; known: {', '.join(known)}")
            current = getattr(base, key)
            if isinstance(current, StageConfig):
                if not isinstance(value, dict):
                    raise ValueError(f"{key} takes a mapping of {', '.join(f.name for f in fields(StageConfig))}")
                stage_fields = {f.name for f in fields(StageConfig)}
                unknown = set(value) - stage_fields
                if unknown:
                    raise ValueError(f"unknown setting(s) of stage {key}: {', '.join(sorted(unknown))}")
                changes[key] = replace(
                    current,
                    **{k: typed(f"{key}.{k}", v, getattr(current, k), STAGE_TYPES[k]) for k, v in value.items()},
                )
            else:
                changes[key] = typed(key, value, current, known[key].type)
        return replace(base, **changes)

    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: list[str] = (), base: TrainConfig | None = None
    ) -> TrainConfig:
        """The defaults (or `base`), then the file at `path`, then each `key=value` (e.g. `content.lr=1e-3`)."""
        config = base or cls()
        if path is not None:
            config = cls.from_dict(read_settings(path), config)
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--set takes key=value (e.g. adapters.steps=500), got {item!r}")
            value = yaml.safe_load(raw)  # numbers, booleans and null as YAML reads them
            head, _, leaf = key.partition(".")
            config = cls.from_dict({head: {leaf: value}} if leaf else {head: value}, config)
        return config
