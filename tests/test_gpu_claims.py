"""Two runs on one host never share a GPU: each local Ray holds only the cards its run claimed.

A CPU host stands in for a 2-GPU machine with CUDA_VISIBLE_DEVICES=0,1: Ray places by the GPU ids it
is shown, so the claim decides which id each run's tasks get (torch then runs on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imagineid.gpu_claims import GpuBusyError, claim_gpus

RUN = textwrap.dedent(
    """
    import json, os, sys, time
    import ray
    from imagineid.parallel import init_ray

    init_ray(num_cpus=1, num_gpus=None if sys.argv[1] == "all" else int(sys.argv[1]))

    @ray.remote(num_gpus=1, num_cpus=0)
    def visible():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    @ray.remote(num_cpus=1)
    def cpu_task():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    gpus = int(ray.cluster_resources().get("GPU", 0))
    print(json.dumps({
        "gpus": gpus,
        "task_sees": ray.get(visible.remote()) if gpus else None,
        "cpu_task_sees": ray.get(cpu_task.remote()),
        "driver_sees": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }), flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture()
def two_gpu_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("IMAGINEID_GPU_LOCK_DIR", str(tmp_path / "locks"))
    env = {**os.environ, "IMAGINEID_GPU_WAIT_S": "2", "RAY_ADDRESS": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    return env


def _run(env: dict, gpus: str, hold_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN, gpus, str(hold_s)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _report(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline().decode()
    assert line, proc.stderr.read().decode()[-3000:]
    return json.loads(line)


def test_claims_in_one_process_take_distinct_cards_wait_then_name_the_holder(two_gpu_host) -> None:
    first = claim_gpus(1)
    rest = claim_gpus(None)  # every free card: only the other one
    assert first.ids == ["0"] and rest.ids == ["1"]
    start = time.monotonic()
    with pytest.raises(GpuBusyError, match=rf"GPU 0: {os.getpid()} .*GPU 1: {os.getpid()}"):
        claim_gpus(1, wait_s=0.5)
    assert time.monotonic() - start >= 0.5  # it waited before giving up
    first.release()
    assert claim_gpus(2, wait_s=0).ids == ["0"]  # fewer than asked: goes on with the free one
    assert claim_gpus(0).ids == []


def test_two_runs_on_one_host_get_different_gpus_and_a_third_is_refused(two_gpu_host) -> None:
    env = two_gpu_host
    training = _run(env, "1", 60)  # holds one card while the others start
    try:
        held = _report(training)
        generation = _run(env, "all", 0)  # asks for every GPU: gets the one training does not hold
        got = _report(generation)
        assert generation.wait(60) == 0
        assert held["gpus"] == 1 and got["gpus"] == 1
        assert {held["task_sees"], got["task_sees"]} == {"0", "1"}
        assert held["cpu_task_sees"] == held["task_sees"]  # its workers see its own card, never the other run's
        assert held["driver_sees"] == "0,1"  # the driver's own setting is left as it was

        blocker = _run(env, "1", 60)  # now both cards are held...
        _report(blocker)
        third = subprocess.run(
            [sys.executable, "-c", RUN, "1", "0"], env=env, capture_output=True, text=True, timeout=120
        )
        blocker.kill()
        assert third.returncode != 0
        assert "every GPU of this host stayed claimed by other runs" in third.stderr
        assert f"{training.pid} " in third.stderr  # it names who holds the cards
    finally:
        training.kill()
        training.wait(30)
    preprocess = _run(env, "0", 0)  # a run that needs no GPU claims none and hides them from its workers
    report = _report(preprocess)
    assert preprocess.wait(60) == 0
    assert report["gpus"] == 0 and report["cpu_task_sees"] == ""
