"""Disentangler training: stages in order, frozen earlier stages, skip / resume, listen (issue 4)."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from imagineid.media import load_audio, write_audio
from imagineid.training.config import TrainConfig
from imagineid.training.run import train


@pytest.fixture(scope="module")
def data(preprocessed: Path) -> Path:
    """The session's preprocessed small corpus (read only here)."""
    return preprocessed


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory) -> tuple[Path, dict, dict]:
    """Identity alone first (its weights hashed), then content and emotion on top of it."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(max_steps=15, checkpoint_every=5)
    train(data, out, "identity", config, use_ray=False, progress=False)
    before = _digest(out / "identity")
    results = train(data, out, "identity,content,emotion", config, use_ray=False, progress=False)
    return out, before, results


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def imagineid(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imagineid.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_stages_write_weights_config_and_metrics(run) -> None:
    out, _, results = run
    for stage in ("identity", "content", "emotion"):
        assert (out / stage / "config.json").exists() and list((out / stage).glob("*.safetensors"))
        assert (out / stage / "done.json").exists() and not (out / stage / "checkpoint.pt").exists()
    assert results["identity"]["skipped"] is True
    gender = [results["identity"][k] for k in ("gender_accuracy", "gender_accuracy_children")]
    assert all(0.0 <= g <= 1.0 or math.isnan(g) for g in gender) and any(0.0 <= g <= 1.0 for g in gender)
    assert np.isfinite(results["content"]["mouth_opening_correlation"])
    assert (out / results["emotion"]["emotion_plot"]).stat().st_size > 1000
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records if r.get("event") == "validation"} == {"identity", "content", "emotion"}


def _tensorboard(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag → [(step, value)] over every event file of one stage's TensorBoard folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            points.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return points


def test_each_stage_writes_tensorboard_losses_and_validation(run) -> None:
    out, _, results = run
    for stage in ("identity", "content", "emotion"):
        points = _tensorboard(out / "tensorboard" / stage)
        assert [step for step, _ in points["train/loss"]] == [10, 15]  # every LOG_EVERY steps and the last
        assert all(np.isfinite(v) for _, v in points["train/loss"]) and "train/lr" in points
    points = _tensorboard(out / "tensorboard" / "content")
    assert points["validation/mouth_opening_correlation"][0][1] == pytest.approx(
        results["content"]["mouth_opening_correlation"], abs=1e-6
    )


def test_stage_one_weights_are_bit_identical_after_later_stages(run) -> None:
    out, before, _ = run
    assert before and _digest(out / "identity") == before


def test_validation_speakers_are_held_out(run, data: Path) -> None:
    out, _, _ = run
    import pyarrow.parquet as pq

    split = json.loads((out / "split.json").read_text())
    speakers = {r["clip_id"]: r["speaker_id"] for r in pq.read_table(data / "clips").to_pylist()}
    assert split["val"] and split["train"]
    assert not {speakers[c] for c in split["val"]} & {speakers[c] for c in split["train"]}


def test_sigkill_during_content_then_rerun_resumes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = ["train", str(data), "--out", str(out), "--no-ray", "--max-steps", "60", "--checkpoint-every", "20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagineid.cli", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if log.exists() and any(
            '"checkpoint"' in line and '"content"' in line for line in log.read_text().splitlines()
        ):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "identity" / "done.json").exists() and not (out / "content" / "done.json").exists()
    identity_done = (out / "identity" / "done.json").stat().st_mtime_ns
    result = imagineid(*cmd)
    assert result.returncode == 0, result.stderr
    assert "identity already trained" in result.stdout
    records = [json.loads(line) for line in log.read_text().splitlines()]
    resumed = [r for r in records if r.get("event") == "resumed"]
    assert resumed and resumed[0]["stage"] == "content" and resumed[0]["step"] >= 20
    assert (out / "identity" / "done.json").stat().st_mtime_ns == identity_done
    assert (out / "emotion" / "done.json").exists()
    steps = [step for step, _ in _tensorboard(out / "tensorboard" / "content")["train/loss"]]
    assert steps == list(range(10, 61, 10))  # steps logged after the checkpoint, then killed, are shown once


def test_listen_prints_one_json_object_per_input(run, data: Path, small_corpus: Path, tmp_path: Path) -> None:
    out, _, _ = run
    samples = load_audio(sorted((small_corpus / "videos").glob("*.mp4"))[0])
    write_audio(tmp_path / "a.wav", samples)
    write_audio(tmp_path / "b.mp3", samples)
    (tmp_path / "notes.txt").write_text("not audio")
    result = imagineid(
        "listen",
        str(out),
        str(tmp_path / "a.wav"),
        str(tmp_path / "b.mp3"),
        str(tmp_path / "notes.txt"),
        "--json",
        "--retrieve",
        str(data),
        "--top-k",
        "2",
    )
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(e["audio"]).name for e in entries] == ["a.wav", "b.mp3", "notes.txt"]
    for entry in entries[:2]:
        assert entry["error"] is None
        assert set(entry["gender"]) == {"male", "female"} and abs(sum(entry["gender"].values()) - 1) < 1e-5
        assert set(entry["age"]) == {"child", "adult", "elder"}
        assert set(entry["emotion"]) == {"neutral", "happy", "sad", "angry"}
        assert len(entry["retrieved"]) == 2 and entry["retrieved"][0]["clip_id"]
        measured = entry["measured"]  # what the voice front end measured, to see why it heard what it heard
        assert abs(measured["duration_s"] - len(samples) / 16000) < 0.05 and 0 < measured["voiced_fraction"] <= 1
        assert 60 < measured["f0_median_hz"] < 500 and measured["f0_p10_hz"] <= measured["f0_p90_hz"]
        assert len(measured["formants_hz"]) == 4
    assert abs(entries[0]["measured"]["f0_median_hz"] - entries[1]["measured"]["f0_median_hz"]) < 5  # wav vs mp3
    assert entries[2]["error"] and "not a readable media file" in entries[2]["error"]


def test_listen_reports_silent_and_too_short_audio_and_goes_on(run, small_corpus: Path, tmp_path: Path) -> None:
    out, _, _ = run
    write_audio(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    write_audio(tmp_path / "short.wav", (0.3 * np.sin(np.arange(1600) / 5)).astype(np.float32))  # 0.1 s
    write_audio(tmp_path / "speech.wav", load_audio(sorted((small_corpus / "videos").glob("*.mp4"))[0]))
    result = imagineid("listen", str(out), str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    entries = {Path(e["audio"]).name: e for e in map(json.loads, result.stdout.splitlines())}
    assert "silent" in entries["silent.wav"]["error"] and entries["silent.wav"]["gender"] is None
    assert "short" in entries["short.wav"]["error"] and entries["short.wav"]["gender"] is None
    assert entries["speech.wav"]["error"] is None and entries["speech.wav"]["gender"]


def test_a_corrupt_checkpoint_is_set_aside_and_the_stage_starts_over(tmp_path: Path) -> None:
    from imagineid.runs.folder import RunDir

    rd = RunDir(tmp_path / "run")
    rd.save_checkpoint("content", {"step": 7, "weights": {"w": torch.ones(3)}})
    assert rd.load_checkpoint("content")["step"] == 7
    rd.checkpoint_path("content").write_bytes(rd.checkpoint_path("content").read_bytes()[:40])  # torn write
    assert rd.load_checkpoint("content") is None
    aside = list((tmp_path / "run" / "content").glob("checkpoint.pt.corrupt-*"))
    assert len(aside) == 1 and not rd.checkpoint_path("content").exists()
    events = [json.loads(line) for line in rd.metrics_log.read_text().splitlines()]
    assert events[-1]["event"] == "checkpoint_corrupt" and events[-1]["moved_to"] == aside[0].name


def test_config_file_and_set_round_trip_through_the_run(data: Path, tmp_path: Path) -> None:
    """--config / --set resolve into RUN/train_config.json; training again from that file alone gives the
    same weights (CPU training is deterministic), and a bad setting fails in one line before any work."""
    (tmp_path / "run.yaml").write_text("identity:\n  steps: 4\n  lr: 1e-3\nvoice_variants: 1\n")
    first = imagineid(
        "train",
        str(data),
        "--out",
        str(tmp_path / "a"),
        "--stages",
        "identity",
        "--no-ray",
        "--config",
        str(tmp_path / "run.yaml"),
        "--set",
        "hidden=32",
        "--set",
        "identity.batch_size=8",
        "--checkpoint-every",
        "2",
    )
    assert first.returncode == 0, first.stderr[-2000:]
    resolved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert resolved["identity"] == {
        "steps": 4,
        "batch_size": 8,
        "window": 50,
        "lr": 1e-3,
        "accumulate": 1,
        "dropout": None,
        "augment": True,
    }
    assert (resolved["hidden"], resolved["voice_variants"], resolved["checkpoint_every"]) == (32, 1, 2)
    again = imagineid(
        "train",
        str(data),
        "--out",
        str(tmp_path / "b"),
        "--stages",
        "identity",
        "--no-ray",
        "--config",
        str(tmp_path / "a" / "train_config.json"),
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "train_config.json").read_text()) == resolved
    assert _digest(tmp_path / "a" / "identity") == _digest(tmp_path / "b" / "identity")

    bad = imagineid("train", str(data), "--out", str(tmp_path / "c"), "--set", "identity.stpes=3")
    assert bad.returncode == 1 and "unknown setting(s) of stage identity: stpes" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "c").exists()
