"""Generation task: the whole generate job of one GEN folder (the library fans out over Ray workers)."""

from __future__ import annotations

import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from imagineid.generation.config import GenerateConfig
from imagineid.generation.run import generate
from tasks.policy import GPU_TAG, RETRY_TRANSIENT


@task(tags=[GPU_TAG], **RETRY_TRANSIENT)
def generate_videos(
    run: str, audio: list[str], out: str, config: GenerateConfig, ray_address: str | None, use_ray: bool = True
) -> dict:
    """Generate every unfinished (audio, seed) into OUT; → the summary (counts, index path). A retry
    skips the videos the failed attempt finished. Progress goes to a Prefect progress artifact."""
    artifact = create_progress_artifact(0.0, description=f"generate → {out}: videos recorded")

    def report(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / max(total, 1))

    return generate(
        run, audio, out, config, use_ray=use_ray, ray_address=ray_address, progress=False, on_progress=report
    )


@task
def failed_videos(index: str) -> list[dict]:
    """The failed rows of GEN/index.parquet (audio, seed, error), for the flow's summary artifact."""
    rows = pq.read_table(index, columns=["audio", "seed", "status", "error"]).to_pylist()
    return [{"audio": r["audio"], "seed": r["seed"], "error": r["error"]} for r in rows if r["status"] != "ok"]
