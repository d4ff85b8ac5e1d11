"""`imagineid demo --quick` end to end on the embedded defaults (slow: about a minute here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_demo_runs_every_built_stage(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "imagineid.cli", "demo", "--workdir", str(tmp_path), "--quick"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    for step in ("demo 1/5 synth", "demo 2/5 preprocess: 8 processed", "demo 3/5 train"):
        assert step in result.stdout
    assert len(list((tmp_path / "synth" / "videos").glob("*.mp4"))) == 8
    assert len(list((tmp_path / "data" / "clips").glob("*.parquet"))) == 8
    for stage in ("identity", "content", "emotion"):
        assert (tmp_path / "run" / stage / "done.json").exists()
