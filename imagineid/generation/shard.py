"""One worker's share of a generate job: decode each audio, plan its frames with the disentangler, and run
the continuous batcher over its seeds; every outcome becomes a record in GEN/records.

Audio is decoded ahead in a thread, so a clip joining the batch does not stall it; audio that cannot be
used (unreadable, silent, too short) becomes a failed record and the rest goes on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from imagineid.audio.features import FPS, SAMPLE_RATE, check_audio, log_mel
from imagineid.data.labels import EMOTIONS
from imagineid.errors import ImagineIDError
from imagineid.generation.conditions import ClipPlan, Planner
from imagineid.generation.config import GenerateConfig, Source
from imagineid.generation.outputs import GenFolder
from imagineid.generation.prefetch import prefetched
from imagineid.generation.scheduler import ContinuousBatcher, Job
from imagineid.media import VideoStream, load_audio
from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline
from imagineid.precision import pick_device
from imagineid.runs.folder import RunDir

FRAME1_MIN_SCORE = 0.3  # dlib HOG detection score a frame 1 must reach to be kept


def _mel(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """→ (16 kHz mono samples, raw log-mel (N, 80)); raises ImagineIDError on unusable audio."""
    samples = load_audio(path, SAMPLE_RATE)
    check_audio(samples, SAMPLE_RATE)
    return samples, log_mel(samples)


def _record(
    source: Source,
    seed: int,
    key: str,
    cfg: GenerateConfig,
    plan: ClipPlan | None = None,
    frames: int = 0,
    error: str | None = None,
) -> dict:
    return {
        "key": key,
        "audio": source.path,
        "stem": source.stem,
        "audio_sha256": source.sha256,
        "seed": seed,
        "video": f"videos/{key}.mp4" if error is None else None,
        "frames": frames,
        "seconds": frames / FPS,
        "status": "ok" if error is None else "failed",
        "error": error,
        "identity_audio": cfg.identity_from or source.path,
        "emotion_audio": cfg.emotion_from or source.path,
        "predicted_gender": plan.gender if plan else None,
        "predicted_emotion": EMOTIONS[int(np.argmax(plan.emotion))] if plan else None,
        "mesh_mouth_opening": plan.mouth_opening.astype(np.float32).tolist() if plan else None,
    }


def _decoded(sources: Iterable[Source]) -> Iterator[tuple[Source, tuple[np.ndarray, np.ndarray] | Exception]]:
    """Per audio: (samples, raw log-mel), or the error that made it unusable."""
    for source in sources:
        try:
            yield source, _mel(source.path)
        except (ImagineIDError, ValueError) as err:
            yield source, err


def _jobs(
    sources: Iterable[Source],
    planner: Planner,
    folder: GenFolder,
    cfg: GenerateConfig,
    swap_mels: dict[str, np.ndarray],
    record: Callable[[dict], None],
    depth: int,
) -> Iterator[Job]:
    """Lazily: per audio, its plan and one job per seed; unusable audio → failed records, no job.

    Audio is decoded ahead in a thread (ffmpeg processes, no torch) so a clip joining the batch does not
    stall it; the disentangler runs here, in the caller's thread: torch ops in two threads at once
    fight over the same cores and slow the per-clip loop severalfold.
    """
    for source, decoded in prefetched(_decoded(sources), depth=depth):
        try:
            if isinstance(decoded, Exception):
                raise decoded
            samples, mel = decoded
            utt = planner.listener.prepare(samples, mel)  # the voice front end runs here: it uses torch
            plan = planner.plan(swap_mels.get("identity", utt), utt, swap_mels.get("emotion", utt))
        except (ImagineIDError, ValueError) as err:
            for seed, key in zip(source.seeds, source.keys):
                record(_record(source, seed, key, cfg, error=f"{type(err).__name__}: {err}"))
            continue
        for seed, key in zip(source.seeds, source.keys):

            def open_sink(key: str = key, samples: np.ndarray = samples) -> VideoStream:
                return VideoStream(folder.video(key), fps=FPS, audio=samples, sample_rate=SAMPLE_RATE, crf=cfg.crf)

            yield Job(key=key, seed=seed, plan=plan, open_sink=open_sink, info={"source": source})


def face_found(min_score: float = FRAME1_MIN_SCORE) -> Callable[[np.ndarray], bool]:
    """The frame-1 acceptance test: dlib's HOG detector on the frame upscaled to 256 px, with a margin
    (a face found at score ≈ 0 tends to dissolve in the frames that copy it, and H.264 costs a little)."""
    from imagineid.face.dlib_backend import DlibLandmarker, upscaled

    landmarker = DlibLandmarker(upsample=1)

    def accept(frame: np.ndarray) -> bool:
        boxes = landmarker.detect(upscaled(frame))
        return bool(boxes) and boxes[0].score >= min_score

    return accept


def check_run(run: Path) -> None:
    """Fail before any work when the run lacks the frame generator (cheap: no weights are read)."""
    if not RunDir(run).has_generator():
        raise ImagineIDError(
            f"{run} has no trained frame generator (RUN/pipeline); train it with "
            f"`imagineid train DATA --out {run} --stages ldm,adapters`"
        )


def load_pipeline(run: Path, device: torch.device | None = None) -> ImagineIDPipeline:
    check_run(run)
    return ImagineIDPipeline.from_pretrained(RunDir(run).pipeline).to(device or pick_device())


def generate_shard(
    run: str | Path,
    sources: Iterable[Source],
    out: str | Path,
    cfg: GenerateConfig,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
    tags: dict[str, str] | None = None,
    prefetch: int | None = None,
) -> dict:
    """Generate every (source, seed) of `sources`; per-video outcomes go to GEN/records. → counts.

    `sources` may be a lazy iterable (a Ray worker pulling from the shared queue); `on_record` hears of
    each record once it is written, `tags` are added to every record (default: the worker's host and
    process, as `worker`), and `prefetch` sources are decoded
    ahead (default: half a batch; a queue worker takes 1 so it does not hold work another could do).
    """
    torch.set_flush_denormal(True)  # CPU: denormal floats slow the VAE 10-20x
    run, folder = Path(run), GenFolder(Path(out))
    folder.videos.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(run)
    planner = Planner.load(
        run, size=pipe.vae.config.sample_size, identity_dim=pipe.textual_inversion.config.identity_dim
    )
    swap_mels = {
        name: planner.listener.prepare(*_mel(path))
        for name, path in (("identity", cfg.identity_from), ("emotion", cfg.emotion_from))
        if path
    }
    batcher = ContinuousBatcher(
        pipe,
        cfg.batch_size,
        cfg.steps,
        cfg.guidance,
        accept_first=face_found(),
        first_frame_retries=cfg.first_frame_retries,
        strength=cfg.strength,
        precision=cfg.precision,
    )
    tags = {"worker": f"{socket.gethostname()}:{os.getpid()}", **(tags or {})}

    def record(row: dict) -> None:
        folder.record({**row, **tags})
        if on_record is not None:
            on_record(row)

    seen = [0]

    def counted(items: Iterable[Source]) -> Iterator[Source]:
        for source in items:
            seen[0] += len(source.seeds)
            yield source

    counts = {"ok": 0, "failed": 0, "frames": 0}
    total = sum(len(s.seeds) for s in sources) if isinstance(sources, Sequence) else None
    depth = prefetch or max(2, cfg.batch_size // 2)
    start = time.perf_counter()
    with tqdm(total=total, desc="generate", unit="video", disable=not progress) as bar:
        for result in batcher.run(_jobs(counted(sources), planner, folder, cfg, swap_mels, record, depth)):
            source = result.job.info["source"]
            record(
                {
                    **_record(
                        source,
                        result.job.seed,
                        result.job.key,
                        cfg,
                        result.job.plan,
                        result.frames if result.error is None else 0,
                        result.error,
                    ),
                    "first_frame_attempts": result.first_frame_attempts,
                    "precision": batcher.precision,
                }
            )
            counts["ok" if result.error is None else "failed"] += 1
            counts["frames"] += result.frames if result.error is None else 0
            bar.update(1)
            bar.set_postfix(fps=f"{batcher.frames_done / (time.perf_counter() - start):.1f}")
    counts["failed"] = seen[0] - counts["ok"]  # includes audio rejected before it became a job
    counts["generated_frames"] = batcher.frames_done
    return counts
