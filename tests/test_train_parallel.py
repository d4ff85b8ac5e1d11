"""Data-parallel stages through Ray Train on CPUs (DDP over gloo): the same training as one worker, a
lost worker resumed from its checkpoint, and one worker per node on a cluster of 1-GPU nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from imagineid.training.config import TrainConfig
from imagineid.training.run import train

STEPS = 50
LOSS_RTOL = 1e-3  # two workers vs one: the same sums in another order, over 50 AdamW steps
WEIGHT_ATOL = 1e-4


def _content_run(trained_run: Path, folder: Path) -> Path:
    """A copy of the trained run with the content stage (and what follows it) not yet trained."""
    run = Path(shutil.copytree(trained_run, folder))
    for stage in ("content", "emotion"):
        shutil.rmtree(run / stage, ignore_errors=True)
    (run / "metrics.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run / "tensorboard", ignore_errors=True)
    return run


def _config(workers: int, steps: int = STEPS, checkpoint_every: int = 100, **content) -> TrainConfig:
    # no dropout or augmentation: their random draws differ between one worker and two by design
    values = {"steps": steps, "batch_size": 8, "dropout": 0.0, "augment": False, **content}
    return TrainConfig.from_dict({"content": values, "workers": workers, "checkpoint_every": checkpoint_every})


def _losses(run: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / "content"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def _weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(next((run / "content").glob("*.safetensors")))


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture()
def local_ray():
    import ray

    yield
    ray.shutdown()


def test_two_workers_train_as_one_with_the_same_global_batch_and_stay_identical(
    trained_run: Path, preprocessed: Path, tmp_path: Path, local_ray
) -> None:
    one = _content_run(trained_run, tmp_path / "one")
    two = _content_run(trained_run, tmp_path / "two")
    train(preprocessed, one, "content", _config(workers=1), use_ray=False, progress=False)
    accumulated = _content_run(trained_run, tmp_path / "accumulated")  # one worker, the batch in 2 halves
    train(preprocessed, accumulated, "content", _config(workers=1, accumulate=2), use_ray=False, progress=False)
    result = train(preprocessed, two, "content", _config(workers=2), progress=False)["content"]

    reference = _losses(one)
    assert sorted(reference) == list(range(10, STEPS + 1, 10))
    for run in (two, accumulated):
        np.testing.assert_allclose([_losses(run)[s] for s in reference], list(reference.values()), rtol=LOSS_RTOL)
        for name, value in _weights(one).items():
            np.testing.assert_allclose(_weights(run)[name], value, atol=WEIGHT_ATOL, err_msg=name)
    # every step, each worker compared a digest of its parameters with the other's: no step diverged
    agreed = [e for e in _events(two) if e.get("event") == "replicas_agreed"]
    assert agreed == [{"stage": "content", "event": "replicas_agreed", "workers": 2, "steps": STEPS}]
    started = [e for e in _events(two) if e.get("event") == "start"]
    assert len(started) == 1 and started[0]["workers"] == 2  # rank 0 alone writes the log
    assert result["mouth_opening_correlation"] == pytest.approx(
        json.loads((one / "content" / "done.json").read_text())["metrics"]["mouth_opening_correlation"], abs=1e-3
    )


def test_a_worker_killed_mid_stage_resumes_from_the_last_checkpoint(
    trained_run: Path, preprocessed: Path, tmp_path: Path, local_ray
) -> None:
    run = _content_run(trained_run, tmp_path / "run")
    config = _config(workers=2, steps=120, checkpoint_every=10)
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=train(preprocessed, run, "content", config, progress=False))
    )
    thread.start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # wait for a checkpoint, then kill one worker process
        if (run / "metrics.jsonl").exists() and any(e.get("event") == "checkpoint" for e in _events(run)):
            break
        time.sleep(0.5)
    placement = next(e["placement"] for e in _events(run) if e.get("event") == "start")
    assert [w["rank"] for w in placement] == [0, 1]
    os.kill(placement[1]["pid"], signal.SIGKILL)  # the rank-1 worker process, as an OOM kill would
    thread.join(900)
    assert not thread.is_alive() and "result" in outcome, outcome
    events = [e for e in _events(run) if e.get("stage") == "content"]
    resumed = [e["step"] for e in events if e.get("event") == "resumed"]
    checkpoints = [e["step"] for e in events if e.get("event") == "checkpoint"]
    assert resumed and resumed[0] in checkpoints  # the new worker group started from a saved step
    assert len(checkpoints) == len(set(checkpoints)) and max(checkpoints) == 110  # each step logged once
    assert (run / "content" / "done.json").exists() and not (run / "content" / "checkpoint.pt").exists()


def test_two_workers_are_placed_one_per_node_on_two_one_gpu_nodes(
    trained_run: Path, preprocessed: Path, tmp_path: Path
) -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    try:
        run = _content_run(trained_run, tmp_path / "run")
        train(preprocessed, run, "content", _config(workers=2, steps=10), progress=False)
        node_ids = {n["NodeID"] for n in ray.nodes()}
    finally:
        ray.shutdown()
        cluster.shutdown()
    placement = next(e["placement"] for e in _events(run) if e.get("event") == "start")
    assert len(placement) == 2 and {w["node"] for w in placement} == node_ids  # one GPU worker on each node
    assert (run / "content" / "done.json").exists()


@pytest.mark.slow
def test_the_frame_stages_train_on_two_workers_too(trained_run: Path, preprocessed: Path, tmp_path: Path) -> None:
    """ldm (two fits and a latent scale between them) and adapters (latent cache filled by rank 0, the
    pipeline saved by rank 0) on a 2-worker group, a few steps each, streaming their frames."""
    import ray

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    for stage in ("ldm", "adapters", "pipeline", "latents"):
        shutil.rmtree(run / stage, ignore_errors=True)
    (run / "metrics.jsonl").unlink(missing_ok=True)
    config = TrainConfig.from_dict(
        {"max_steps": 4, "workers": 2, "frame_memory_mb": 0, "ldm": {"batch_size": 4}, "adapters": {"batch_size": 4}}
    )
    try:
        results = train(preprocessed, run, "ldm,adapters", config, progress=False)
    finally:
        ray.shutdown()
    assert results["ldm"]["vae_psnr_db"] > 0 and "background_psnr_db" in results["adapters"]
    assert (run / "pipeline" / "model_index.json").exists() and any((run / "latents").glob("*/*.npy"))
    agreed = {e["stage"] for e in _events(run) if e.get("event") == "replicas_agreed"}
    assert agreed == {"ldm/vae", "ldm/unet", "adapters"}
