"""Prefect flows run for real on a temporary local API (prefect_test_harness)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import copy_videos, damaged_copy
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_preprocess_flow_processes_good_clips_and_lists_rejections(
    small_corpus: Path, bad_inputs: dict, tmp_path: Path
) -> None:
    from flows.preprocess import preprocess_flow

    src = tmp_path / "src"
    copy_videos(small_corpus, src, [p.name for p in sorted((small_corpus / "videos").glob("*.mp4"))[:2]])
    summary = preprocess_flow(sources=[str(src), str(bad_inputs["no_audio"])], out=str(tmp_path / "d"), workers=1)
    assert summary["sources"] == 3 and summary["processed"] == 2 and summary["rejected"] == 1
    assert len(list((tmp_path / "d" / "clips").glob("*.parquet"))) == 2
    again = preprocess_flow(sources=[str(src), str(bad_inputs["no_audio"])], out=str(tmp_path / "d"), workers=1)
    assert again["skipped"] == 3 and again["processed"] == 0


def test_train_flow_runs_stages_as_ray_tasks_and_skips_them_on_rerun(small_corpus: Path, tmp_path: Path) -> None:
    import ray

    from flows.train import train_flow
    from imagineid.preprocessing import preprocess

    data = tmp_path / "d"
    preprocess([small_corpus / "videos"], data, workers=1, progress=False)
    try:
        results = train_flow(data=str(data), out=str(tmp_path / "run"), max_steps=5)
        again = train_flow(data=str(data), out=str(tmp_path / "run"), max_steps=5)
    finally:
        ray.shutdown()
    assert set(results) == {"identity", "content", "emotion"}
    assert "gender_accuracy" in results["identity"] and "mouth_opening_correlation" in results["content"]
    assert all(m.get("skipped") for m in again.values())
    assert (tmp_path / "run" / "emotion" / "done.json").exists()
    progress = [(a["description"], a["data"]) for a in _artifacts(type_="progress")]
    for stage in ("identity", "content", "emotion"):  # a progress artifact per stage task run, each at 100 %
        values = [v for d, v in progress if d.startswith(f"train {stage} → ")]
        assert values == [100.0, 100.0]  # trained, then skipped as done


def _artifacts(key: str | None = None, type_: str | None = None, limit: int = 50) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType
    from prefect.client.schemas.sorting import ArtifactSort

    where = ArtifactFilter(
        key=ArtifactFilterKey(any_=[key]) if key else None, type=ArtifactFilterType(any_=[type_]) if type_ else None
    )
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=where, sort=ArtifactSort.CREATED_DESC, limit=limit)
    return [a.model_dump() for a in found]


def _latest_artifact(key: str) -> dict:
    found = _artifacts(key=key, limit=1)
    assert found, f"no {key} artifact"
    return found[0]


def test_generate_flow_on_ray_then_evaluate_flow_publish_their_results(
    trained_run: Path, preprocessed: Path, small_corpus: Path, tmp_path: Path
) -> None:
    """The deployments' path: generation on Ray (the default, one CPU worker actor here), then evaluation."""
    import json

    import pyarrow.parquet as pq
    import ray

    from flows.evaluate import evaluate_flow
    from flows.generate import generate_flow

    audio = sorted((small_corpus / "videos").glob("*.mp4"))[0]
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF....WAVEfmt not really")
    gen = tmp_path / "gen"
    try:
        summary = generate_flow(
            run=str(trained_run),
            audio=[str(audio), str(bad)],
            out=str(gen),
            seeds=1,
            steps=2,
            batch_size=2,
            use_ray=True,
        )
        again = generate_flow(
            run=str(trained_run), audio=[str(audio)], out=str(gen), seeds=1, steps=2, batch_size=2, use_ray=True
        )
    finally:
        ray.shutdown()
    assert (summary["ok"], summary["failed"]) == (1, 1) and (again["ok"], again["skipped"]) == (0, 1)
    rows = {r["status"]: r for r in pq.read_table(gen / "index.parquet").to_pylist()}
    assert (gen / rows["ok"]["video"]).stat().st_size > 1000 and "noise.wav" in rows["failed"]["audio"]
    table = _latest_artifact("generate-summary")
    assert table["type"] == "markdown" and "noise.wav" in table["data"]

    result = evaluate_flow(gen=str(gen), data=str(preprocessed))
    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics["summary"]["videos"] == 1 and metrics["videos"][0]["frames"] == rows["ok"]["frames"]
    assert Path(result["report"]).stat().st_size > 10_000
    evaluation = _latest_artifact("evaluation-summary")
    assert evaluation["type"] == "table" and "face_detection_rate" in json.dumps(evaluation["data"])


def test_a_generation_worker_that_raises_puts_its_traceback_in_the_flow_log(
    trained_run: Path, small_corpus: Path, tmp_path: Path
) -> None:
    import ray
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from flows.generate import generate_flow

    run = damaged_copy(trained_run, tmp_path / "run")
    audio = sorted((small_corpus / "videos").glob("*.mp4"))[0]
    try:
        state = generate_flow(
            run=str(run),
            audio=[str(audio)],
            out=str(tmp_path / "gen"),
            seeds=1,
            steps=2,
            use_ray=True,
            return_state=True,
        )
    finally:
        ray.shutdown()
    assert state.is_failed()
    APILogWorker.drain_all(timeout=10)
    flow_run = LogFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        text = "\n".join(entry.message for entry in client.read_logs(log_filter=LogFilter(flow_run_id=flow_run)))
    assert "every generation worker failed" in text
    assert "in load_pipeline" in text and "OSError: Unable to load weights" in text  # the worker's own frames


@pytest.mark.slow
def test_demo_flow_runs_every_flow_as_a_subflow_and_ends_with_a_report(tmp_path: Path) -> None:
    import ray

    from flows.demo import demo_flow

    try:
        report = Path(demo_flow(workdir=str(tmp_path), quick=True))
    finally:
        ray.shutdown()
    assert report == tmp_path / "gen" / "report.html" and report.stat().st_size > 10_000
    for stage in ("identity", "content", "emotion", "ldm", "adapters"):
        assert (tmp_path / "run" / stage / "done.json").exists()
    assert json_rows(tmp_path / "gen" / "index.parquet") == 4 and (tmp_path / "gen" / "metrics.json").exists()


def json_rows(index: Path) -> int:
    import pyarrow.parquet as pq

    return sum(r["status"] == "ok" for r in pq.read_table(index).to_pylist())
