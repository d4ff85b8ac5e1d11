"""Training task: one stage per task run, dispatched to Ray by the library (GPU only where present)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from imagineid.training.config import TrainConfig
from imagineid.training.run import train
from tasks.policy import GPU_TAG, RETRY_TRANSIENT


@task(tags=[GPU_TAG], **RETRY_TRANSIENT)
def train_stage(data: str, out: str, stage: str, config: TrainConfig, ray_address: str | None) -> dict:
    """Train (or skip, or resume) one stage; returns its validation metrics. A retry (lost Ray worker or
    node, I/O error) resumes from the stage's last checkpoint; the `gpu` tag limits concurrent stages.
    The stage's steps go to a Prefect progress artifact."""
    artifact = create_progress_artifact(0.0, description=f"train {stage} → {out}: steps")

    def report(_stage: str, step: int, steps: int) -> None:
        update_progress_artifact(artifact, 100.0 * step / max(steps, 1))

    return train(data, out, [stage], config, ray_address=ray_address, progress=False, on_progress=report)[stage]
