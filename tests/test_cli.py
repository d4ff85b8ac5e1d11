"""The command-line contract (docs/architecture.md §6) as a user meets it: a real subprocess per call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imagineid.data.layouts import DATASETS
from imagineid.evaluation.metric_info import LANDMARK_BACKENDS
from imagineid.precision import CHOICES as PRECISIONS
from imagineid.preprocessing.config import DETECTORS, MORPHABLES
from imagineid.training.config import PROFILES

CONTRACT = ("synth", "preprocess", "train", "listen", "generate", "evaluate", "demo")


def imagineid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagineid.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_contract_commands() -> None:
    result = imagineid("--help")
    assert result.returncode == 0
    for command in CONTRACT:
        assert command in result.stdout


@pytest.mark.parametrize(
    "command, option, choices",
    [
        ("preprocess", "--detector", DETECTORS),
        ("preprocess", "--morphable", MORPHABLES),
        ("preprocess", "--dataset", DATASETS),
        ("train", "--profile", PROFILES),
        ("generate", "--precision", PRECISIONS),
        ("evaluate", "--lmd-landmarks", LANDMARK_BACKENDS),
    ],
)
def test_choice_options_list_their_values_and_refuse_others(tmp_path, command, option, choices) -> None:
    """--help shows each option's values (taken from the config's own tuple), and a wrong one is refused
    before any work, naming the values."""
    shown = subprocess.run(
        [sys.executable, "-m", "imagineid.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    ).stdout
    assert "<" + "|".join(choices) + ">" in shown
    args = {
        "preprocess": ("x.mp4", "--out", str(tmp_path / "d")),
        "train": ("d", "--out", str(tmp_path / "r")),
        "evaluate": (str(tmp_path / "g"), "--data", str(tmp_path / "d")),
    }
    result = imagineid(command, *args.get(command, ("run", "a.wav", "--out", str(tmp_path / "g"))), option, "nope")
    assert result.returncode == 2
    assert "nope" in result.stderr and all(repr(c) in result.stderr.replace("\n", "") for c in choices[:2])
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "args, reason",
    [
        (("generate", "no_run", "a.wav", "--out", "g", "--no-ray"), "has no trained frame generator"),
        (("evaluate", "no_gen", "--data", "d"), "no_gen does not exist"),
    ],
)
def test_nothing_to_do_gives_one_line_and_a_non_zero_exit(tmp_path, args: tuple[str, ...], reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagineid.cli", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 1
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_synth_writes_a_corpus_and_prints_a_summary(tmp_path) -> None:
    out = tmp_path / "s"
    result = imagineid(
        "synth", str(out), "--speakers", "1", "--clips-per-speaker", "1", "--seconds", "1", "--size", "128"
    )
    assert result.returncode == 0, result.stderr
    assert "1 clips of 1 speakers" in result.stdout
    assert len(list((out / "videos").glob("*.mp4"))) == 1 and (out / "metadata.parquet").exists()


def test_preprocess_exits_zero_with_rejections_and_one_line_when_nothing_exists(
    small_corpus, bad_inputs, tmp_path
) -> None:
    folder = next(iter(bad_inputs.values())).parent
    good = sorted((small_corpus / "videos").glob("*.mp4"))[:2]
    result = imagineid("preprocess", str(folder), *map(str, good), "--out", str(tmp_path / "d"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert f"{len(bad_inputs) + 2} sources: 2 processed, {len(bad_inputs)} rejected" in result.stdout
    assert "rejected" in result.stdout and "no audio stream" in result.stdout
    missing = imagineid("preprocess", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "d2"))
    assert missing.returncode != 0 and "no such file or folder" in missing.stderr


def test_preprocess_and_generate_read_a_settings_file_that_given_options_override(
    small_corpus, trained_run, tmp_path
) -> None:
    import json

    from imagineid.data.store import Store

    settings = tmp_path / "preprocess.yaml"
    settings.write_text("crop_size: 96\nmin_face_px: 20\n")
    video = sorted((small_corpus / "videos").glob("*.mp4"))[0]
    data = tmp_path / "d"
    args = ("preprocess", str(video), "--out", str(data), "--workers", "1", "--config", str(settings))
    result = imagineid(*args, "--crop-size", "80")
    assert result.returncode == 0, result.stderr
    config = json.loads((data / "manifest.json").read_text())["config"]
    assert Store(data).read_table("clips", ["crop_size"]).to_pylist()[0]["crop_size"] == 80
    assert (
        config["crop_size"] == 80 and config["min_face_px"] == 20.0
    )  # the option over the file, the file over the default
    for text, named in (
        ("detector: foo\n", "detector"),
        ("crop_sise: 96\n", "crop_sise"),
        ("crop_size: big\n", "crop_size"),
    ):
        settings.write_text(text)  # checked before any source is read: one line naming the setting
        bad = imagineid("preprocess", str(video), "--out", str(tmp_path / "d2"), "--config", str(settings))
        lines = [line for line in (bad.stdout + bad.stderr).splitlines() if line.strip()]
        assert bad.returncode == 1 and len(lines) == 1 and named in lines[0], lines
    assert not (tmp_path / "d2").exists()

    gen_settings = tmp_path / "generate.json"
    gen_settings.write_text(json.dumps({"steps": 3, "guidance": 1.0}))
    gen = tmp_path / "gen"
    result = imagineid(
        "generate",
        str(trained_run),
        str(video),
        "--out",
        str(gen),
        "--no-ray",
        "--config",
        str(gen_settings),
        "--steps",
        "1",
    )
    assert result.returncode == 0, result.stderr
    recorded = json.loads((gen / "generate.json").read_text())["config"]
    assert recorded["steps"] == 1 and recorded["guidance"] == 1.0
    gen_settings.write_text(json.dumps({"steps": 0}))
    bad = imagineid(
        "generate", str(trained_run), str(video), "--out", str(tmp_path / "g2"), "--config", str(gen_settings)
    )
    assert bad.returncode == 1 and "steps must be at least 1" in bad.stderr and not (tmp_path / "g2").exists()
