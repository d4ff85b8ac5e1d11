"""Prefect flows run for real on a temporary local API (prefect_test_harness)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from conftest import copy_videos


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_preprocess_flow_processes_good_clips_and_lists_rejections(small_corpus: Path, bad_inputs: dict, tmp_path: Path) -> None:
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
