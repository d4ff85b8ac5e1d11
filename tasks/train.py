"""Training task: one stage per task run, dispatched to Ray by the library (GPU only where present)."""

from __future__ import annotations

from prefect import task

from imagineid.training.config import TrainConfig
from imagineid.training.run import train
from tasks.policy import GPU_TAG, RETRY_TRANSIENT


@task(tags=[GPU_TAG], **RETRY_TRANSIENT)
def train_stage(data: str, out: str, stage: str, config: TrainConfig, ray_address: str | None) -> dict:
    """Train (or skip, or resume) one stage; returns its validation metrics. A retry (lost Ray worker or
    node, I/O error) resumes from the stage's last checkpoint; the `gpu` tag limits concurrent stages."""
    return train(data, out, [stage], config, ray_address=ray_address, progress=False)[stage]
