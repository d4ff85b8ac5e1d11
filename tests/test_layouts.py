"""Dataset layouts: each reader on a tiny fake tree in the real layout, auto-detection, and the cards."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from imagineid.data.layouts import DATASETS, MissingSourceError, SourceClip, discover

CARDS = Path(__file__).resolve().parents[1] / "datasets"
CARD_KEYS = {
    "name",
    "dataset_flag",
    "description",
    "homepage",
    "obtain",
    "licence",
    "layout",
    "labels",
    "splits",
    "size",
    "preprocessing",
}


def touch(root: Path, *relpaths: str) -> list[Path]:
    paths = []
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        paths.append(path)
    return paths


def by_name(clips: list[SourceClip]) -> dict[str, SourceClip]:
    return {c.name: c for c in clips}


# --------------------------------------------------------------------------------------------------
# MEAD
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def mead(tmp_path: Path) -> Path:
    root = tmp_path / "MEAD"
    touch(
        root,
        "M003/video/front/happy/level_2/001.mp4",
        "M003/video/front/neutral/level_1/003.mp4",
        "W009/video/left_30/surprised/level_3/012.mp4",
        "W009/audio/happy/level_1/001.m4a",  # audio tree: not a video, ignored inside folders
    )
    return root


def test_mead_speaker_gender_emotion_intensity(mead: Path) -> None:
    clips = by_name(discover([mead], dataset="mead"))
    assert sorted(clips) == [
        "M003_front_happy_level_2_001",
        "M003_front_neutral_level_1_003",
        "W009_left_30_surprised_level_3_012",
    ]
    happy = clips["M003_front_happy_level_2_001"]
    assert happy.dataset == "mead" and happy.speaker_id == "M003" and happy.split is None
    assert happy.path == mead / "M003/video/front/happy/level_2/001.mp4"
    assert happy.labels == {
        "gender": "male",
        "emotion": "happy",
        "intensity": pytest.approx(2 / 3),
        "level": 2.0,
        "view": "front",
    }
    surprised = clips["W009_left_30_surprised_level_3_012"]
    assert surprised.labels["gender"] == "female" and surprised.labels["intensity"] == 1.0
    assert surprised.labels["view"] == "left_30"


def test_mead_is_auto_detected(mead: Path) -> None:
    assert {c.dataset for c in discover([mead])} == {"mead"}


# --------------------------------------------------------------------------------------------------
# VoxCeleb2
# --------------------------------------------------------------------------------------------------


def test_voxceleb2_with_split_prefix_and_meta(tmp_path: Path) -> None:
    root = tmp_path / "vox2"
    touch(
        root,
        "dev/mp4/id00012/21Uxsk56VDQ/00001.mp4",
        "dev/mp4/id00012/21Uxsk56VDQ/00002.mp4",
        "test/mp4/id00017/01dfn2spqyE/00001.mp4",
    )
    (root / "vox2_meta.csv").write_text(
        "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00012 ,n000012 ,m ,dev \nid00017 ,n000017 ,f ,test \n"
    )
    clips = discover([root], dataset="voxceleb2")
    assert [c.name for c in clips] == [
        "id00012_21Uxsk56VDQ_00001",
        "id00012_21Uxsk56VDQ_00002",
        "id00017_01dfn2spqyE_00001",
    ]
    assert [c.speaker_id for c in clips] == ["id00012", "id00012", "id00017"]
    assert [c.split for c in clips] == ["dev", "dev", "test"]
    assert [c.labels.get("gender") for c in clips] == ["male", "male", "female"]
    assert {c.dataset for c in discover([root])} == {"voxceleb2"}  # auto


def test_voxceleb2_without_prefix(tmp_path: Path) -> None:
    root = tmp_path / "some_vox"
    touch(root, "id00012/21Uxsk56VDQ/00001.mp4")
    (clip,) = discover([root])
    assert (clip.dataset, clip.speaker_id, clip.split, clip.labels) == ("voxceleb2", "id00012", None, {})


# --------------------------------------------------------------------------------------------------
# HDTF
# --------------------------------------------------------------------------------------------------


def test_hdtf_speakers_from_clip_names(tmp_path: Path) -> None:
    root = tmp_path / "HDTF"
    touch(
        root,
        "WDA_BarackObama_000.mp4",
        "WDA_BarackObama_001.mp4",
        "RD_Radio1_000.mp4",
        "RD_Radio11_000.mp4",
        "WDA_AmyKlobuchar0_000.mp4",
        "WDA_AmyKlobuchar1_002.mp4",
        "WRA_LucilleRoybal-Allard_000.mp4",
    )
    clips = by_name(discover([root], dataset="hdtf"))
    assert clips["WDA_BarackObama_000"].speaker_id == "WDA_BarackObama"
    assert clips["WDA_BarackObama_000"].labels == {"source": "WDA", "video": "BarackObama"}
    assert clips["RD_Radio1_000"].speaker_id == "RD_Radio1"  # radio hosts: one speaker per video
    assert clips["RD_Radio11_000"].speaker_id == "RD_Radio11"
    assert clips["WDA_AmyKlobuchar1_002"].speaker_id == "WDA_AmyKlobuchar"  # numbered videos of one person
    assert clips["WDA_AmyKlobuchar0_000"].speaker_id == "WDA_AmyKlobuchar"
    assert clips["WRA_LucilleRoybal-Allard_000"].labels["source"] == "WRA"
    assert {c.dataset for c in discover([root])} == {"hdtf"}  # auto


def test_hdtf_readme_naming_needs_the_flag(tmp_path: Path) -> None:
    (clip,) = discover(touch(tmp_path, "Radio11_0.mp4"), dataset="hdtf")
    assert (clip.dataset, clip.speaker_id, clip.labels) == ("hdtf", "Radio11", {"video": "Radio11"})
    assert discover([tmp_path])[0].dataset == "generic"


# --------------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    root = tmp_path / "synth"
    speakers = [
        ("s1-00", "male", "adult"),
        ("s1-01", "female", "child"),
        ("s1-02", "male", "elder"),
        ("s1-03", "female", "adult"),
    ]
    rows = []
    for speaker, gender, age in speakers:
        for c, emotion in enumerate(("happy", "sad")):
            rows.append(
                {
                    "clip_id": f"{speaker}-c{c:02d}",
                    "video": f"videos/{speaker}-c{c:02d}.mp4",
                    "speaker_id": speaker,
                    "gender": gender,
                    "age_group": age,
                    "emotion": emotion,
                    "emotion_intensity": 0.75,
                    "text": "Bob bought a big blue map.",
                }
            )
    root.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    touch(root, *(r["video"] for r in rows))
    return root


def test_synthetic_labels_from_metadata(synthetic: Path) -> None:
    clips = by_name(discover([synthetic]))
    assert len(clips) == 8 and {c.dataset for c in clips.values()} == {"synthetic"}
    clip = clips["s1-01-c00"]
    assert clip.speaker_id == "s1-01" and clip.path == synthetic / "videos/s1-01-c00.mp4"
    assert clip.labels == {"gender": "female", "age_group": "child", "emotion": "happy", "intensity": 0.75}


def test_synthetic_split_holds_out_whole_speakers(synthetic: Path) -> None:
    clips = discover([synthetic / "videos"], dataset="synthetic")  # the videos folder finds the corpus too
    split_of = {}
    for c in clips:
        assert split_of.setdefault(c.speaker_id, c.split) == c.split  # one split per speaker
    assert sorted(split_of.values()) == ["test", "train", "train", "train"]
    assert discover([synthetic]) == discover([synthetic])  # deterministic


def test_stray_file_in_synthetic_folder_is_generic(synthetic: Path) -> None:
    touch(synthetic, "videos/extra.mp4")
    stray = by_name(discover([synthetic]))["videos_extra"]
    assert (stray.dataset, stray.speaker_id) == ("generic", "videos")


# --------------------------------------------------------------------------------------------------
# Discovery rules
# --------------------------------------------------------------------------------------------------


def test_generic_speaker_is_folder_or_stem(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "talks/alice/one.mp4",
        "talks/alice/two.MOV",
        "talks/bob.webm",
        "talks/notes.txt",
        "talks/.hidden.mp4",
        "talks/alice/.cache/x.mp4",
    )
    clips = discover([tmp_path / "talks"])
    assert [(c.name, c.speaker_id) for c in clips] == [("alice_one", "alice"), ("alice_two", "alice"), ("bob", "bob")]
    assert all(c.dataset == "generic" and c.labels == {} and c.split is None for c in clips)


def test_explicit_files_are_kept_whatever_their_suffix_and_deduplicated(tmp_path: Path) -> None:
    video, text = touch(tmp_path, "a/clip.mp4", "notes.txt")
    clips = discover([tmp_path / "a", text, video, tmp_path / "a"])
    assert [c.path for c in clips] == [video, text]
    assert clips[0].speaker_id == "clip"  # named explicitly: the stem, not the folder


def test_results_are_sorted_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "z.mp4", "b/y.mp4", "a.mkv")
    monkeypatch.chdir(tmp_path)
    paths = [c.path for c in discover([Path("."), Path("z.mp4")])]
    assert paths == sorted(paths, key=str) and all(p.is_absolute() for p in paths) and len(paths) == 3


def test_unknown_dataset_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of: auto, generic, hdtf, mead, voxceleb2, synthetic"):
        discover([tmp_path], dataset="lrs3")


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingSourceError, match="no such file or folder: .*nope.mp4"):
        discover([tmp_path / "nope.mp4"])


def test_wrong_explicit_dataset(tmp_path: Path, mead: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="none of the 3 video files follows the voxceleb2 layout"):
        discover([mead], dataset="voxceleb2")
    touch(mead, "M003/extra.mp4")
    with caplog.at_level(logging.WARNING):
        clips = discover([mead], dataset="mead")
    assert by_name(clips)["M003_extra"].dataset == "generic"
    assert "1 of 4 files do not follow the mead layout" in caplog.text


def test_empty_folder_gives_nothing(tmp_path: Path) -> None:
    assert discover([tmp_path]) == []


# --------------------------------------------------------------------------------------------------
# Dataset cards
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hdtf", "mead", "voxceleb2", "synthetic"])
def test_dataset_card_parses_with_required_keys(name: str) -> None:
    card = yaml.safe_load((CARDS / f"{name}.yaml").read_text())
    assert CARD_KEYS <= set(card), CARD_KEYS - set(card)
    assert card["dataset_flag"] == name and card["dataset_flag"] in DATASETS
    assert all(card[key] for key in CARD_KEYS), [key for key in CARD_KEYS if not card[key]]
    assert (CARDS / "README.md").read_text().count(f"{name}.yaml") >= 1


def test_symlink_cycles_do_not_loop(tmp_path: Path) -> None:
    (video,) = touch(tmp_path, "root/a/clip.mp4")
    (tmp_path / "root/a/loop").symlink_to(tmp_path / "root", target_is_directory=True)
    assert [c.path for c in discover([tmp_path / "root"])] == [video]
