"""Generator training samples: crops, rendered mesh, reference, mouth-masked neighbour, masks (issue 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imagineid.data.morphable import current_model
from imagineid.data.store import Store
from imagineid.training.frame_data import NEUTRAL_GREY, FrameConditionDataset


@pytest.fixture(scope="module")
def dataset(preprocessed: Path) -> FrameConditionDataset:
    data = preprocessed
    store = Store(data)
    ids = sorted(store.done_ids("clips"))[:2]
    return FrameConditionDataset(data, ids, current_model(store), image_size=64, seed=0)


def test_samples_have_the_documented_shapes_and_ranges(dataset: FrameConditionDataset) -> None:
    assert len(dataset) == 2 * 49  # frames 1..49 of two 50-frame clips
    sample = dataset[10]
    for key in ("image", "mesh", "reference", "neighbour"):
        assert sample[key].shape == (3, 64, 64) and sample[key].min() >= -1 and sample[key].max() <= 1
    assert sample["blend_mask"].shape == (1, 64, 64) and 0 < sample["blend_mask"].mean() < 1
    assert sample["shape"].ndim == 1 and sample["expression"].ndim == 1
    assert 0 <= int(sample["emotion"]) < 4


def test_mesh_covers_the_face_and_neighbour_mouth_is_masked(dataset: FrameConditionDataset) -> None:
    sample = dataset[20]
    face = sample["blend_mask"][0] > 0.99
    mesh_on = (sample["mesh"] > -1).any(0)
    assert mesh_on[face].float().mean() > 0.5 and not mesh_on[0, 0]
    c, t = dataset.index[20]
    mouth = torch.from_numpy(dataset.clips[c].mouth[t - 1]) > 0.5
    assert mouth.any() and torch.all(sample["neighbour"][:, mouth] == NEUTRAL_GREY)
    assert not torch.equal(sample["neighbour"], sample["image"])


def test_reference_is_another_frame_of_the_same_clip(dataset: FrameConditionDataset) -> None:
    c, t = dataset.index[5]
    frames = torch.stack([dataset[5]["reference"] for _ in range(8)])
    clip = dataset.clips[c]
    target = torch.from_numpy(clip.images[t]).permute(2, 0, 1).float() / 127.5 - 1
    assert all(not torch.equal(f, target) for f in frames)


def test_a_segment_decodes_to_the_same_frames_as_the_whole_clip(preprocessed: Path) -> None:
    from imagineid.training.frame_data import ClipFrames

    store = Store(preprocessed)
    row = store.read_table("clips", ["clip_id", "crops", "crop_size", "shape", "emotion"]).to_pylist()[0]
    whole = ClipFrames(store, row, current_model(store), 64)
    part = ClipFrames(store, row, current_model(store), 64, start=17, count=20)
    assert len(part) == 20
    for name in ("images", "meshes", "blend", "mouth", "expression", "points"):
        assert (getattr(part, name) == getattr(whole, name)[17:37]).all(), name


def test_the_stream_keeps_a_bounded_buffer_and_gives_real_frames_of_each_clip(preprocessed: Path) -> None:
    from imagineid.training.frame_data import FrameStream

    store = Store(preprocessed)
    ids = sorted(store.done_ids("clips"))
    stream = FrameStream(preprocessed, ids, current_model(store), 64, seed=1, buffer=2, segment=10)
    decoded = []
    decode = stream._decode
    stream._decode = lambda row, rng: decoded.append(row["clip_id"]) or decode(row, rng)
    samples = list(stream)
    assert len(samples) == len(stream) == sum(n - 1 for n in [50] * len(ids))
    # each segment gives ~its frames in samples, then makes room: a buffer of 2, never the whole dataset
    assert len(decoded) >= len(samples) / 9 - 2 and set(decoded) == set(ids)
    whole = FrameConditionDataset(preprocessed, ids, current_model(store), image_size=64)
    crops = {_key(frame) for clip in whole.clips for frame in clip.images}
    for sample in samples[:60]:  # the clips' real decoded crops: target and reference alike
        for name in ("image", "reference"):
            assert _key(((sample[name] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()) in crops
    again = list(FrameStream(preprocessed, ids, current_model(store), 64, seed=1, buffer=2, segment=10))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(samples, again))  # seeded: reproducible


def test_frame_stages_stream_when_the_clips_do_not_fit_in_memory(preprocessed: Path, tmp_path: Path) -> None:
    from imagineid.runs.folder import RunDir
    from imagineid.training.config import TrainConfig
    from imagineid.training.context import StageContext
    from imagineid.training.frame_data import FrameStream
    from imagineid.training.ldm import frame_loader

    run = RunDir(tmp_path / "run")
    for budget, kind in ((1024, FrameConditionDataset), (0, FrameStream)):
        ctx = StageContext.prepare(preprocessed, run, TrainConfig(frame_memory_mb=budget, voice_variants=1))
        loader = frame_loader(ctx, ctx.split["train"], 4, seed=0)
        assert isinstance(loader.dataset, kind)
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 3, 64, 64) and batch["mesh"].shape == (4, 3, 64, 64)


def test_the_stream_buffer_fits_the_frame_budget_at_any_size() -> None:
    from imagineid.training.frame_data import LONGEST_SEGMENT, STREAM_BUFFER, decoded_bytes, stream_segment

    assert stream_segment(64, 256) == LONGEST_SEGMENT  # the tiny profile: whole 64-frame segments
    for size, budget in ((512, 256), (512, 64), (256, 100), (1024, 256)):
        segment = stream_segment(size, budget)
        assert 2 <= segment < LONGEST_SEGMENT
        assert STREAM_BUFFER * decoded_bytes(segment, size) <= max(
            budget * 2**20, STREAM_BUFFER * decoded_bytes(2, size)
        )
        assert STREAM_BUFFER * decoded_bytes(segment + 1, size) > budget * 2**20  # as long as the budget allows


def _key(frame) -> bytes:
    return frame.tobytes()
