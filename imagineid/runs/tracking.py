"""TensorBoard event files beside RUN/metrics.jsonl: what a user watching a long run looks at.

    tracker = StageTracker(run, "adapters", start_step=resumed_at)
    tracker.scalars(step, {"loss": 0.12, "diffusion": 0.1})
    tracker.images(step, "validation/frames", frames)   # (N, 3, H, W) in [-1, 1]
    tracker.close()

    tensorboard --logdir RUN/tensorboard

metrics.jsonl stays the record the project reads back (done.json, reports); the event files are for
people: per-step losses, each stage's validation figures and, for the adapters stage, sample frames.
One folder per stage; a resumed stage purges events logged after its checkpoint, so a step killed and
trained again is shown once.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from imagineid.runs.folder import RunDir

LOG_EVERY = 10  # steps between scalar points: dense enough for a curve, small next to the step itself


class StageTracker:
    """One stage's TensorBoard writer (RUN/tensorboard/<stage>/)."""

    def __init__(self, run: RunDir, stage: str, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # the tensorboard package: a core dependency

        self.folder = run.tensorboard / stage
        self.writer = SummaryWriter(str(self.folder), purge_step=start_step if start_step > 0 else None)

    def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
        """Finite numbers of `values` as `<prefix>/<name>` at `step`; anything else is left out."""
        for name, value in values.items():
            if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def images(self, step: int, tag: str, frames: torch.Tensor) -> None:
        """frames (N, 3, H, W) in [-1, 1] → one image grid row under `tag`."""
        grid = torch.cat(list(((frames.detach().float().cpu() + 1) / 2).clamp(0, 1)), dim=-1)  # (3, H, N·W)
        self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
