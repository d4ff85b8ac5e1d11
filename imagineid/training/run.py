"""Train stage by stage: each stage is a Ray task (GPUs only where the cluster has them), skipped when
done, resumed from its checkpoint when interrupted. Used by `imagineid train` and the `train` flow.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

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


def run_stage(stage: str, data: str, run_root: str, config: TrainConfig, progress: bool = False) -> dict:
    """Train and validate one stage; runs inside a Ray worker or in-process."""
    import torch

    from imagineid.training.context import StageContext

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.set_flush_denormal(True)  # denormal floats made tiny-VAE steps on CPU 10-20x slower
    run = RunDir(Path(run_root))
    ctx = StageContext.prepare(data, run, config, progress)
    run.log({"stage": stage, "event": "start", "device": str(ctx.device)})
    start = time.perf_counter()
    metrics = _stage_function(stage)(ctx, progress)
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
    stage: str, data: Path, run: RunDir, config: TrainConfig, ray_address: str | None, progress: bool
) -> dict:
    import ray

    from imagineid.parallel import cluster_gpus, init_ray

    init_ray(address=ray_address)
    gpus = cluster_gpus(config.num_gpus)
    # A lost worker (killed, node gone) re-runs the stage, which resumes from its last checkpoint.
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(run_stage)
    # Absolute paths: Ray workers on a joined cluster do not share the driver's working directory.
    ref = task.remote(stage, str(data.absolute()), str(run.root.absolute()), config, False)
    total = config.stage(stage).steps
    with tqdm(total=total, desc=f"{stage} ({'GPU' if gpus else 'CPU'})", unit="step", disable=not progress) as bar:
        while True:
            done, _ = ray.wait([ref], timeout=2.0)
            bar.update(max(0, _last_step(run, stage) - bar.n))
            if done:
                bar.update(total - bar.n)
                return ray.get(ref)


def train(
    data: str | Path,
    out: str | Path,
    stages: str | list[str],
    config: TrainConfig = TrainConfig(),
    ray_address: str | None = None,
    use_ray: bool = True,
    progress: bool = True,
) -> dict[str, dict]:
    """Run the requested stages in order; returns each stage's validation metrics."""
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
    run.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.train_config_file, config.to_dict())
    results: dict[str, dict] = {}
    for stage in ordered:
        if run.is_done(stage):
            results[stage] = {"skipped": True, **run.done_metrics(stage)}
            continue
        if use_ray:
            results[stage] = _run_on_ray(stage, data, run, config, ray_address, progress)
        else:
            results[stage] = run_stage(stage, str(data), str(run.root), config, progress)
    return results
