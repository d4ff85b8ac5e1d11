"""Prefect flow `preprocess`: videos → the Parquet dataset of docs/architecture.md §3, incrementally.

    python -m flows.preprocess          # work/s/videos → work/d

Deployed as `preprocess/nightly` (prefect.yaml): each night only new or changed sources are processed.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from imagineid.data.store import Store
from imagineid.preprocessing import PreprocessConfig
from imagineid.preprocessing.config import SETTLE_S
from imagineid.settings import settings_from
from tasks.preprocess import (
    extract_clips,
    finalize_clips,
    fit_morphable,
    plan_sources,
    record_manifest,
)
from tasks.summary import publish_summary


@flow(name="preprocess", log_prints=True)
def preprocess_flow(
    sources: list[str],
    out: str,
    dataset: str = "auto",
    workers: int | None = None,
    detector: str = PreprocessConfig.detector,
    crop_size: int = PreprocessConfig.crop_size,
    refit_morphable: bool = False,
    ray_address: str | None = None,
    subject: str = PreprocessConfig.subject,
    min_face_px: float = PreprocessConfig.min_face_px,
    settle_seconds: float = SETTLE_S,
    morphable: str = PreprocessConfig.morphable,
    flame: str | None = None,
    deca: str | None = None,
    speech_model: str | None = None,
    config: dict | None = None,
) -> dict:
    """Preprocess new or changed sources; finished clips are skipped, rejected and lost ones listed.

    Args:
        sources: Video files or folders.
        out: Dataset folder (docs/architecture.md §3); reruns skip clips already in it.
        dataset: Layout of the sources: auto, synthetic, mead, voxceleb2, hdtf or generic.
        workers: Parallel clip workers (default: all cores; 1 = in process, no Ray).
        detector: Face landmarks backend: dlib or fan.
        crop_size: Aligned face crop size in pixels.
        refit_morphable: Fit a new morphable-model version from the new clips.
        ray_address: Ray cluster to join (default: $RAY_ADDRESS, else a local Ray).
        subject: one: the subject's face track per source; all: one clip per persistent face track.
        min_face_px: A subject face narrower than this is rejected as face_too_small.
        settle_seconds: Sources modified less than this many seconds ago (maybe still being copied in)
            are left for the next run.
        morphable: pca (the PCA model fitted here) or flame (FLAME coefficients from DECA; needs flame, deca).
        flame: morphable flame: FLAME generic_model.pkl or its folder.
        deca: morphable flame: DECA deca_model.tar or its folder.
        speech_model: A local wav2vec2 / HuBERT folder: audio/ gets `speech` features.
        config: Preprocess settings as `imagineid preprocess --config` reads them (e.g. {"crop_size": 512}),
            laid over the parameters above.
    """
    settings = PreprocessConfig(
        detector=detector,
        crop_size=crop_size,
        subject=subject,
        min_face_px=min_face_px,
        morphable=morphable,
        flame=flame,
        deca=deca,
        speech_model=speech_model,
    )
    config = settings_from(PreprocessConfig, config or {}, settings)
    store = Store(Path(out))
    store.make_dirs()
    with store.writer_lock():  # one writer per DATA, whether the CLI or a deployment started it
        plan = plan_sources(sources, out, config, dataset, settle_seconds)
        results = extract_clips(plan.pending, out, config, workers, ray_address)
        staged = [r for r in results if r.status == "staged"]
        failed = [r for r in results if r.status != "staged"]
        version, written = "", []
        if staged or refit_morphable:
            version = fit_morphable(out, config, [r.clip_id for r in staged], refit_morphable)
            written, lost = finalize_clips(out, config, staged, workers, ray_address)
            failed += lost
        record_manifest(out, config, plan.jobs)
    failures = [
        {"source": r.source, "status": r.status, "error_type": r.error_type, "message": r.message} for r in failed
    ]
    summary = {
        "sources": len(plan.jobs),
        "skipped": len(plan.jobs) - len(plan.pending),
        "processed": len(written),
        "rejected": sum(r.status == "failed" for r in failed),
        "lost": sum(r.status == "lost" for r in failed),
        "deferred": len(plan.deferred),
        "morphable_version": version,
    }
    publish_summary("preprocess-summary", f"preprocess → {out}", summary, failures)
    print(f"preprocess: {summary}")
    for failure in failures:  # the flow log keeps what the artifact's table cuts short (a worker's traceback)
        if failure["status"] == "lost":
            print(f"{failure['source']}: {failure['message']}")
    return summary


if __name__ == "__main__":
    preprocess_flow(sources=["work/s/videos"], out="work/d")
