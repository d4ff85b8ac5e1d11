"""The whole preprocess run, as used by the CLI; the Prefect flow composes the same steps as tasks."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from imagineid.data.layouts import discover
from imagineid.data.parquet_io import SCHEMA_VERSION, write_json_atomic
from imagineid.data.store import Store
from imagineid.media.hashing import file_sha256
from imagineid.parallel import parallel_map, remote_traceback
from imagineid.preprocessing.config import SETTLE_S, PreprocessConfig, clip_id_for
from imagineid.preprocessing.extract import ClipJob, ExtractResult, extract_clip
from imagineid.preprocessing.finalize import finalize_all, fit_or_load_model


@dataclass
class PreprocessSummary:
    n_sources: int = 0
    n_skipped: int = 0  # already in clips/ or failures/ under this config
    n_processed: int = 0  # new rows in clips/ (several per source with subject=all)
    n_failed: int = 0  # new rows in failures/, and clips whose worker was lost (retried next run)
    n_deferred: int = 0  # modified within the settle time: maybe still being written, left for the next run
    failures: list[ExtractResult] = field(default_factory=list)
    by_rule: dict[str, int] = field(default_factory=dict)  # failures per deciding rule (error_type)
    morphable_version: str = ""
    seconds: float = 0.0


def _cached_sha(path: Path, previous: dict) -> str:
    """Reuse the manifest's hash when size and mtime are unchanged (reruns must not re-read datasets)."""
    stat = path.stat()
    entry = previous.get(str(path))
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    return file_sha256(path)


@dataclass
class Plan:
    jobs: list[ClipJob]  # every source found, including finished ones (the manifest records them all)
    pending: list[ClipJob]  # not yet in clips/ or failures/
    deferred: list[str] = field(default_factory=list)  # modified within the settle time: not planned at all


def _recently_modified(path: Path, settle_s: float, now: float) -> bool:
    try:
        return settle_s > 0 and now - path.stat().st_mtime < settle_s
    except OSError:
        return False  # unreadable: planned, so the failure is recorded


def plan_jobs(
    sources: Sequence[str | Path],
    store: Store,
    config: PreprocessConfig,
    dataset: str = "auto",
    settle_s: float = SETTLE_S,
) -> Plan:
    """All jobs, the pending ones (not yet in clips/ or failures/), and the sources left for the next run
    because they were modified less than `settle_s` seconds ago."""
    previous = _read_manifest(store).get("sources", {})
    jobs, deferred = [], []
    now = time.time()
    # Absolute paths: Ray workers on a joined cluster do not share the driver's working directory.
    for clip in discover([Path(s).absolute() for s in sources], dataset):
        if _recently_modified(clip.path, settle_s, now):
            deferred.append(str(clip.path))
            continue
        try:
            sha = _cached_sha(clip.path, previous)
        except OSError:  # unreadable: a stable id from the path, so the failure is recorded once
            sha = "unreadable-" + hashlib.sha256(str(clip.path).encode()).hexdigest()[:16]
        jobs.append(ClipJob(clip, sha, clip_id_for(sha, config.hash)))
    done = store.done_ids("clips") | store.done_ids("failures")
    return Plan(jobs, [j for j in jobs if j.clip_id not in done], deferred)


def extract_all(
    jobs: list[ClipJob],
    store: Store,
    config: PreprocessConfig,
    workers: int | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> list[ExtractResult]:
    fn = functools.partial(extract_clip, root=str(store.root.absolute()), config=config)
    return parallel_map(
        fn,
        jobs,
        workers=workers,
        desc="preprocess",
        progress=progress,
        ray_address=ray_address,
        on_done=on_done,
        on_error=worker_lost,
    )


def worker_lost(job: ClipJob, err: Exception) -> ExtractResult:
    """A clip whose worker died on every Ray attempt (killed, out of memory), or raised what the extractor
    does not expect (a bug: the worker's traceback is kept): listed, but not written to failures/, so the
    clip stays pending and the next run tries it again."""
    import ray.exceptions

    if isinstance(err, ray.exceptions.RayTaskError):
        what, detail = "the worker raised", remote_traceback(err)
    else:
        what, detail = "worker lost on every attempt", (str(err).strip().splitlines() or [""])[0][:300]
    return ExtractResult(
        job.clip_id,
        str(job.source.path),
        "lost",
        type(err).__name__,
        f"{what}; not recorded, the next run retries it. {detail}".strip(),
    )


def _with_further_faces(store: Store, clip_ids: set[str]) -> set[str]:
    """The clips ids plus the clips of further face tracks of the same sources (subject=all)."""
    if not clip_ids:
        return clip_ids
    try:
        rows = store.read_table("clips", ["clip_id", "source_clip_id"]).to_pylist()
    except (KeyError, ValueError, pa.ArrowInvalid):  # a dataset from before subject tracks
        return clip_ids
    return clip_ids | {r["clip_id"] for r in rows if r["source_clip_id"] in clip_ids}


def _read_manifest(store: Store) -> dict:
    return json.loads(store.manifest.read_text()) if store.manifest.exists() else {}


def write_manifest(store: Store, config: PreprocessConfig, jobs: list[ClipJob]) -> None:
    """Merge this run's sources into the manifest; each source's status comes from the shards on disk.

    A source whose file changed (same path and config, new content) replaces its old clip once the new
    version is in clips/; the old clip's shards are deleted then, so the dataset mirrors the sources. A
    rejected new version never costs the good old clip: it stays (`kept_clip_id`) until a version of
    that source is processed.
    """
    manifest = _read_manifest(store)
    sources = manifest.get("sources", {})
    clips, failures = store.done_ids("clips"), store.done_ids("failures")
    superseded = set()
    for job in jobs:
        before = sources.get(str(job.source.path), {})
        same_config = before.get("config_hash") == config.hash
        older = {before.get("clip_id"), before.get("kept_clip_id")} - {None, job.clip_id} if same_config else set()
        good_old = [c for c in older if c in clips]  # an earlier version of this source still in the dataset
        if job.clip_id in clips:
            superseded |= older
        try:
            stat = job.source.path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = None, None
        status = "done" if job.clip_id in clips else "failed" if job.clip_id in failures else "pending"
        sources[str(job.source.path)] = {
            "sha256": job.sha256,
            "clip_id": job.clip_id,
            "status": status,
            "size": size,
            "mtime_ns": mtime,
            "config_hash": config.hash,
            "kept_clip_id": good_old[0] if good_old and job.clip_id not in clips else None,
        }
    in_use = {c for entry in sources.values() for c in (entry["clip_id"], entry.get("kept_clip_id")) if c}
    for clip_id in _with_further_faces(store, superseded - in_use):
        store.remove_clip(clip_id)  # (a clip id still used by another path is kept)
    configs = manifest.get("configs", {})
    configs[config.hash] = config.to_dict()
    write_json_atomic(
        store.manifest,
        {
            "schema_version": SCHEMA_VERSION,
            "config": config.to_dict(),
            "config_hash": config.hash,
            "configs": configs,
            "sources": sources,
        },
    )


def preprocess(
    sources: Sequence[str | Path],
    out: str | Path,
    config: PreprocessConfig = PreprocessConfig(),
    dataset: str = "auto",
    workers: int | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    refit_morphable: bool = False,
    settle_s: float = SETTLE_S,
) -> PreprocessSummary:
    """Preprocess every new source under `sources` into the dataset folder `out`; sources modified less
    than `settle_s` seconds ago are left for the next run (counted in `n_deferred`)."""
    start = time.perf_counter()
    store = Store(Path(out))
    store.make_dirs()
    with store.writer_lock():
        return _preprocess(
            store, sources, config, dataset, workers, progress, ray_address, refit_morphable, settle_s, start
        )


def _preprocess(
    store: Store,
    sources: Sequence[str | Path],
    config: PreprocessConfig,
    dataset: str,
    workers: int | None,
    progress: bool,
    ray_address: str | None,
    refit_morphable: bool,
    settle_s: float,
    start: float,
) -> PreprocessSummary:
    store.remove_orphans()  # safe: the writer lock says no other run is writing here
    plan = plan_jobs(sources, store, config, dataset, settle_s)
    jobs, pending = plan.jobs, plan.pending
    results = extract_all(pending, store, config, workers, progress, ray_address)
    staged = [r for r in results if r.status == "staged"]
    summary = PreprocessSummary(
        n_sources=len(jobs),
        n_skipped=len(jobs) - len(pending),
        n_deferred=len(plan.deferred),
        failures=[r for r in results if r.status != "staged"],
    )
    if staged or refit_morphable:
        model = fit_or_load_model(store, config, [r.clip_id for r in staged], refit_morphable)
        written, lost = finalize_all(store, staged, config, workers, progress, ray_address)
        summary.n_processed = len(written)
        summary.failures += lost
        summary.morphable_version = model.version
    summary.n_failed = len(summary.failures)
    counts = Counter(r.error_type for r in summary.failures)
    summary.by_rule = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))  # most first, then by name
    write_manifest(store, config, jobs)
    summary.seconds = time.perf_counter() - start
    return summary
