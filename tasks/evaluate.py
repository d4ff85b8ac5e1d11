"""Evaluation task: measure a GEN folder; returns the metrics.json and report paths, not the numbers."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from imagineid.evaluation.evaluate import evaluate
from tasks.policy import RETRY_TRANSIENT


@task(**RETRY_TRANSIENT)
def evaluate_videos(gen: str, data: str, report: str, every: int = 1) -> dict:
    """→ {"metrics": path, "report": path, "summary": the aggregate numbers (a few floats)}."""
    metrics = evaluate(gen, data, report, every=every, progress=False)
    return {"metrics": str(Path(gen) / "metrics.json"), "report": report, "summary": metrics["summary"]}
