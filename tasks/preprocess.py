"""Preprocess tasks: plan, extract (Ray fan-out inside), fit the morphable model, finalize, manifest."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from imagineid.data.store import Store
from imagineid.preprocessing import PreprocessConfig
from imagineid.preprocessing.extract import ClipJob, ExtractResult
from imagineid.preprocessing.finalize import finalize_all, fit_or_load_model
from imagineid.preprocessing.run import Plan, extract_all, plan_jobs, write_manifest
from tasks.policy import RETRY_TRANSIENT


@task(**RETRY_TRANSIENT)
def plan_sources(sources: list[str], out: str, config: PreprocessConfig, dataset: str, settle_s: float) -> Plan:
    """All source jobs, the pending ones (content-hash ids; finished clips are skipped) and the sources left
    for the next run (modified within the settle time). The flow holds DATA's writer lock."""
    store = Store(Path(out))
    store.remove_orphans()
    return plan_jobs(sources, store, config, dataset, settle_s)


@task(**RETRY_TRANSIENT)
def extract_clips(
    jobs: list[ClipJob], out: str, config: PreprocessConfig, workers: int | None, ray_address: str | None
) -> list[ExtractResult]:
    """Per-clip decode / track / crop / log-mel, fanned out on Ray; rejected clips and clips whose Ray
    worker was lost on every attempt come back as rows (status failed / lost), never as an exception."""
    artifact = create_progress_artifact(0.0, description="preprocess: clips extracted")

    def report(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / max(total, 1))

    return extract_all(jobs, Store(Path(out)), config, workers, progress=False, ray_address=ray_address, on_done=report)


@task(**RETRY_TRANSIENT)
def fit_morphable(out: str, config: PreprocessConfig, clip_ids: list[str], refit: bool) -> str:
    """The dataset's morphable model (existing, or fitted on the staged clips); returns its version."""
    return fit_or_load_model(Store(Path(out)), config, clip_ids, refit).version


@task(**RETRY_TRANSIENT)
def finalize_clips(
    out: str, config: PreprocessConfig, staged: list[ExtractResult], workers: int | None, ray_address: str | None
) -> tuple[list[str], list[ExtractResult]]:
    """Project, mask and write shards, fanned out on Ray like extraction; returns the clips/ shards
    written and the sources whose finalizing failed (listed with the error; the next run retries them)."""
    artifact = create_progress_artifact(0.0, description="preprocess: clips finalized")

    def report(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / max(total, 1))

    store = Store(Path(out))
    written, lost = finalize_all(store, staged, config, workers, False, ray_address, on_done=report)
    return [str(store.shard("clips", c)) for c in written], lost


@task(**RETRY_TRANSIENT)
def record_manifest(out: str, config: PreprocessConfig, jobs: list[ClipJob]) -> str:
    """Merge the sources into manifest.json; clips of sources whose file changed are replaced."""
    store = Store(Path(out))
    write_manifest(store, config, jobs)
    return str(store.manifest)
