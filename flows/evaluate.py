"""Prefect flow `evaluate`: GEN → GEN/metrics.json + an HTML report, published as artifacts.

    python -m flows.evaluate            # work/demo/gen against work/demo/data

Deployed as `evaluate/weekly-eval` (prefect.yaml), after `generate/weekly-eval`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.evaluate import compare_folders, evaluate_videos


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    gen: str,
    data: str,
    report: str | None = None,
    every: int = 1,
    syncnet: str | None = None,
    fid_inception: str | None = None,
    arcface: str | None = None,
    i3d: str | None = None,
    lmd_landmarks: str = "dlib",
    sources: str | None = None,
    compare: list[str] | None = None,
) -> dict:
    """Measure every generated video and write the report; with `compare`, other folders too, side by side.

    Args:
        gen: Folder written by the generate flow (videos/, index.parquet).
        data: Dataset folder (identity retrieval examples, emotion-embedding map).
        report: HTML report path (default: GEN/report.html).
        every: Measure every N-th frame.
        syncnet: syncnet_v2.model for LSE-C / LSE-D (docs/pretrained.md); None skips them.
        fid_inception: pytorch-fid's Inception weights for FID; None skips it.
        arcface: insightface ONNX or arcface_torch backbone.pth for CSIM; None reports the dlib stand-in.
        i3d: I3D weights in pytorch-i3d's layout (i3d_pretrained_400.pt) for FVD; None skips it.
        lmd_landmarks: M-LMD / F-LMD landmarks, dlib or fan.
        sources: For another method's videos (a folder of mp4s without index.parquet): the folder of
            their driving clips, matched by file name.
        compare: Other folders (any method's videos) evaluated the same way and set beside `gen` in
            GEN/comparison.html.
    """
    report = report or str(Path(gen) / "report.html")
    fields = (every, syncnet, fid_inception, arcface, i3d, lmd_landmarks, sources)
    result = evaluate_videos(gen, data, report, *fields)
    for other in compare or []:
        evaluate_videos(other, data, str(Path(other) / "report.html"), *fields)
    if compare:
        table = compare_folders(gen, [gen, *compare])
        create_markdown_artifact(table["markdown"], key="evaluation-comparison", description=f"{gen} beside others")
        result["comparison"] = table["html"]
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
