"""The synthetic corpus: files, ground truth, determinism, resumability (issue 2 acceptance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from imagineid.errors import ImagineIDError
from imagineid.media import count_frames, load_audio, probe, read_frames
from imagineid.synth.check import check_corpus
from imagineid.synth.corpus import SynthConfig, sample_speaker, synthesize_corpus

ACCEPTANCE = SynthConfig(speakers=4, clips_per_speaker=2, seconds=3.0, seed=1)
SMALL = SynthConfig(speakers=2, clips_per_speaker=1, seconds=1.2, size=128, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize_corpus(out, ACCEPTANCE, progress=False)
    return out


def test_videos_are_25fps_h264_with_3s_aac(corpus: Path) -> None:
    videos = sorted((corpus / "videos").glob("*.mp4"))
    assert len(videos) == 8
    for video in videos:
        info = probe(video)
        assert info.fps == pytest.approx(25.0)
        assert (info.width, info.height) == (256, 256)
        assert info.video_codec == "h264" and info.audio_codec == "aac"
        assert abs(count_frames(video) - 75) <= 1
        assert len(load_audio(video)) / 16000 == pytest.approx(3.0, abs=0.1)


def test_metadata_holds_the_ground_truth(corpus: Path) -> None:
    table = pq.read_table(corpus / "metadata.parquet")
    for column in (
        "speaker_id",
        "gender",
        "age_group",
        "emotion",
        "text",
        "face_width",
        "jaw",
        "brow_ridge",
        "eye_spacing",
        "nose_length",
        "skin_tone",
        "hair_color",
        "mouth_opening",
        "landmarks",
    ):
        assert column in table.column_names, column
    rows = table.to_pylist()
    assert len(rows) == 8 and len({r["speaker_id"] for r in rows}) == 4
    assert {r["gender"] for r in rows} == {"male", "female"}
    assert {r["emotion"] for r in rows} <= {"neutral", "happy", "sad", "angry"}
    for row in rows:
        assert (corpus / row["video"]).exists()
        assert np.asarray(row["landmarks"]).shape == (75, 136)
        opening = np.asarray(row["mouth_opening"])
        assert opening.shape == (75,) and opening.min() >= 0 and opening.max() > 0.2
        assert len(row["text"].split()) >= 3


def test_faces_landmarks_mouth_and_voices_match_the_ground_truth(corpus: Path) -> None:
    check = check_corpus(corpus, progress=False)
    assert check.n_frames == 600
    assert check.single_face_rate >= 0.95
    assert check.landmark_error <= 0.05
    assert check.mouth_rms_correlation >= 0.5
    # recorded adults: men ~75-145 Hz, women ~160-215 Hz; elderly men sit a little higher, elderly women
    # a little lower, so a corpus of adults and elders keeps a gap of at least ~40 Hz between the medians
    assert check.median_f0_female - check.median_f0_male >= 40


def test_same_seed_gives_identical_corpus_and_rerun_skips(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize_corpus(a, SMALL, progress=False)
    synthesize_corpus(b, SMALL, progress=False)
    assert pq.read_table(a / "metadata.parquet").equals(pq.read_table(b / "metadata.parquet"))
    for video in sorted((a / "videos").glob("*.mp4")):
        np.testing.assert_array_equal(read_frames(video), read_frames(b / "videos" / video.name))
    mtimes = {p.name: p.stat().st_mtime_ns for p in (a / "videos").glob("*.mp4")}
    again = synthesize_corpus(a, SMALL, progress=False)
    assert again.n_rendered == 0 and again.n_clips == 2
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (a / "videos").glob("*.mp4")}


def test_another_seed_gives_other_speakers() -> None:
    one = [sample_speaker(1, i) for i in range(4)]
    two = [sample_speaker(2, i) for i in range(4)]
    assert {s.speaker_id for s in one}.isdisjoint({s.speaker_id for s in two})
    assert [s.factors for s in one] != [s.factors for s in two]
    assert [s.voice for s in one] != [s.voice for s in two]


def test_face_geometry_follows_the_voice() -> None:
    speakers = [sample_speaker(seed, i) for seed in range(10) for i in range(6)]
    pitch = np.array([s.voice.pitch for s in speakers], float)
    jaw = np.array([s.factors.jaw for s in speakers])
    brow = np.array([s.factors.brow_ridge for s in speakers])
    assert np.corrcoef(pitch, jaw)[0, 1] < -0.5  # deeper voice → stronger jaw
    assert np.corrcoef(pitch, brow)[0, 1] < -0.5
    assert all(s.factors.child == 1.0 for s in speakers if s.age_group == "child")


def test_a_folder_with_another_config_is_refused(tmp_path: Path) -> None:
    synthesize_corpus(tmp_path, SMALL, progress=False)
    with pytest.raises(ImagineIDError, match="holds a corpus made with"):
        synthesize_corpus(
            tmp_path, SynthConfig(speakers=3, clips_per_speaker=1, seconds=1.2, size=128, seed=7), progress=False
        )
