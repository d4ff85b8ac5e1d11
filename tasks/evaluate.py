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
    i3d: str | None = None,
    lmd_landmarks: str = "dlib",
    sources: str | None = None,
) -> dict:
    """→ {"metrics": path, "report": path, "summary": the aggregate numbers (a few floats)}; `sources`:
    the driving clips of another method's videos (a GEN folder without index.parquet)."""
    from imagineid.evaluation.field_metrics import FieldWeights

    weights = FieldWeights(
        *(Path(p) if p else None for p in (syncnet, fid_inception, arcface, i3d)), landmarks=lmd_landmarks
    )
    metrics = evaluate(gen, data, report, every=every, progress=False, weights=weights, sources=sources)
    return {"metrics": str(Path(gen) / "metrics.json"), "report": report, "summary": metrics["summary"]}


@task(**RETRY_TRANSIENT)
def compare_folders(gen: str, folders: list[str]) -> dict:
    """The evaluated folders side by side → {"json": path, "html": path, "markdown": the table}."""
    from imagineid.evaluation.compare import compare, markdown, write_comparison

    named: dict[str, Path] = {}
    for folder in folders:
        named[Path(folder).name if Path(folder).name not in named else folder] = Path(folder)
    table = compare(named)
    json_path, html_path = write_comparison(Path(gen) / "comparison", table)
    return {"json": str(json_path), "html": str(html_path), "markdown": markdown(table)}
