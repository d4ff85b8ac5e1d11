"""The disentangler's data: speaker-disjoint splits, whole clips, random windows, mel normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

from imagineid.audio.features import mel_envelope
from imagineid.data.clips import MelStats, iter_clips, mel_stats, split_clips
from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS
from imagineid.data.parquet_io import write_table_atomic
from imagineid.data.store import Store
from imagineid.preprocessing import PreprocessConfig, preprocess
from imagineid.training.augment import flatten_spectrum
from imagineid.training.data import WindowDataset, clip_tensors, ray_dataset


@pytest.fixture(scope="module")
def data(small_corpus, tmp_path_factory) -> Path:
    """The shared corpus (3 speakers × 2 clips × 50 frames) preprocessed; its layout marks 1 speaker 'test'."""
    out = tmp_path_factory.mktemp("train_data") / "data"
    summary = preprocess([small_corpus / "videos"], out, PreprocessConfig(), workers=1, progress=False)
    assert summary.n_failed == 0
    return out


@pytest.fixture(scope="module")
def clips(data) -> list[dict]:
    return (
        Store(data)
        .read_table("clips", ["clip_id", "speaker_id", "gender", "age_group", "emotion", "split", "n_frames"])
        .to_pylist()
    )


@pytest.fixture(scope="module")
def stats(data) -> MelStats:
    return mel_stats(data, split_clips(data)["train"])


def test_split_honours_test_column_and_is_speaker_disjoint(data, clips):
    splits = split_clips(data)
    assert splits == split_clips(data)  # deterministic
    speaker = {c["clip_id"]: c["speaker_id"] for c in clips}
    test_speakers = {c["speaker_id"] for c in clips if c["split"] == "test"}
    assert test_speakers, "the synthetic layout should mark at least one speaker as test"
    assert set(splits["val"]) == {c["clip_id"] for c in clips if c["speaker_id"] in test_speakers}
    assert sorted(splits["train"] + splits["val"]) == sorted(speaker)
    assert not {speaker[c] for c in splits["train"]} & {speaker[c] for c in splits["val"]}
    assert splits["train"] == sorted(splits["train"]) and splits["val"] == sorted(splits["val"])


def _write_clips(root: Path, speakers: list[str]) -> None:
    for i, s in enumerate(speakers):
        table = pa.table({"clip_id": [f"c{i:03d}"], "speaker_id": [s], "split": pa.array([None], pa.string())})
        write_table_atomic(table, Store(root).shard("clips", f"c{i:03d}"))


def test_split_by_speaker_hash_without_split_column(tmp_path):
    _write_clips(tmp_path, [f"spk{i}" for i in range(8) for _ in range(3)])  # 8 speakers × 3 clips
    splits = split_clips(tmp_path, val_fraction=0.25)
    assert splits == split_clips(tmp_path, val_fraction=0.25)
    assert len(splits["val"]) == 2 * 3 and len(splits["train"]) == 6 * 3

    def speakers(ids: list[str]) -> set[int]:
        return {int(c[1:]) // 3 for c in ids}  # clip c{i} belongs to speaker i // 3

    assert not speakers(splits["train"]) & speakers(splits["val"])

    two = tmp_path / "two"
    _write_clips(two, ["a", "a", "b"])
    small = split_clips(two, val_fraction=0.1)  # rounds to 0 speakers, but each split gets one
    assert len(small["val"]) >= 1 and len(small["train"]) >= 1


def test_iter_clips_shapes_and_labels(data, clips):
    by_id = {c["clip_id"]: c for c in clips}
    ids = sorted(by_id)
    samples = list(iter_clips(data, ids))
    assert [s.clip_id for s in samples] == ids
    speakers = sorted({c["speaker_id"] for c in clips})
    for s in samples:
        row = by_id[s.clip_id]
        t = row["n_frames"]
        assert s.mel.shape == (4 * t, 80) and s.mouth.shape[0] == t and s.expression.shape[0] == t
        assert s.opening.shape == (t,) and s.opening.dtype == np.float32 and (s.opening >= 0).all()
        assert s.gender == GENDERS.index(row["gender"])
        assert s.age == AGE_GROUPS.index(row["age_group"])
        assert s.emotion == EMOTIONS.index(row["emotion"])
        assert s.speaker_index == speakers.index(row["speaker_id"])
        assert s.shape.ndim == 1 and s.shape.dtype == np.float32


def test_mel_normalisation_over_train(data, stats, tmp_path):
    """Utterance mode (the default): each clip's speech frames centred on 0, unit RMS over the train set."""
    from imagineid.data.clips import speech_mean

    assert stats.mode == "utterance"
    clips = list(iter_clips(data, split_clips(data)["train"]))
    normalised = [stats.normalize(s.mel) for s in clips]
    for mel in normalised:
        np.testing.assert_allclose(speech_mean(mel * stats.std) / stats.std, 0.0, atol=1e-3)
    np.testing.assert_allclose(np.sqrt((np.concatenate(normalised) ** 2).mean(axis=0)), 1.0, atol=1e-2)
    loaded = MelStats.load(stats.save(tmp_path / "mel_stats.json"))
    np.testing.assert_allclose(loaded.mean, stats.mean)
    np.testing.assert_allclose(loaded.std, stats.std)
    assert loaded.mode == "utterance"


def test_global_mel_normalisation_over_train(data):
    train = split_clips(data)["train"]
    stats = mel_stats(data, train, mode="global")
    mel = np.concatenate([stats.normalize(s.mel) for s in iter_clips(data, train)])
    np.testing.assert_allclose(mel.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(mel.std(axis=0), 1.0, atol=1e-2)


@pytest.mark.parametrize("cache_clips", [True, False])
def test_window_batches_have_documented_shapes(data, clips, stats, cache_clips):
    train = split_clips(data)["train"]
    dataset = WindowDataset(data, train, window=16, stats=stats, seed=1, cache_clips=cache_clips)
    assert len(dataset) == sum(-(-c["n_frames"] // 16) for c in clips if c["clip_id"] in train)
    batches = list(DataLoader(dataset, batch_size=8))
    assert sum(len(b["mel"]) for b in batches) == len(dataset)
    batch = batches[0]
    first = next(iter_clips(data, train[:1]))
    n_mouth, n_expr = first.mouth.shape[1], first.expression.shape[1]
    assert batch["mel"].shape == (8, 64, 80) and batch["mel"].dtype == torch.float32
    assert batch["mouth"].shape == (8, 16, n_mouth) and batch["expression"].shape == (8, 16, n_expr)
    assert batch["opening"].shape == (8, 16) and batch["valid"].shape == (8, 16) and batch["valid"].all()
    assert batch["shape"].ndim == 2
    for key in ("gender", "age", "emotion", "speaker"):
        assert batch[key].shape == (8,) and batch[key].dtype == torch.long
    # windows come from the training speakers only, indexed into their sorted list
    n_speakers = len({c["speaker_id"] for c in clips if c["clip_id"] in train})
    assert 0 <= batch["speaker"].min() and batch["speaker"].max() < n_speakers


def test_windows_are_sliced_from_their_clip(data, stats):
    train = split_clips(data)["train"]
    samples = {s.clip_id: s for s in iter_clips(data, train)}
    window = next(iter(WindowDataset(data, train[:1], window=8, stats=stats, seed=3)))
    sample = samples[train[0]]
    mouth = torch.tensor(sample.mouth)
    starts = [i for i in range(sample.n_frames - 7) if torch.equal(mouth[i : i + 8], window["mouth"])]
    assert len(starts) == 1
    start = starts[0]
    # the whole clip is normalised (its own speech mean), then cut
    np.testing.assert_allclose(window["mel"].numpy(), stats.normalize(sample.mel)[4 * start : 4 * start + 32])
    np.testing.assert_allclose(window["opening"].numpy(), sample.opening[start : start + 8])
    # the envelope is the whole clip's, cut with the mel: relative to the clip's loud frames, not the window's
    np.testing.assert_allclose(
        window["envelope"].numpy(), mel_envelope(sample.mel)[4 * start : 4 * start + 32], rtol=1e-6
    )


def test_flatten_spectrum_keeps_only_the_loudness_contour():
    mel = torch.randn(64, 20, 80)
    flat = flatten_spectrum(mel, p=1.0)
    assert torch.allclose(flat, mel.mean(-1, keepdim=True).expand_as(mel))
    assert torch.equal(flatten_spectrum(mel, p=0.0), mel)
    some = flatten_spectrum(mel, p=0.5)
    flattened = (some.std(-1) < 1e-6).all(-1)  # (B,) whole utterances, never part of one
    assert 10 < int(flattened.sum()) < 54 and ((some.std(-1) < 1e-6).any(-1) == flattened).all()


def test_valid_masks_padding_on_short_clips(data, clips, stats):
    train = split_clips(data)["train"]
    t = {c["n_frames"] for c in clips}.pop()  # every synthetic clip has the same length (50 frames)
    dataset = WindowDataset(data, train, window=t + 14, stats=stats, windows_per_epoch=6)
    batch = next(iter(DataLoader(dataset, batch_size=6)))
    assert batch["mel"].shape == (6, 4 * (t + 14), 80) and batch["valid"].shape == (6, t + 14)
    assert batch["valid"][:, :t].all() and not batch["valid"][:, t:].any()
    assert batch["mel"][:, 4 * t :].abs().sum() == 0 and batch["mouth"][:, t:].abs().sum() == 0
    assert batch["mel"][:, : 4 * t].abs().sum() > 0


def test_workers_share_the_epoch(data, stats):
    dataset = WindowDataset(data, split_clips(data)["train"], window=16, stats=stats, windows_per_epoch=10)
    assert (
        sum(len(b["mouth"]) for b in DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="spawn"))
        == 10
    )


def test_clip_tensors_are_a_batch_of_one(data, stats):
    sample = next(iter_clips(data, split_clips(data)["val"]))
    batch = clip_tensors(sample, stats)
    t = sample.n_frames
    assert batch["mel"].shape == (1, 4 * t, 80) and batch["mouth"].shape == (1, t, sample.mouth.shape[1])
    assert batch["valid"].all() and batch["speaker"].shape == (1,)


@pytest.mark.slow  # starting Ray alone takes ~8-13 s on 2 cores
def test_ray_dataset_projects_columns(data, clips):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        frames = ray_dataset(data, "frames", columns=["clip_id", "frame_idx"])
        assert frames.count() == sum(c["n_frames"] for c in clips)
        assert list(frames.schema().names) == ["clip_id", "frame_idx"]
    finally:
        ray.shutdown()
