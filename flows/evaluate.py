"""Prefect flow `evaluate`: GEN → GEN/metrics.json + an HTML report, published as artifacts.

    python -m flows.evaluate            # work/demo/gen against work/demo/data

Deployed as `evaluate/weekly-eval` (prefect.yaml), after `generate/weekly-eval`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.evaluate import evaluate_videos


@flow(name="evaluate", log_prints=True)
def evaluate_flow(gen: str, data: str, report: str | None = None, every: int = 1) -> dict:
    """Measure every generated video and write the report.

    Args:
        gen: Folder written by the generate flow (videos/, index.parquet).
        data: Dataset folder (identity retrieval examples, emotion-embedding map).
        report: HTML report path (default: GEN/report.html).
        every: Measure every N-th frame.
    """
    report = report or str(Path(gen) / "report.html")
    result = evaluate_videos(gen, data, report, every)
    rows = [{"metric": k, "value": v} for k, v in result["summary"].items()]
    create_table_artifact(rows, key="evaluation-summary", description=f"evaluation of {gen}")
    create_markdown_artifact(
        f"# Evaluation of `{gen}`\n\nReport: [{report}](file://{Path(report).resolve()})\n\n"
        f"Metrics: `{result['metrics']}`\n",
        key="evaluation-report",
        description="where the report is",
    )
    print(f"report → {report}")
    return result


if __name__ == "__main__":
    evaluate_flow(gen="work/demo/gen", data="work/demo/data")
