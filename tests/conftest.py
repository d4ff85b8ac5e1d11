"""Shared fixtures: small synthetic corpora and a folder of every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagineid.media import load_audio, read_frames, write_video
from imagineid.synth.corpus import SynthConfig, synthesize_corpus


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """3 speakers × 2 clips × 2 s at 256 px: enough variety to fit a morphable model, fast to make."""
    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, SynthConfig(speakers=3, clips_per_speaker=2, seconds=2.0, seed=3), progress=False)
    return out


def make_bad_inputs(good_video: Path, folder: Path) -> dict[str, Path]:
    """One file per bad-input kind, built from a good clip; returns {kind: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = read_frames(good_video)  # (T, 256, 256, 3)
    audio = load_audio(good_video)
    background = np.full_like(frames[0], 90)
    bad = {}

    bad["truncated"] = folder / "truncated.mp4"
    data = good_video.read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])

    bad["not_video"] = folder / "notes.mp4"
    bad["not_video"].write_text("this is a text file, not a video\n")

    bad["no_audio"] = folder / "no_audio.mp4"
    write_video(bad["no_audio"], frames, fps=25)

    bad["silent"] = folder / "silent.mp4"
    write_video(bad["silent"], frames, fps=25, audio=np.zeros_like(audio))

    bad["no_face"] = folder / "no_face.mp4"
    write_video(bad["no_face"], (background for _ in frames), fps=25, audio=audio)

    bad["several_faces"] = folder / "several_faces.mp4"
    pair = (np.hstack([f, f[:, ::-1]]) for f in frames)  # two equal faces side by side, 512 × 256
    write_video(bad["several_faces"], pair, fps=25, audio=audio)

    bad["tiny_face"] = folder / "tiny_face.mp4"
    tiny = []
    for f in frames:
        canvas = np.full((256, 256, 3), 90, np.uint8)
        canvas[96:160, 96:160] = cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA)
        tiny.append(canvas)
    write_video(bad["tiny_face"], tiny, fps=25, audio=audio)

    bad["one_frame"] = folder / "one_frame.mp4"
    write_video(bad["one_frame"], frames[:1], fps=25, audio=audio)
    return bad


@pytest.fixture(scope="session")
def bad_inputs(small_corpus: Path, tmp_path_factory) -> dict[str, Path]:
    good = sorted((small_corpus / "videos").glob("*.mp4"))[0]
    return make_bad_inputs(good, tmp_path_factory.mktemp("bad"))


def copy_videos(corpus: Path, folder: Path, names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    videos = sorted((corpus / "videos").glob("*.mp4"))
    chosen = [v for v in videos if names is None or v.name in names]
    return [Path(shutil.copy2(v, folder / v.name)) for v in chosen]


@pytest.fixture(scope="session")
def preprocessed(small_corpus: Path, tmp_path_factory) -> Path:
    """small_corpus preprocessed once for every test that needs a dataset."""
    from imagineid.preprocessing.config import PreprocessConfig
    from imagineid.preprocessing.run import preprocess

    data = tmp_path_factory.mktemp("data")
    preprocess([small_corpus / "videos"], data, PreprocessConfig(), workers=1, progress=False)
    return data


@pytest.fixture(scope="session")
def trained_run(preprocessed: Path, tmp_path_factory) -> Path:
    """Every stage (disentangler + frame generator) trained for a few steps: real weights, real files,
    meaningless quality — for tests of the plumbing that consumes a run."""
    from imagineid.training.config import TrainConfig
    from imagineid.training.run import train

    run = tmp_path_factory.mktemp("run")
    train(
        preprocessed,
        run,
        "identity,content,emotion,ldm,adapters",
        TrainConfig(max_steps=3),
        use_ray=False,
        progress=False,
    )
    return run


def damaged_copy(run: Path, folder: Path) -> Path:
    """A copy of `run` whose UNet weight file is cut short: the driver's checks pass (the file is
    there), loading it in a generation worker raises."""
    copy = Path(shutil.copytree(run, folder))
    weights = next((copy / "pipeline" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    return copy
