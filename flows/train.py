"""Prefect flow `train`: the disentangler stages in order, each a Ray task, with a metrics table.

    python -m flows.train

Deployed as `train/on-demand` (prefect.yaml): no schedule, run with `prefect deployment run`.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from imagineid.training.config import TrainConfig
from imagineid.training.run import parse_stages
from tasks.train import train_stage


@flow(name="train", log_prints=True)
def train_flow(
    data: str,
    out: str,
    stages: str = "identity,content,emotion",
    max_steps: int | None = None,
    num_gpus: float = TrainConfig.num_gpus,
    workers: int = TrainConfig.workers,
    ray_address: str | None = None,
    profile: str = TrainConfig.profile,
    base_model: str | None = None,
    checkpoint_every: int = TrainConfig.checkpoint_every,
    voice_variants: int = TrainConfig.voice_variants,
    config: dict | None = None,
    overrides: list[str] | None = None,
) -> dict[str, dict]:
    """Train the requested stages; finished stages are skipped, an interrupted one resumes.

    Args:
        data: Dataset folder written by the preprocess flow.
        out: Run folder (RUN/<stage>/, RUN/metrics.jsonl).
        stages: Comma-separated stages, trained in order: identity, content, emotion, ldm, adapters.
        max_steps: Cap on optimisation steps per stage (quick runs).
        num_gpus: GPUs per stage task (per worker with workers > 1), requested only where the Ray cluster has them.
        workers: Data-parallel workers per stage (Ray Train); each stage's batch_size is the global batch.
        ray_address: Ray cluster to join (default: $RAY_ADDRESS, else a local Ray).
        profile: tiny (the base is trained here, stage ldm) or sd15 (a frozen Stable Diffusion 1.5 base).
        base_model: profile sd15: the local Stable Diffusion 1.5 folder (diffusers layout).
        checkpoint_every: Steps between resumable checkpoints.
        voice_variants: Copies of each training clip's audio in the voice bank (1 = no augmentation).
        config: Training settings as `imagineid train --config` reads them (e.g. {"adapters": {"steps": 500}});
            they win over the parameters above.
        overrides: key=value settings applied last, as `imagineid train --set` takes them.
    """
    resolved = TrainConfig(
        max_steps=max_steps,
        num_gpus=num_gpus,
        workers=workers,
        profile=profile,
        base_model=base_model,
        checkpoint_every=checkpoint_every,
        voice_variants=voice_variants,
    )
    resolved = TrainConfig.load(overrides=overrides or [], base=TrainConfig.from_dict(config or {}, resolved))
    results = {}
    for stage in parse_stages(stages):
        results[stage] = train_stage(data, out, stage, resolved, ray_address)
        print(f"{stage}: {results[stage]}")
    rows = [{"stage": s, **{k: v for k, v in m.items() if not k.startswith("train_")}} for s, m in results.items()]
    create_table_artifact(rows, key="train-validation", description=f"validation metrics of {out} (held-out speakers)")
    return results


if __name__ == "__main__":
    train_flow(data="work/d", out="work/run")
