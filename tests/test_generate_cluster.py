"""Generation as a shared queue on a Ray cluster (issue 21): three nodes that each declare one GPU (torch
runs on CPU here), a node killed mid-run, and a worker that raises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import damaged_copy

from imagineid.generation.config import GenerateConfig
from imagineid.generation.run import generate
from imagineid.media import count_frames

CFG = GenerateConfig(seeds=1, batch_size=1, steps=2, first_frame_retries=0)


def _audio(small_corpus: Path, folder: Path, n: int) -> list[Path]:
    """`n` audio files (the corpus's clips under distinct names, so each is its own video)."""
    folder.mkdir()
    clips = sorted((small_corpus / "videos").glob("*.mp4"))
    return [Path(shutil.copy2(clips[k % len(clips)], folder / f"a{k:02d}.mp4")) for k in range(n)]


def _records(gen: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((gen / "records").glob("*.json"))]


@pytest.mark.slow
def test_three_gpu_nodes_share_the_queue_and_a_killed_node_loses_only_its_clips(
    trained_run: Path, small_corpus: Path, tmp_path: Path
) -> None:
    import ray
    from ray.cluster_utils import Cluster

    audio = _audio(small_corpus, tmp_path / "audio", 9)
    gen = tmp_path / "gen"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    killed: list[str] = []

    def kill_one_node_once_all_three_have_made_a_video() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            rows = _records(gen) if (gen / "records").exists() else []
            made = {r["ray_node"] for r in rows}
            if len(made) == 3 and len(rows) < len(audio) - 2:
                victim = next(n for n in nodes if n.node_id == rows[-1]["ray_node"])
                killed.append(victim.node_id)
                cluster.remove_node(victim, allow_graceful=False)
            time.sleep(0.2)

    try:
        ray.init(address=cluster.address)
        killer = threading.Thread(target=kill_one_node_once_all_three_have_made_a_video, daemon=True)
        killer.start()
        summary = generate(trained_run, [tmp_path / "audio"], gen, CFG, progress=False)
        killer.join(timeout=5)
        again = generate(trained_run, [tmp_path / "audio"], gen, CFG, progress=False)  # the same command
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert killed, "the run ended before all three workers had made a video"
    # one worker lost its clips; a replacement placed on the dying node before Ray knew it had died, if
    # any, never started and lost nothing
    assert summary["workers_lost"] == 1 and summary["ok"] == len(audio) and summary["failed"] == 0
    rows = _records(gen)
    assert len({r["ray_node"] for r in rows}) == 3  # every node's worker made videos, the killed one too
    assert killed[0] in {r["ray_node"] for r in rows}
    index = pq.read_table(gen / "index.parquet").to_pylist()
    assert sorted(r["key"] for r in index) == sorted(f"{a.stem}__seed0" for a in audio)  # each exactly once
    for row in index:
        assert row["status"] == "ok" and count_frames(gen / row["video"]) == row["frames"] > 0  # none corrupt
    assert sorted(p.name for p in (gen / "videos").iterdir()) == sorted(f"{r['key']}.mp4" for r in index)
    assert again["ok"] == 0 and again["skipped"] == len(audio)


@pytest.mark.slow
def test_a_worker_that_raises_shows_its_traceback_in_the_cli(
    trained_run: Path, small_corpus: Path, tmp_path: Path
) -> None:
    """A run whose UNet file is damaged: the driver's checks pass, the Ray worker fails to load it."""
    run = damaged_copy(trained_run, tmp_path / "run")
    audio = _audio(small_corpus, tmp_path / "audio", 1)
    result = subprocess.run(
        [sys.executable, "-m", "imagineid.cli", "generate", str(run), str(audio[0]), "--out", str(tmp_path / "gen")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "every generation worker failed" in result.stderr
    # the remote traceback: the worker's frames down to the error the loader raised
    assert 'shard.py", line' in result.stderr and "in load_pipeline" in result.stderr
    assert "OSError: Unable to load weights" in result.stderr and "\x1b[" not in result.stderr


def test_the_queue_gives_a_lost_workers_unfinished_seeds_back_first() -> None:
    from imagineid.generation.config import Source
    from imagineid.generation.work_queue import ClipQueue

    def source(name: str) -> Source:
        return Source(f"/a/{name}.wav", name, [0, 1], [f"{name}__seed0", f"{name}__seed1"])

    queue = ClipQueue([source("x"), source("y"), source("z")])
    assert queue.take("w0").stem == "x" and queue.take("w1").stem == "y"
    queue.done("w0", "x__seed0", "ok", 50)
    queue.done("w1", "y__seed0", "failed", 0)
    queue.done("w1", "y__seed1", "ok", 40)  # y is finished: w1's lease closes
    queue.done("w1", "y__seed1", "ok", 40)  # told twice (a redone video): counted once
    assert queue.progress() == {
        **{"finished": 3, "total": 6, "pending": 2, "leased": 2, "by_worker": {"w0": 1, "w1": 2}},
        **{"ok": 2, "failed": 1, "frames": 90},
    }
    assert queue.took_work("w0") and queue.took_work("w1") and not queue.took_work("w2")  # w2 never started
    assert queue.requeue("w0") == 1 and queue.requeue("w1") == 0
    again = queue.take("w1")
    assert (again.stem, again.seeds, again.keys) == ("x", [1], ["x__seed1"])  # only the seed with no record
    assert queue.take("w1").stem == "z" and queue.take("w1") is None
