"""Prefect flow `preprocess`: videos → the Parquet dataset of DESIGN §3.

    python -m flows.preprocess work/s/videos --out work/d
"""

from __future__ import annotations


from prefect import flow
from prefect.artifacts import create_table_artifact

from imagineid.preprocessing import PreprocessConfig
from tasks.preprocess import extract_clips, finalize_clips, fit_morphable, plan_sources, record_manifest


@flow(name="preprocess", log_prints=True)
def preprocess_flow(
    sources: list[str], out: str, dataset: str = "auto", workers: int | None = None, detector: str = "dlib",
    crop_size: int = 256, refit_morphable: bool = False, ray_address: str | None = None,
) -> dict:
    """Preprocess new or changed sources; finished clips are skipped, rejected ones listed."""
    config = PreprocessConfig(detector=detector, crop_size=crop_size)
    jobs, pending = plan_sources(sources, out, config, dataset)
    results = extract_clips(pending, out, config, workers, ray_address)
    staged = [r.clip_id for r in results if r.status == "staged"]
    version = ""
    if staged or refit_morphable:
        version = fit_morphable(out, config, staged, refit_morphable)
        finalize_clips(out, config, staged)
    record_manifest(out, config, jobs)
    summary = {"sources": len(jobs), "skipped": len(jobs) - len(pending), "processed": len(staged),
               "rejected": len(results) - len(staged), "morphable_version": version}
    rows = [{"source": r.source, "status": r.status, "error_type": r.error_type, "message": r.message} for r in results]
    create_table_artifact(rows or [{"source": "-", "status": "nothing new"}], key="preprocess-summary",
                          description=f"preprocess {out}: {summary}")
    print(f"preprocess: {summary}")
    return summary


if __name__ == "__main__":
    preprocess_flow(sources=["work/s/videos"], out="work/d")
