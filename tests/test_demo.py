"""`imagineid demo --quick` end to end on the embedded defaults: every stage for real (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_ends_with_a_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagineid.cli", "demo", "--workdir", str(tmp_path), "--quick"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for step in (
        "demo 1/5 synth",
        "demo 2/5 preprocess: 8 processed",
        "demo 3/5 train",
        "demo 4/5 generate: 4 videos",
        "demo 5/5 evaluate",
    ):
        assert step in result.stdout
    report = tmp_path / "gen" / "report.html"
    assert f"report → {report}" in result.stdout.replace("\n", "") or str(report) in result.stdout
    for stage in ("identity", "content", "emotion", "ldm", "adapters"):
        assert (tmp_path / "run" / stage / "done.json").exists()
    index = pq.read_table(tmp_path / "gen" / "index.parquet").to_pylist()
    assert len(index) == 4 and all(r["status"] == "ok" for r in index)
    metrics = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    assert metrics["summary"]["videos"] == 4 and set(metrics["skipped"]) == {"lse_c", "lse_d", "fid", "fvd", "csim"}
    assert report.stat().st_size > 10_000 and "data:image/png;base64," in report.read_text()
