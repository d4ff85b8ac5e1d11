"""Train stage by stage: each stage is a Ray task (GPUs only where the cluster has them), skipped when
done, resumed from its checkpoint when interrupted. Used by `imagineid train` and the `train` flow.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    import torch

from imagineid.data.parquet_io import write_json_atomic
from imagineid.errors import ImagineIDError
from imagineid.runs.folder import RunDir
from imagineid.runs.tracking import StageTracker
from imagineid.training.config import DISENTANGLER_STAGES, GENERATOR_STAGES, TrainConfig

ALL_STAGES = DISENTANGLER_STAGES + GENERATOR_STAGES
# The adapters learn from what the disentangler hears in each clip, so they need it trained too.
REQUIRES = {
    "content": ("identity",),
    "emotion": ("identity", "content"),
    "adapters": ("ldm", "identity", "content", "emotion"),
}


def parse_stages(text: str | list[str]) -> list[str]:
    """Stage names in training order; unknown or not-yet-built names are a clear error."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [n for n in names if n not in ALL_STAGES]
    if unknown:
        raise ImagineIDError(f"unknown stage(s) {unknown}; choose from {', '.join(ALL_STAGES)}")
    return [s for s in ALL_STAGES if s in names]


def _stage_function(stage: str) -> Callable:
    from imagineid.training.content import train_content
    from imagineid.training.emotion import train_emotion
    from imagineid.training.identity import train_identity
    from imagineid.training.ldm import train_ldm

    functions = {"identity": train_identity, "content": train_content, "emotion": train_emotion, "ldm": train_ldm}
    if stage not in functions:
        from imagineid.training.adapters import train_adapters

        functions["adapters"] = train_adapters
    return functions[stage]


def run_stage(
    stage: str,
    data: str,
    run_root: str,
    config: TrainConfig,
    progress: bool = False,
    device: torch.device | None = None,
    threads: int | None = None,
    placement: list[dict] | None = None,
) -> dict:
    """Train and validate one stage; runs in process, in a Ray task, or on each Ray Train worker (where
    rank 0 alone logs and marks the stage done, and the others return {}). `placement` (each worker's
    rank, node, host, pid, device) goes into the stage's start record."""
    import torch

    from imagineid.training.context import StageContext
    from imagineid.training.replicas import Replica

    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    torch.set_flush_denormal(True)  # denormal floats made tiny-VAE steps on CPU 10-20x slower
    run, main = RunDir(Path(run_root)), Replica.current().is_main
    ctx = StageContext.prepare(data, run, config, progress)
    if device is not None:
        ctx.device = device
    if main:
        where = {"placement": placement} if placement else {}
        run.log({"stage": stage, "event": "start", "device": str(ctx.device), "workers": ctx.replica.world, **where})
    start = time.perf_counter()
    metrics = _stage_function(stage)(ctx, progress)
    if not main:
        return metrics
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    run.log({"stage": stage, "event": "validation", **metrics})
    tracker = StageTracker(run, stage)
    tracker.scalars(config.stage(stage).steps, metrics, prefix="validation")
    tracker.close()
    run.mark_done(stage, metrics)
    return metrics


def _last_step(run: RunDir, stage: str) -> int:
    if not run.metrics_log.exists():
        return 0
    steps = [0]
    for line in run.metrics_log.read_text().splitlines():
        record = json.loads(line)
        if str(record.get("stage", "")).split("/")[0] == stage and "step" in record:  # e.g. "ldm/vae"
            steps.append(int(record["step"]))
    return max(steps)


def _run_on_ray(
    stage: str,
    data: Path,
    run: RunDir,
    config: TrainConfig,
    ray_address: str | None,
    progress: bool,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    import ray

    from imagineid.parallel import cluster_gpus, init_ray

    init_ray(address=ray_address, num_gpus=math.ceil(config.num_gpus) * config.workers)
    gpus = cluster_gpus(config.num_gpus)
    desc = f"{stage} ({config.workers} × {'GPU' if gpus else 'CPU'})"
    steps = config.stage(stage).steps
    if config.workers > 1:  # data-parallel: a Ray Train worker group
        from imagineid.training.ray_train import run_on_workers

        def follow(ended: Callable[[float], bool]) -> None:
            _follow(stage, run, steps, desc, progress, on_step, ended)

        return run_on_workers(stage, data, run, config, gpus, follow)
    # A lost worker (killed, node gone) re-runs the stage, which resumes from its last checkpoint.
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(run_stage)
    # Absolute paths: Ray workers on a joined cluster do not share the driver's working directory.
    ref = task.remote(stage, str(data.absolute()), str(run.root.absolute()), config, False)
    _follow(stage, run, steps, desc, progress, on_step, lambda timeout: bool(ray.wait([ref], timeout=timeout)[0]))
    return ray.get(ref)


def _follow(
    stage: str,
    run: RunDir,
    total: int,
    desc: str,
    progress: bool,
    on_step: Callable[[int, int], None] | None,
    ended: Callable[[float], bool],
) -> None:
    """Follow a stage that runs elsewhere (a Ray task, a Ray Train worker group) by the checkpoints it
    logs, until `ended(timeout)` says it has finished; → a progress bar and `on_step(step, total)`."""
    step = 0
    with tqdm(total=total, desc=desc, unit="step", disable=not progress) as bar:
        while True:
            done = ended(2.0)
            seen = total if done else max(step, _last_step(run, stage))
            bar.update(seen - step)
            step = seen
            if on_step:
                on_step(step, total)
            if done:
                return


def train(
    data: str | Path,
    out: str | Path,
    stages: str | list[str],
    config: TrainConfig = TrainConfig(),
    ray_address: str | None = None,
    use_ray: bool = True,
    progress: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict]:
    """Run the requested stages in order; returns each stage's validation metrics.

    `on_progress(stage, step, steps)` follows each stage as its checkpoints are logged (every 2 s on
    Ray; at the start and end of a stage in process), e.g. for a Prefect progress artifact."""
    data, run = Path(data), RunDir(Path(out))
    ordered = parse_stages(stages)
    if config.profile == "sd15":  # the frozen base comes from config.base_model: no ldm stage to train or wait for
        ordered = [s for s in ordered if s != "ldm"]
    for stage in ordered:
        needs = REQUIRES.get(stage, ())
        if config.profile == "sd15":  # the frozen base is the given folder, not a trained ldm stage
            needs = tuple(r for r in needs if r != "ldm")
        missing = [r for r in needs if r not in ordered and not run.is_done(r)]
        if missing:
            raise ImagineIDError(f"stage {stage} needs trained {', '.join(missing)} in {run.root}; add it to --stages")
    if config.workers > 1 and not use_ray:
        raise ImagineIDError(f"workers={config.workers} trains on Ray Train workers; drop --no-ray or use workers=1")
    run.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.train_config_file, config.to_dict())
    results: dict[str, dict] = {}
    for stage in ordered:
        steps = config.stage(stage).steps
        report = functools.partial(on_progress, stage) if on_progress else None
        if run.is_done(stage):
            results[stage] = {"skipped": True, **run.done_metrics(stage)}
            if report:
                report(steps, steps)
            continue
        if use_ray:
            results[stage] = _run_on_ray(stage, data, run, config, ray_address, progress, report)
        else:
            if report:
                report(_last_step(run, stage), steps)
            results[stage] = run_stage(stage, str(data), str(run.root), config, progress)
            if report:
                report(steps, steps)
    return results
