"""One stage on several data-parallel workers through Ray Train (`TorchTrainer`, DDP process group).

Why Ray Train rather than one Ray task: it places N workers (one per GPU, across nodes), starts their
process group (NCCL on GPUs, gloo on CPUs) and restarts the whole group when a worker or node is lost
(`FailureConfig`); the restarted workers resume from the stage's last checkpoint in RUN, which rank 0
writes. What each worker does with its share is in `replicas.py` and the shared loop.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from imagineid.runs.folder import RunDir
from imagineid.training.config import TrainConfig

MAX_FAILURES = 2  # group restarts after a lost worker before the stage fails


def _train_worker(loop_config: dict) -> None:
    """The body of every Ray Train worker: the stage's usual run, on this worker's device and threads."""
    import ray.train
    import torch

    from imagineid.training.run import run_stage

    context = ray.train.get_context()
    device = None
    if torch.cuda.is_available() and ray.get_gpu_ids():
        from ray.train.torch import get_device

        device = get_device()
    threads = max(1, (os.cpu_count() or 1) // max(1, context.get_local_world_size()))
    here = {
        "rank": context.get_world_rank(),
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(device or "cpu"),
    }
    placement: list = [None] * context.get_world_size()
    torch.distributed.all_gather_object(placement, here)  # rank 0 logs where every worker runs
    metrics = run_stage(
        loop_config["stage"],
        loop_config["data"],
        loop_config["run"],
        TrainConfig.from_dict(loop_config["config"]),
        device=device,
        threads=threads,
        placement=placement,
    )
    ray.train.report({"rank": context.get_world_rank(), **_finite(metrics)})  # every worker reports, rank 0's count


def _finite(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}


def _workers_have_cuda(gpus: float) -> bool:
    """Whether a GPU worker's torch sees CUDA (it picks NCCL or gloo): asked of a GPU node itself, since
    the driver (often a CPU head node) cannot tell."""
    import ray

    @ray.remote(num_gpus=gpus, num_cpus=0)
    def probe() -> bool:
        import torch

        return torch.cuda.is_available()

    return bool(ray.get(probe.remote(), timeout=600))


def run_on_workers(stage: str, data: Path, run: RunDir, config: TrainConfig, gpus: float, follow) -> dict:
    """Train `stage` on `config.workers` Ray Train workers, `gpus` GPUs each (0: CPU workers, gloo);
    `follow(ended)` watches progress until `ended(timeout)` is true. → rank 0's validation metrics."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    backend = "nccl" if gpus and _workers_have_cuda(gpus) else "gloo"
    resources = {"CPU": 1, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "stage": stage,
            "data": str(data.absolute()),  # workers on other nodes do not share the driver's folder
            "run": str(run.root.absolute()),
            "config": config.to_dict(),
        },
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=config.workers, use_gpu=bool(gpus), resources_per_worker=resources, placement_strategy="SPREAD"
        ),
        run_config=RunConfig(
            name=stage.replace("/", "-"),
            storage_path=str((run.root / "ray_train").absolute()),  # RUN is on storage every node shares
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
        ),
    )
    outcome: dict = {}

    def ended(timeout: float) -> bool:
        worker.join(timeout)
        return not worker.is_alive()

    def fit_or_raise() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # re-raised in the caller's thread below
            outcome["error"] = err

    worker = threading.Thread(target=fit_or_raise, daemon=True)
    worker.start()
    follow(ended)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    if result.error:
        raise result.error
    return RunDir(run.root).done_metrics(stage)
