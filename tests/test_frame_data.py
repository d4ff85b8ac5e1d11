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
