"""Scale-out of the generate job on Ray (docs/architecture.md §5): one worker actor per GPU, each running
the continuous batcher on audio files it pulls from a shared queue (`work_queue.ClipQueue`).

Pulling, not a split made at submit time: a fast GPU takes more files, a GPU that joins the cluster
gets a new worker, and a worker or node lost mid-run costs only the clips it held, which go back to
the queue for the others. A cluster without GPUs gets one CPU worker (a GPU request there would wait
forever). A worker that raises is retired with its traceback logged; the run fails with that
traceback only when no worker is left to finish the queue.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from imagineid.errors import ImagineIDError
from imagineid.generation.config import GenerateConfig, Source
from imagineid.generation.shard import generate_shard
from imagineid.generation.work_queue import ClipQueue
from imagineid.parallel import cluster_gpus, init_ray, remote_traceback

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often the driver looks at the queue (progress, lost workers, new GPUs)


class WorkerError(ImagineIDError):
    """Every generation worker raised; the message carries the last one's remote traceback."""


class GenerationWorker:
    """Loads the pipeline once per `run` call and works through what it pulls from the queue."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, run: str, queue: object, out: str, cfg: GenerateConfig) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        told: list = []

        def pulled() -> Iterator[Source]:
            while (source := ray.get(queue.take.remote(self.name))) is not None:
                yield source

        def heard(row: dict) -> None:
            told.append(queue.done.remote(self.name, row["key"], row["status"], row["frames"]))

        tags = {"worker": f"{self.name}@{socket.gethostname()}:{os.getpid()}", "ray_node": node}
        counts = generate_shard(run, pulled(), out, cfg, progress=False, on_record=heard, tags=tags, prefetch=1)
        ray.get(told)  # the queue knows every record before the driver hears this worker is done
        return counts


def generate_on_ray(
    run: Path,
    sources: Sequence[Source],
    out: Path,
    cfg: GenerateConfig,
    ray_address: str | None,
    num_gpus: float,
    progress: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Every (source, seed) made by a pool of queue workers; → counts (ok, failed, frames, workers, ...)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    init_ray(address=ray_address, num_gpus=None if num_gpus > 0 else 0)  # locally: every GPU no other run holds
    per_worker = cluster_gpus(1.0) if num_gpus > 0 else 0.0
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = ray.remote(num_cpus=0)(ClipQueue).options(scheduling_strategy=here).remote(list(sources))
    actor = ray.remote(num_cpus=1, num_gpus=per_worker, max_restarts=0)(GenerationWorker)
    # absolute paths: workers on a joined cluster do not share the caller's working folder
    args = (str(Path(run).resolve()), queue, str(Path(out).resolve()), cfg)
    names = (f"worker-{k}" for k in itertools.count())
    actors: dict[str, object] = {}
    running: dict = {}  # ObjectRef of a worker's `run` → its name
    idle: list[str] = []
    counts = {"generated_frames": 0, "workers_lost": 0, "workers_not_started": 0}
    errors: list[str] = []

    def wanted() -> int:
        return int(ray.cluster_resources().get("GPU", 0.0)) if per_worker else 1

    def start(name: str | None = None) -> None:
        if name is None:
            name = next(names)
            actors[name] = actor.remote(name)
        running[actors[name].run.remote(*args)] = name

    for _ in range(max(1, wanted())):
        start()
    total = ray.get(queue.progress.remote())["total"]
    desc = f"generate ({len(actors)} {'GPU' if per_worker else 'CPU'} worker(s))"
    with tqdm(total=total, desc=desc, unit="video", disable=not progress) as bar:
        while True:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S) if running else ([], [])
            for ref in ready:
                name = running.pop(ref)
                try:
                    result = ray.get(ref)
                    counts["generated_frames"] += result["generated_frames"]
                    idle.append(name)
                except ray.exceptions.RayTaskError as err:  # the worker raised: retire it, keep its traceback
                    trace = remote_traceback(err)
                    errors.append(f"{name}: {trace}")
                    log.error("generation worker %s failed; its clips go back to the queue:\n%s", name, trace)
                    _retire(ray, queue, actors, name)
                except ray.exceptions.RayError as err:  # its process or node was lost
                    if ray.get(queue.took_work.remote(name)):
                        counts["workers_lost"] += 1
                        log.warning("generation worker %s was lost (%s); its clips go back to the queue", name, err)
                    else:  # placed on a node that was dying, before the cluster knew: it had taken nothing
                        counts["workers_not_started"] += 1
                        log.info("generation worker %s never started (%s)", name, str(err).splitlines()[0])
                    _retire(ray, queue, actors, name)
            state = ray.get(queue.progress.remote())
            if state["finished"] > bar.n and on_progress is not None:
                on_progress(state["finished"], total)
            bar.update(state["finished"] - bar.n)
            if state["finished"] >= total:
                break
            if state["pending"]:
                while idle:  # a worker that found the queue empty takes what a lost one left
                    start(idle.pop())
                while len(actors) + len(errors) < wanted():  # GPUs that joined, or a lost CPU worker's place
                    start()
            if not running:
                _give_up(state, errors)
    for handle in actors.values():
        ray.kill(handle)
    ray.kill(queue)
    return {
        **counts,
        **{k: state[k] for k in ("ok", "failed", "frames")},
        "workers": len(state["by_worker"]),
        "by_worker": state["by_worker"],
        "worker_errors": errors,
    }


def _retire(ray: object, queue: object, actors: dict, name: str) -> None:
    requeued = ray.get(queue.requeue.remote(name))
    if requeued:
        log.warning("%d video(s) of %s back in the queue", requeued, name)
    handle = actors.pop(name, None)
    if handle is not None:
        ray.kill(handle)


def _give_up(state: dict, errors: list[str]) -> None:
    left = state["total"] - state["finished"]
    kept = f"the {state['finished']} finished are kept; the same command makes the other {left}"
    if errors:
        raise WorkerError(f"every generation worker failed ({kept}); the last one's traceback:\n{errors[-1]}")
    raise ImagineIDError(f"every generation worker was lost and no GPU is left on the cluster ({kept})")
