"""Scale-out of the generate job on Ray: one worker actor per GPU, each running the continuous batcher
on its share of the audio files (docs/architecture.md §5). On a cluster without GPUs, one CPU worker; requesting a GPU
there would wait forever, so the decision is made before anything is submitted."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from imagineid.generation.config import GenerateConfig, Source
from imagineid.generation.shard import generate_shard


class GenerationWorker:
    """Holds nothing between calls: each `run` loads the pipeline once and works through its shard."""

    def run(self, run: str, sources: list[Source], out: str, cfg: GenerateConfig) -> dict:
        return generate_shard(run, sources, out, cfg, progress=False)


def shard(sources: Sequence[Source], n: int) -> list[list[Source]]:
    """Round-robin by audio file, so long and short files spread over the workers."""
    return [list(sources[k::n]) for k in range(n) if sources[k::n]]


def generate_on_ray(
    run: Path,
    sources: Sequence[Source],
    out: Path,
    cfg: GenerateConfig,
    ray_address: str | None,
    num_gpus: float,
    progress: bool,
) -> dict:
    import ray

    from imagineid.parallel import cluster_gpus, init_ray

    init_ray(address=ray_address)
    per_worker = cluster_gpus(1.0) if num_gpus > 0 else 0.0
    gpus = int(ray.cluster_resources().get("GPU", 0.0)) if per_worker else 0
    shards = shard(sources, max(1, gpus))
    actor = ray.remote(num_cpus=1, num_gpus=per_worker, max_restarts=1, max_task_retries=1)(GenerationWorker)
    workers = [actor.remote() for _ in shards]
    # absolute paths: workers on a joined cluster do not share the caller's working folder
    run_dir, out_dir = str(Path(run).resolve()), str(Path(out).resolve())
    refs = [w.run.remote(run_dir, s, out_dir, cfg) for w, s in zip(workers, shards)]
    total = sum(len(s.seeds) for s in sources)
    records = Path(out) / "records"
    start = time.time()
    with tqdm(
        total=total,
        desc=f"generate ({len(workers)} {'GPU' if gpus else 'CPU'} worker(s))",
        unit="video",
        disable=not progress,
    ) as bar:
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            fresh = sum(1 for p in records.glob("*.json") if p.stat().st_mtime >= start)
            bar.update(max(0, min(total, fresh) - bar.n))
    results = ray.get(refs)
    for w in workers:
        ray.kill(w)
    return {k: sum(r[k] for r in results) for k in results[0]}
