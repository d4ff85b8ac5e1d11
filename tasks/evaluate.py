"""Evaluation task: measure a GEN folder; returns the metrics.json and report paths, not the numbers."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from imagineid.evaluation.evaluate import evaluate
from tasks.policy import RETRY_TRANSIENT


@task(**RETRY_TRANSIENT)
def evaluate_videos(
    gen: str,
    data: str,
    report: str,
    every: int = 1,
    syncnet: str | None = None,
    fid_inception: str | None = None,
    arcface: str | None = None,
    lmd_landmarks: str = "dlib",
) -> dict:
    """→ {"metrics": path, "report": path, "summary": the aggregate numbers (a few floats)}."""
    from imagineid.evaluation.field_metrics import FieldWeights

    weights = FieldWeights(
        *(Path(p) if p else None for p in (syncnet, fid_inception, arcface)), landmarks=lmd_landmarks
    )
    metrics = evaluate(gen, data, report, every=every, progress=False, weights=weights)
    return {"metrics": str(Path(gen) / "metrics.json"), "report": report, "summary": metrics["summary"]}
