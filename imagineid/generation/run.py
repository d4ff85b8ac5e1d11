"""The generate job: audio files × seeds → talking-face videos + an index (docs/architecture.md §6, issue 6).

    summary = generate(RUN, ["speech/"], GEN, GenerateConfig(seeds=2, batch_size=16))

Audio is streamed file by file (a corpus of thousands is never loaded whole); each file is decoded to
16 kHz mono, checked (unreadable, silent, too short → a failed record, the rest goes on), turned into
per-frame conditions by the disentangler, and its seeds are queued for the continuous batcher. Finished
videos are skipped on re-runs. With Ray, one worker per GPU pulls audio files from a shared queue
(`workers.py`); on a CPU-only machine one local worker (or none: `use_ray=False`) does it all.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from imagineid.data.parquet_io import write_json_atomic
from imagineid.errors import ImagineIDError
from imagineid.generation.config import OUTPUT_SETTINGS, GenerateConfig, Source
from imagineid.generation.outputs import GenFolder, video_key, video_stems
from imagineid.generation.shard import check_run, generate_shard
from imagineid.generation.workers import generate_on_ray
from imagineid.listening import discover_audio
from imagineid.media.hashing import file_sha256
from imagineid.precision import check as check_precision
from imagineid.runs.folder import RunDir


def provenance(run: Path, cfg: GenerateConfig) -> dict:
    """What decides a video's pixels besides its audio and seed: the trained generator (a digest of its
    configs, weight file sizes and stage completion records, cheap even for SD 1.5) and the settings.
    Seeds and batch size are left out: more seeds extend a folder, and batching changes frames only by
    rounding (fp32) or a few grey levels on a few pixels (bf16 / fp16). The precision is kept as asked
    ("auto" resolves per worker; each record holds the resolved one)."""
    digest = hashlib.sha256()
    for path in sorted(RunDir(run).pipeline.rglob("*")) + sorted(run.glob("*/done.json")):
        if path.is_file():
            rel = path.relative_to(run).as_posix()
            digest.update(rel.encode())
            digest.update(path.read_bytes() if path.suffix == ".json" else str(path.stat().st_size).encode())
    return {"generator": digest.hexdigest()[:16], **{k: getattr(cfg, k) for k in OUTPUT_SETTINGS}}


def plan_sources(
    audio: Sequence[str | Path], folder: GenFolder, seeds: int, cfg: GenerateConfig
) -> tuple[list[Source], int]:
    """Discover audio; → (sources with their unfinished seeds, number of finished videos skipped)."""
    paths = discover_audio(audio)
    if not paths:
        raise ImagineIDError(f"no audio found in {', '.join(map(str, audio))}")
    stem_of = video_stems(paths, folder.stem_owners())
    swap = {k: Path(v).stem if v else None for k, v in (("identity", cfg.identity_from), ("emotion", cfg.emotion_from))}
    sources, skipped = [], 0
    for path in paths:
        try:
            sha = file_sha256(path)
        except OSError:
            sha = None  # unreadable: decoding records the error
        source = Source(str(path.resolve()), stem_of[path], [], sha256=sha)  # absolute: Ray workers may run elsewhere
        for seed in range(seeds):
            key = video_key(source.stem, seed, swap["identity"], swap["emotion"])
            if folder.is_finished(key, sha):
                skipped += 1
            else:
                source.seeds.append(seed)
                source.keys.append(key)
        if source.seeds:
            sources.append(source)
    return sources, skipped


def generate(
    run: str | Path,
    audio: Sequence[str | Path],
    out: str | Path,
    cfg: GenerateConfig = GenerateConfig(),
    use_ray: bool = True,
    ray_address: str | None = None,
    num_gpus: float = 1.0,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate every (audio, seed) not yet finished in OUT; → a summary (counts, index path, seconds).

    `on_progress(done, total)` hears of each video recorded in this run (e.g. a Prefect progress artifact)."""
    run, out = Path(run), Path(out)
    cfg = replace(
        cfg, **{k: str(Path(v).resolve()) for k in ("identity_from", "emotion_from") if (v := getattr(cfg, k))}
    )
    start = time.perf_counter()
    check_run(run)
    try:  # resolved where the model runs; only the name can be checked here
        check_precision(cfg.precision)
    except ValueError as err:
        raise ImagineIDError(str(err)) from None
    with GenFolder(out) as folder:
        folder.claim(provenance(run, cfg))
        sources, skipped = plan_sources(audio, folder, cfg.seeds, cfg)
        if not sources:
            counts = {"ok": 0, "failed": 0, "frames": 0, "generated_frames": 0}
        elif use_ray:
            counts = generate_on_ray(run, sources, out, cfg, ray_address, num_gpus, progress, on_progress)
        else:
            total, done = sum(len(s.keys) for s in sources), itertools.count(1)
            heard = (lambda _row: on_progress(next(done), total)) if on_progress else None
            counts = generate_shard(run, sources, out, cfg, progress, on_record=heard)
        index = folder.write_index()
        write_json_atomic(out / "generate.json", {"run": str(run.resolve()), "config": asdict(cfg)})
    return {
        **counts,
        "skipped": skipped,
        "index": str(index),
        "videos": str(folder.videos),
        "seconds": round(time.perf_counter() - start, 2),
        "config": asdict(cfg),
    }
