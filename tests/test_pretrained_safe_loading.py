"""Loading bring-your-own files never runs code from them (issue 9): restricted unpickler, weights_only."""

from __future__ import annotations

import importlib
import pickle

import numpy as np
import pytest
import torch
from standins import malicious_pickle, write_flame

from imagineid.errors import MalformedWeightsError, MissingWeightsError, UnsafeFileError
from imagineid.face.flame import FLAME
from imagineid.safe_loading import load_npy, load_pickle, load_torch, unpickle


def test_flame_pickle_loads_without_chumpy(tmp_path) -> None:
    """FLAME's pickle names chumpy.ch.Ch and scipy's csc_matrix; we get plain arrays, chumpy stays absent."""
    path = write_flame(tmp_path / "flame")
    arrays = load_pickle(path, section="FLAME")
    assert isinstance(arrays["shapedirs"], np.ndarray) and arrays["shapedirs"].shape[-1] == 400
    assert isinstance(arrays["J_regressor"], np.ndarray) and arrays["J_regressor"].shape[0] == 5
    assert arrays["bs_style"] == "lbs" and arrays["kintree_table"][0, 0] == 4294967295
    with pytest.raises(ImportError):
        importlib.import_module("chumpy")  # loading FLAME never installed or needed it


def test_malicious_pickle_is_refused_before_it_runs(tmp_path) -> None:
    path = malicious_pickle(tmp_path / "generic_model.pkl")
    with pytest.raises(UnsafeFileError, match=r"posix\.system|os\.system") as info:
        load_pickle(path, section="FLAME")
    assert "docs/pretrained.md § FLAME" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(UnsafeFileError):  # the FLAME loader goes through the same gate
        FLAME.from_files(path)
    assert not (tmp_path / "PWNED").exists()


def test_malicious_npy_object_array_is_refused(tmp_path) -> None:
    """An object .npy is a pickle too (DECA's landmark_embedding.npy is one)."""
    np.save(tmp_path / "ok.npy", {"full_lmk_faces_idx": np.arange(3)}, allow_pickle=True)
    assert load_npy(tmp_path / "ok.npy", section="FLAME")["full_lmk_faces_idx"].tolist() == [0, 1, 2]
    raw = (tmp_path / "ok.npy").read_bytes()
    header_end = raw.index(b"\n") + 1
    bad = raw[:header_end] + pickle.dumps(_Exploit(tmp_path), protocol=3)
    (tmp_path / "bad.npy").write_bytes(bad)
    with pytest.raises(UnsafeFileError):
        load_npy(tmp_path / "bad.npy", section="FLAME")
    assert not (tmp_path / "PWNED").exists()


class _Exploit:
    def __init__(self, folder) -> None:
        self.folder = folder

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.folder / 'PWNED'}",))


def test_torch_checkpoints_load_with_weights_only(tmp_path) -> None:
    torch.save({"E_flame": {"w": torch.ones(2)}}, tmp_path / "ok.tar")
    assert torch.equal(load_torch(tmp_path / "ok.tar", section="DECA")["E_flame"]["w"], torch.ones(2))
    torch.save({"E_flame": _Exploit(tmp_path)}, tmp_path / "evil.tar")
    with pytest.raises(UnsafeFileError, match="weights_only=True"):
        load_torch(tmp_path / "evil.tar", section="DECA")
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "junk.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(MalformedWeightsError, match="not a torch checkpoint"):
        load_torch(tmp_path / "junk.tar", section="DECA")
    with pytest.raises(MissingWeightsError, match=r"docs/pretrained.md § DECA"):
        load_torch(tmp_path / "absent.tar", section="DECA")


def test_garbage_and_truncated_pickles_are_clear_errors(tmp_path) -> None:
    good = pickle.dumps({"a": np.arange(4)}, protocol=2)
    with pytest.raises(MalformedWeightsError, match="not a readable pickle"):
        unpickle(good[: len(good) // 2])
    (tmp_path / "x.pkl").write_bytes(b"hello")
    with pytest.raises(MalformedWeightsError, match="FLAME"):
        load_pickle(tmp_path / "x.pkl", section="FLAME")


def test_every_error_section_is_a_heading_of_the_docs() -> None:
    """Errors say "see docs/pretrained.md § X": X must be a section there."""
    from pathlib import Path

    from imagineid.audio import speech_model
    from imagineid.errors import PRETRAINED_DOCS
    from imagineid.face import deca, fan_backend, flame
    from imagineid.models import ldm

    headings = {
        line[3:].strip()
        for line in (Path(__file__).parents[1] / PRETRAINED_DOCS).read_text().splitlines()
        if line.startswith("## ")
    }
    used = {flame.SECTION, deca.SECTION, fan_backend.SECTION, ldm.SD15_SECTION, speech_model.SECTION}
    assert used <= headings, used - headings
