"""Preprocess: the docs/architecture.md §3 dataset from synthetic videos, bad inputs, idempotent reruns (issue 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import copy_videos

from imagineid.data.morphable import current_model
from imagineid.data.parquet_io import to_numpy_vectors
from imagineid.data.store import Store
from imagineid.preprocessing import PreprocessConfig, preprocess
from imagineid.synth.check import check_preprocessed


@pytest.fixture(scope="module")
def dataset(small_corpus: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("data")
    summary = preprocess([small_corpus / "videos"], out, PreprocessConfig(), workers=1, progress=False)
    return out, summary


def test_every_source_lands_in_clips_or_failures(dataset, small_corpus: Path) -> None:
    out, summary = dataset
    store = Store(out)
    videos = sorted((small_corpus / "videos").glob("*.mp4"))
    clips = store.read_table("clips")
    assert summary.n_sources == len(videos) == summary.n_processed + summary.n_failed
    assert summary.n_failed == 0, summary.failures
    assert clips.num_rows == len(videos)
    assert sorted(Path(s).name for s in clips["source"].to_pylist()) == [v.name for v in videos]
    frames = store.read_table("frames", ["clip_id", "frame_idx"])
    assert frames.num_rows == sum(clips["n_frames"].to_pylist()) == 6 * 50
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["status"] for e in manifest["sources"].values()} == {"done"}
    assert (out / "morphable" / "CURRENT").exists()


def test_labels_come_from_the_synthetic_metadata(dataset, small_corpus: Path) -> None:
    out, _ = dataset
    clips = Store(out).read_table("clips").to_pylist()
    meta = {r["clip_id"]: r for r in pq.read_table(small_corpus / "metadata.parquet").to_pylist()}
    for clip in clips:
        truth = meta[Path(clip["source"]).stem]
        assert (clip["dataset"], clip["speaker_id"], clip["gender"], clip["emotion"]) == (
            "synthetic",
            truth["speaker_id"],
            truth["gender"],
            truth["emotion"],
        )


def test_landmarks_and_mouth_coefficients_match_the_ground_truth(dataset, small_corpus: Path) -> None:
    out, _ = dataset
    check = check_preprocessed(small_corpus, out)
    assert check.n_clips == 6 and check.n_frames == 300
    assert check.landmark_error_iod < 0.08
    assert check.mouth_opening_correlation >= 0.9


def test_mouth_only_coefficients_leave_the_upper_face_unchanged(dataset) -> None:
    out, _ = dataset
    store = Store(out)
    model = current_model(store)
    clip = store.read_table("clips", ["clip_id", "shape"]).to_pylist()[0]
    mouth = to_numpy_vectors(store.clip_frames(clip["clip_id"], ["mouth"])["mouth"])  # (T, n_mouth)
    shape = np.asarray(clip["shape"], np.float32)
    rest = model.reconstruct(shape, mouth=np.zeros_like(mouth))
    moved = model.reconstruct(shape, mouth=mouth)
    upper = [*range(0, 4), *range(13, 48)]
    assert np.abs(moved[:, upper] - rest[:, upper]).max() < 1e-5
    assert np.abs(moved[:, 48:68] - rest[:, 48:68]).max() > 1.0 / 256  # the mouth does move


def test_tables_load_with_pandas_pyarrow_and_duckdb(dataset) -> None:
    out, _ = dataset
    import duckdb
    import pandas as pd

    n = ds.dataset(out / "frames", format="parquet").count_rows()
    assert len(pd.read_parquet(out / "clips")) == 6
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/frames/*.parquet')").fetchall()[0][0] == n
    store = Store(out)
    one = store.read_table("clips", ["clip_id"])["clip_id"][0].as_py()
    frames = store.clip_frames(one, ["frame_idx", "landmarks", "face_mask"])
    assert frames["frame_idx"].to_pylist() == list(range(frames.num_rows))
    assert sum(b.num_rows for b in store.iter_frame_batches(["clip_id"], batch_size=64)) == n


def test_a_crash_left_temp_shard_breaks_no_reader(dataset, tmp_path: Path) -> None:
    """A run killed mid-write leaves its temp shard behind: pyarrow, DuckDB and pandas still read the
    table through the README's globs, and the next run's cleanup removes the temp."""
    import shutil

    import duckdb
    import pandas as pd

    from imagineid.data.parquet_io import temp_path

    out, _ = dataset
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    n = ds.dataset(copy / "frames", format="parquet").count_rows()
    torn = temp_path(next((copy / "frames").glob("*.parquet")))
    torn.write_bytes(b"PAR1 half a row group")
    assert duckdb.sql(f"select count(*) from read_parquet('{copy}/frames/*.parquet')").fetchall()[0][0] == n
    assert Store(copy).dataset("frames").count_rows() == n and len(pd.read_parquet(copy / "clips")) == 6
    Store(copy).remove_orphans()
    assert not torn.exists()


def test_shards_of_an_earlier_pipeline_version_read_beside_newer_ones(dataset, tmp_path: Path) -> None:
    """A dataset grown across a pipeline upgrade: old clips/ shards lack the subject columns. Whichever
    shard sorts first, every row reads, the new columns stay visible and are null on the old rows."""
    import shutil

    out, _ = dataset
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    shards = sorted((copy / "clips").glob("*.parquet"))
    old = pq.read_table(shards[0]).drop_columns(["subject_track", "subject_reason", "runner_up", "source_clip_id"])
    pq.write_table(old, shards[0])
    clips = Store(copy).read_table("clips")
    assert clips.num_rows == len(shards)
    assert clips["subject_track"].null_count == 1 and clips["subject_reason"].null_count == 1
    assert Store(copy).read_table("clips", ["clip_id", "source_clip_id"]).num_rows == len(shards)


def test_a_rejected_new_version_keeps_the_good_old_clip_until_a_good_one_replaces_it(
    small_corpus: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    videos = sorted((small_corpus / "videos").glob("*.mp4"))
    copy_videos(small_corpus, src, [videos[0].name])
    out = tmp_path / "data"
    assert preprocess([src], out, workers=1, progress=False).n_processed == 1
    (old,) = Store(out).done_ids("clips")
    (src / videos[0].name).write_bytes(b"not a video any more")  # the source is overwritten by a broken copy
    broken = preprocess([src], out, workers=1, progress=False)
    assert broken.n_failed == 1 and Store(out).done_ids("clips") == {old}  # the good clip is still there
    assert Store(out).shard("frames", old).exists() and Store(out).crops(old).exists()
    shutil.copy2(videos[1], src / videos[0].name)  # now a good new version arrives under the same name
    fixed = preprocess([src], out, workers=1, progress=False)
    assert fixed.n_processed == 1
    (new,) = Store(out).done_ids("clips")
    assert new != old and not Store(out).shard("frames", old).exists()


def test_a_source_still_being_written_is_left_for_the_next_run(small_corpus: Path, tmp_path: Path) -> None:
    import os
    import time

    src, out = tmp_path / "src", tmp_path / "data"
    videos = sorted((small_corpus / "videos").glob("*.mp4"))
    copy_videos(small_corpus, src, [videos[0].name])
    past = time.time() - 600
    os.utime(src / videos[0].name, (past, past))  # copied in long ago: a finished file
    assert preprocess([src], out, workers=1, progress=False, settle_s=300).n_processed == 1
    (old,) = Store(out).done_ids("clips")
    manifest = json.loads(Store(out).manifest.read_text())
    data = videos[1].read_bytes()
    (src / videos[0].name).write_bytes(data[: len(data) // 2])  # a new version, half copied in
    (src / "arriving.mp4").write_bytes(data[: len(data) // 3])  # a new file, a third copied in
    waiting = preprocess([src], out, workers=1, progress=False, settle_s=300)
    assert (waiting.n_deferred, waiting.n_processed, waiting.n_failed, waiting.n_sources) == (2, 0, 0, 0)
    assert Store(out).done_ids("clips") == {old} and not Store(out).done_ids("failures")
    assert json.loads(Store(out).manifest.read_text())["sources"] == manifest["sources"]  # nothing recorded
    (src / videos[0].name).write_bytes(data)  # both copies finish, and the settle time passes
    shutil.copy2(videos[2], src / "arriving.mp4")
    for name in (videos[0].name, "arriving.mp4"):
        os.utime(src / name, (past, past))
    done = preprocess([src], out, workers=1, progress=False, settle_s=300)
    assert (done.n_deferred, done.n_processed, done.n_failed) == (0, 2, 0)
    assert old not in Store(out).done_ids("clips") and len(Store(out).done_ids("clips")) == 2


def test_a_second_preprocess_on_the_same_data_is_refused_in_one_line(small_corpus: Path, tmp_path: Path) -> None:
    from imagineid.errors import ImagineIDError

    src = tmp_path / "src"
    copy_videos(small_corpus, src, [sorted((small_corpus / "videos").glob("*.mp4"))[0].name])
    out = tmp_path / "data"
    Store(out).make_dirs()
    with Store(out).writer_lock():  # a run in progress
        with pytest.raises(ImagineIDError, match="another `imagineid preprocess` is writing to"):
            preprocess([src], out, workers=1, progress=False)
    assert preprocess([src], out, workers=1, progress=False).n_processed == 1  # the lock is gone with its holder


def test_rerun_skips_new_file_only_and_new_config_new_ids(small_corpus: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    copy_videos(small_corpus, src, [p.name for p in sorted((small_corpus / "videos").glob("*.mp4"))[:2]])
    out = tmp_path / "data"
    first = preprocess([src], out, workers=1, progress=False)
    assert first.n_processed == 2
    again = preprocess([src], out, workers=1, progress=False)
    assert (again.n_processed, again.n_failed, again.n_skipped) == (0, 0, 2)
    assert again.seconds < 0.2 * first.seconds
    copy_videos(small_corpus, src, [sorted((small_corpus / "videos").glob("*.mp4"))[2].name])
    third = preprocess([src], out, workers=1, progress=False)
    assert (third.n_processed, third.n_skipped) == (1, 2)
    old = {p.name: p.stat().st_mtime_ns for p in (out / "clips").glob("*.parquet")}
    changed = preprocess([src], out, PreprocessConfig(crop_size=128), workers=1, progress=False)
    assert changed.n_processed == 3
    after = {p.name: p.stat().st_mtime_ns for p in (out / "clips").glob("*.parquet")}
    assert len(after) == 6 and all(after[name] == mtime for name, mtime in old.items())


def test_bad_inputs_are_recorded_and_the_rest_proceeds(small_corpus: Path, bad_inputs: dict, tmp_path: Path) -> None:
    folder = next(iter(bad_inputs.values())).parent
    good = copy_videos(small_corpus, folder, [sorted((small_corpus / "videos").glob("*.mp4"))[0].name])
    out = tmp_path / "data"
    summary = preprocess([folder], out, workers=1, progress=False)
    store = Store(out)
    failures = {Path(r["source"]).stem: r for r in store.read_table("failures").to_pylist()}
    assert summary.n_processed == len(good)
    assert set(failures) == {p.stem for p in bad_inputs.values()}
    expected = {
        "truncated": "truncated",
        "notes": "not a readable media file",
        "no_audio": "no audio stream",
        "silent": "silent",
        "no_face": "no face",
        "one_frame": "audio is too short",
        # A mirrored copy beside the speaker: both mouths follow the speech alike, so nothing tells them apart.
        "several_faces": "ambiguous subject: 2 persistent, consistent faces",
        "tiny_face": "face too small (",
    }
    for stem, words in expected.items():
        assert words in failures[stem]["message"], (stem, failures[stem]["message"])
        assert failures[stem]["error_type"] and failures[stem]["stage"]
    # The rule that decided, in failures/ and in the summary.
    assert failures["several_faces"]["error_type"] == "ambiguous_subject"
    assert failures["no_face"]["error_type"] == "no_face"
    tiny = failures["tiny_face"]
    assert tiny["error_type"] == "face_too_small"
    assert json.loads(tiny["detail"])["min_face_px"] == 48 and json.loads(tiny["detail"])["face_px"] < 48
    tracks = json.loads(failures["several_faces"]["detail"])["tracks"]
    assert len(tracks) == 2 and all(t["speech_r"] > 0.3 for t in tracks)
    assert summary.by_rule["ambiguous_subject"] == summary.by_rule["face_too_small"] == 1


def test_ray_fan_out_gives_the_same_rows_as_serial(small_corpus: Path, tmp_path: Path) -> None:
    import ray

    src = tmp_path / "src"
    copy_videos(small_corpus, src, [p.name for p in sorted((small_corpus / "videos").glob("*.mp4"))[:3]])
    serial = preprocess([src], tmp_path / "serial", workers=1, progress=False)
    try:
        parallel = preprocess([src], tmp_path / "ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert serial.n_processed == parallel.n_processed == 3
    a, b = Store(tmp_path / "serial"), Store(tmp_path / "ray")
    assert a.done_ids("clips") == b.done_ids("clips")
    for clip_id in sorted(a.done_ids("clips")):
        np.testing.assert_array_equal(a.clip_landmarks(clip_id), b.clip_landmarks(clip_id))
    # finalizing ran on Ray workers too: the same coefficients and masks as in process
    for table in ("frames", "clips"):
        serial_rows = a.read_table(table).sort_by("clip_id").drop_columns(["versions"] if table == "clips" else [])
        ray_rows = b.read_table(table).sort_by("clip_id").drop_columns(["versions"] if table == "clips" else [])
        assert serial_rows.equals(ray_rows), table
    assert not list(b.staging.glob("*.npz"))  # every staged clip was finalized and its staging removed


def test_a_clip_that_fails_to_finalize_is_listed_and_retried_while_the_others_are_written(
    small_corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    import imagineid.preprocessing.finalize as finalize

    finalize_clip = finalize.finalize_clip

    def _fails_for_one_clip(store, clip_id, model, config):
        if store.staging.joinpath(f"{clip_id}.npz").exists() and clip_id == first:
            raise OSError("No space left on device")
        return finalize_clip(store, clip_id, model, config)

    src = tmp_path / "src"
    copy_videos(small_corpus, src, [p.name for p in sorted((small_corpus / "videos").glob("*.mp4"))[:2]])
    out = tmp_path / "d"
    from imagineid.preprocessing.run import plan_jobs

    first = sorted(j.clip_id for j in plan_jobs([src], Store(out), PreprocessConfig()).jobs)[0]
    monkeypatch.setattr(finalize, "finalize_clip", _fails_for_one_clip)
    summary = preprocess([src], out, workers=1, progress=False)
    assert summary.n_processed == 1 and summary.n_failed == 1
    lost = summary.failures[0]
    assert (lost.clip_id, lost.status, lost.error_type) == (first, "lost", "finalize_failed")
    assert "OSError: No space left on device" in lost.message and "in _fails_for_one_clip" in lost.message
    assert first not in Store(out).done_ids("clips") | Store(out).done_ids("failures")
    monkeypatch.undo()
    again = preprocess([src], out, workers=1, progress=False)  # not recorded as failed: the next run makes it
    assert (again.n_processed, again.n_skipped, again.n_failed) == (1, 1, 0)
    assert Store(out).done_ids("clips") == {j.clip_id for j in plan_jobs([src], Store(out), PreprocessConfig()).jobs}


def test_the_morphable_fit_reads_only_landmarks_and_strides_a_large_corpus(tmp_path: Path) -> None:
    from imagineid.preprocessing.finalize import fit_landmarks

    store = Store(tmp_path / "d")
    store.make_dirs()
    rng = np.random.default_rng(0)
    lengths = {"a": 900, "b": 300, "c": 3}
    for cid, n in lengths.items():
        meta = {"source": {"speaker_id": "spk1" if cid != "c" else None}, "clip_ids": [cid]}
        np.savez(
            store.staging / f"{cid}.npz",
            crop_landmarks=rng.normal(size=(n, 68, 2)).astype(np.float32),
            found=np.ones(n, bool),
            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        )
    clips, groups = fit_landmarks(store, list(lengths), max_frames=120)
    assert groups == ["spk1", "spk1", "c"]  # speaker id, else the clip itself
    assert sum(len(c) for c in clips) <= 120 + len(lengths)  # every clip strided by the same step
    step = -(-1203 // 120)  # 11: the smallest stride that brings 1,203 frames under the cap
    assert [len(c) for c in clips] == [-(-900 // step), -(-300 // step), 2]  # a 3-frame clip keeps 2: motion
    with np.load(store.staging / "a.npz") as npz:
        np.testing.assert_array_equal(clips[0], npz["crop_landmarks"][::step])
    whole, _ = fit_landmarks(store, list(lengths))
    assert [len(c) for c in whole] == list(lengths.values())  # a corpus under the cap is read whole


def test_a_ray_worker_that_raises_lists_the_clip_with_its_traceback(
    small_corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    import ray

    import imagineid.preprocessing.run as preprocessing_run

    extract_clip = preprocessing_run.extract_clip

    def _raises_for_the_first_clip(job, root, config):
        """An extractor with a bug that shows on one clip only (runs in a Ray worker; a closure, so it
        travels by value)."""
        if job.source.path.name == "x_00.mp4":
            raise RuntimeError("boom in the extractor")
        return extract_clip(job, root, config)

    src = tmp_path / "src"
    names = [p.name for p in sorted((small_corpus / "videos").glob("*.mp4"))[:2]]
    copy_videos(small_corpus, src, names)
    (src / names[0]).rename(src / "x_00.mp4")
    monkeypatch.setattr(preprocessing_run, "extract_clip", _raises_for_the_first_clip)
    try:
        summary = preprocess([src], tmp_path / "d", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert summary.n_processed == 1 and [f.status for f in summary.failures] == ["lost"]
    message = summary.failures[0].message
    assert summary.failures[0].source.endswith("x_00.mp4") and message.startswith("the worker raised")
    assert "in _raises_for_the_first_clip" in message and "RuntimeError: boom in the extractor" in message
    assert "\x1b[" not in message
    monkeypatch.undo()  # the clip was not recorded as failed: the next run makes it
    assert preprocess([src], tmp_path / "d", workers=1, progress=False).n_processed == 1


def test_sigkill_mid_run_then_rerun_leaves_no_duplicates_or_orphans(small_corpus: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    videos = copy_videos(small_corpus, src)
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "imagineid.cli", "preprocess", str(src), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any((out / "crops").glob("*.mp4")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any((out / "clips").glob("*.parquet")), "killed before any clip finished, by construction"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    store = Store(out)
    clips = store.read_table("clips")
    assert sorted(Path(s).name for s in clips["source"].to_pylist()) == sorted(v.name for v in videos)
    frames = store.read_table("frames", ["clip_id", "frame_idx"]).to_pylist()
    assert len(frames) == len({(f["clip_id"], f["frame_idx"]) for f in frames}) == sum(clips["n_frames"].to_pylist())
    assert not list(out.rglob(".tmp-*")) and not list((out / ".staging").glob("*"))


def test_sigkill_while_a_changed_source_is_reprocessed_keeps_its_old_clip(small_corpus: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    src, out = tmp_path / "src", tmp_path / "data"
    videos = sorted((small_corpus / "videos").glob("*.mp4"))
    copy_videos(small_corpus, src, [videos[0].name, videos[1].name])
    cmd = [sys.executable, "-m", "imagineid.cli", "preprocess", str(src), "--out", str(out), "--workers", "1"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    old = Store(out).done_ids("clips")
    shutil.copy2(videos[2], src / videos[0].name)  # the file changes: a new version to process
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not {p.stem for p in (out / "crops").glob("*.mp4")} - old:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-way through the new version
    proc.wait()
    store = Store(out)
    assert store.done_ids("clips") == old  # the old version of the changed file is still the dataset's
    assert all(store.shard("frames", c).exists() and store.crops(c).exists() for c in old)
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    after = Store(out).done_ids("clips")
    assert len(after) == 2 and len(after & old) == 1  # the new version replaced the old one, the other stayed
    assert not list(out.rglob(".tmp-*")) and not list((out / ".staging").glob("*"))
