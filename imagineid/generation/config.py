"""The generate job's settings and its unit of work (one audio file and the seeds still to make)."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagineid.errors import SettingsError
from imagineid.pipelines.pipeline_imagineid import DEFAULT_STRENGTH
from imagineid.precision import CHOICES as PRECISIONS


@dataclass
class GenerateConfig:
    seeds: int = 1  # videos per audio, seeds 0..seeds-1
    batch_size: int = 8  # continuous-batching slots (1 = the per-clip loop)
    steps: int = 20  # DDIM steps per frame
    guidance: float = 2.0  # classifier-free guidance scale
    strength: float = DEFAULT_STRENGTH  # frames 2..T start from frame 1's latent noised this far (1 = pure noise)
    identity_from: str | None = None  # factor swap: identity of every video from this audio
    emotion_from: str | None = None  # factor swap: emotion of every video from this audio
    crf: int = 18  # libx264 quality of the output videos
    first_frame_retries: int = 7  # redraw frame 1 (next noise of the same seed) while dlib finds no face; 0 = off
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto: fp16 on GPUs, bf16 on native-bf16 CPUs for B ≥ 8, else fp32

    def __post_init__(self) -> None:
        """Checked here, so the CLI, the flow and a deployment's parameters fail before any model loads."""
        for name in ("seeds", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.strength <= 1.0:
            raise SettingsError(f"strength must be in (0, 1], got {self.strength}")
        if self.first_frame_retries < 0:
            raise SettingsError(f"first_frame_retries must be 0 or more, got {self.first_frame_retries}")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class Source:
    """One content audio and the seeds still to generate for it."""

    path: str
    stem: str
    seeds: list[int]
    keys: list[str] = field(default_factory=list)
    sha256: str | None = None  # of the audio file: a changed file is regenerated


OUTPUT_SETTINGS = (
    "steps",
    "guidance",
    "strength",
    "crf",
    "first_frame_retries",
    "identity_from",
    "emotion_from",
    "precision",
)
