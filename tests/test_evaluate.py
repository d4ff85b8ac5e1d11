"""Evaluate job (issue 7): metrics on real generated videos, determinism, the self-contained report."""

from __future__ import annotations

import base64
import shutil
import subprocess
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagineid.evaluation.evaluate import SKIPPED, evaluate
from imagineid.evaluation.video_metrics import lagged_correlation
from imagineid.generation.run import GenerateConfig, generate


@pytest.fixture(scope="module")
def generated(trained_run: Path, small_corpus: Path, tmp_path_factory) -> Path:
    """Two synthetic clips (ground truth next to them) × 2 seeds."""
    gen = tmp_path_factory.mktemp("gen")
    videos = sorted((small_corpus / "videos").glob("*.mp4"))[:2]
    summary = generate(trained_run, videos, gen, GenerateConfig(seeds=2, steps=2, batch_size=4, first_frame_retries=0), use_ray=False,
                       progress=False)
    assert summary["ok"] == 4
    return gen


def test_lagged_correlation_finds_the_shift() -> None:
    rng = np.random.default_rng(0)
    sound = rng.normal(size=200)
    mouth = np.roll(sound, 2)  # the mouth follows the sound by 2 frames
    r0, best, lag = lagged_correlation(mouth, sound)
    assert lag == 2 and best > 0.99 and r0 < 0.3
    with_gaps = mouth.copy()
    with_gaps[::7] = np.nan  # frames without a detected face are ignored, not zeros
    assert lagged_correlation(with_gaps, sound)[2] == 2


def test_evaluate_writes_every_metric_deterministically(generated: Path, preprocessed: Path) -> None:
    first = evaluate(generated, preprocessed, generated / "report.html", progress=False)
    again = evaluate(generated, preprocessed, None, progress=False)
    assert first == again == json.loads((generated / "metrics.json").read_text())
    summary = first["summary"]
    assert summary["videos"] == 4 and summary["failed_in_index"] == 0
    for name in ("face_detection_rate", "landmark_jitter", "gender_agrees", "emotion_agrees"):
        assert name in summary
    assert 0.0 <= summary["face_detection_rate"] <= 1.0
    assert summary["gender_agrees"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 videos with synthetic ground truth
    assert first["skipped"] == SKIPPED and all("skipped" in reason for reason in SKIPPED.values())
    for video in first["videos"]:
        assert video["frames_checked"] == video["frames"] == len(video["mouth_opening"])
        assert set(video) >= {"identity_distance_to_frame1", "lipsync_audio_r", "lipsync_mesh_best_lag",
                              "background_psnr_db", "truth_landmark_distance"}


def test_report_is_self_contained_and_every_image_decodes(generated: Path, preprocessed: Path) -> None:
    evaluate(generated, preprocessed, generated / "report.html", progress=False)
    page = (generated / "report.html").read_text()
    for section in ("Summary", "Metric distributions", "Mouth opening vs audio", "Identity retrieval",
                    "Emotion-embedding map", "Sample frames", "Per video"):
        assert f">{section}<" in page, section
    sources = re.findall(r"src=['\"]([^'\"]+)['\"]", page)
    assert len(sources) >= 10 and all(s.startswith("data:image/png;base64,") for s in sources)
    for src in sources:
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.width > 0 and image.height > 0
    assert "skipped: needs SyncNet weights" in page


def test_evaluate_refuses_a_folder_without_an_index(tmp_path: Path, preprocessed: Path) -> None:
    from imagineid.errors import ImagineIDError

    with pytest.raises(ImagineIDError, match="no index.parquet"):
        evaluate(tmp_path, preprocessed, progress=False)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(generated: Path, preprocessed: Path, tmp_path: Path) -> None:
    report = generated / "report.html"
    if not report.exists():
        evaluate(generated, preprocessed, report, progress=False)
    shot = tmp_path / "report.png"
    done = subprocess.run(["scripts/screenshot_report.sh", str(report), str(shot)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-1000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] >= 1000 and image.std() > 10  # a rendered page, not a blank one
