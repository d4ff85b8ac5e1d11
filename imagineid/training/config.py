"""Training configuration shared by every stage (one dataclass, defaults sized for the 2-core demo)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DISENTANGLER_STAGES = ("identity", "content", "emotion")
GENERATOR_STAGES = ("ldm", "adapters")
PROFILES = ("tiny", "sd15")


@dataclass(frozen=True)
class StageConfig:
    steps: int = 600  # optimisation steps (capped by --max-steps)
    batch_size: int = 32  # windows per step
    window: int = 32  # video frames per training window (4 mel frames each)
    lr: float = 2e-3  # AdamW learning rate (cosine decay to 10 %)


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
    seed: int = 0  # the same seed and data give the same weights (on CPU)
    hidden: int = 128  # model width
    voice_variants: int = 6  # copies of each training clip's audio in the voice bank (1 = no augmentation)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.voice_variants < 1:
            raise ValueError(f"voice_variants must be >= 1, got {self.voice_variants}")

    def stage(self, name: str) -> StageConfig:
        cfg = getattr(self, name)
        if self.max_steps is not None and cfg.steps > self.max_steps:
            cfg = StageConfig(self.max_steps, cfg.batch_size, cfg.window, cfg.lr)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)
