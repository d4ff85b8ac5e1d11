"""The generate job: audio files × seeds → talking-face videos + an index (docs/architecture.md §6, issue 6).

    summary = generate(RUN, ["speech/"], GEN, GenerateConfig(seeds=2, batch_size=16))

Audio is streamed file by file (a corpus of thousands is never loaded whole); each file is decoded to
16 kHz mono, checked (unreadable, silent, too short → a failed record, the rest goes on), turned into
per-frame conditions by the disentangler, and its seeds are queued for the continuous batcher. Finished
videos are skipped on re-runs. With Ray, one worker per GPU takes a share of the audio files; on a
CPU-only machine one local worker (or none: `use_ray=False`) does it all.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from imagineid.audio.features import check_audio, log_mel
from imagineid.data.parquet_io import write_json_atomic
from imagineid.data.labels import EMOTIONS
from imagineid.errors import ImagineIDError
from imagineid.generation.conditions import ClipPlan, Planner
from imagineid.generation.outputs import GenFolder, video_key, video_stems
from imagineid.generation.prefetch import prefetched
from imagineid.generation.scheduler import ContinuousBatcher, Job
from imagineid.listening import discover_audio
from imagineid.media import VideoStream, load_audio
from imagineid.pipelines.pipeline_imagineid import DEFAULT_STRENGTH, ImagineIDPipeline
from imagineid.precision import check as check_precision
from imagineid.preprocessing.config import file_sha256
from imagineid.training.loop import pick_device
from imagineid.training.run_dir import RunDir

SAMPLE_RATE = 16000
FPS = 25
FRAME1_MIN_SCORE = 0.3  # dlib HOG detection score a frame 1 must reach to be kept


@dataclass
class GenerateConfig:
    seeds: int = 1  # videos per audio, seeds 0..seeds-1
    batch_size: int = 8  # continuous-batching slots (1 = the per-clip loop)
    steps: int = 20  # DDIM steps per frame
    guidance: float = 2.0  # classifier-free guidance scale
    strength: float = DEFAULT_STRENGTH  # frames 2..T start from frame 1's latent noised this far (1 = pure noise)
    identity_from: str | None = None  # factor swap: identity of every video from this audio
    emotion_from: str | None = None  # factor swap: emotion of every video from this audio
    crf: int = 18  # libx264 quality of the output videos
    first_frame_retries: int = 7  # redraw frame 1 (next noise of the same seed) while dlib finds no face; 0 = off
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto: fp16 on GPUs, bf16 on native-bf16 CPUs for B ≥ 8, else fp32


@dataclass
class Source:
    """One content audio and the seeds still to generate for it."""

    path: str
    stem: str
    seeds: list[int]
    keys: list[str] = field(default_factory=list)
    sha256: str | None = None  # of the audio file: a changed file is regenerated


def _mel(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """→ (16 kHz mono samples, raw log-mel (N, 80)); raises ImagineIDError on unusable audio."""
    samples = load_audio(path, SAMPLE_RATE)
    check_audio(samples, SAMPLE_RATE)
    return samples, log_mel(samples)


def _record(source: Source, seed: int, key: str, cfg: GenerateConfig, plan: ClipPlan | None = None,
            frames: int = 0, error: str | None = None) -> dict:
    return {
        "key": key, "audio": source.path, "stem": source.stem, "audio_sha256": source.sha256, "seed": seed, "video": f"videos/{key}.mp4" if error is None else None,
        "frames": frames, "seconds": frames / FPS, "status": "ok" if error is None else "failed", "error": error,
        "identity_audio": cfg.identity_from or source.path, "emotion_audio": cfg.emotion_from or source.path,
        "predicted_gender": plan.gender if plan else None,
        "predicted_emotion": EMOTIONS[int(np.argmax(plan.emotion))] if plan else None,
        "mesh_mouth_opening": plan.mouth_opening.astype(np.float32).tolist() if plan else None,
    }


def _decoded(sources: Sequence[Source]) -> Iterator[tuple[Source, tuple[np.ndarray, np.ndarray] | Exception]]:
    """Per audio: (samples, raw log-mel), or the error that made it unusable."""
    for source in sources:
        try:
            yield source, _mel(source.path)
        except (ImagineIDError, ValueError) as err:
            yield source, err


def _jobs(sources: Sequence[Source], planner: Planner, folder: GenFolder, cfg: GenerateConfig,
          swap_mels: dict[str, np.ndarray]) -> Iterator[Job]:
    """Lazily: per audio, its plan and one job per seed; unusable audio → failed records, no job.

    Audio is decoded ahead in a thread (ffmpeg processes, no torch) so a clip joining the batch does not
    stall it; the disentangler runs here, in the caller's thread: torch ops in two threads at once
    fight over the same cores (measured: the per-clip loop 2.8× slower).
    """
    for source, decoded in prefetched(_decoded(sources), depth=max(2, cfg.batch_size // 2)):
        try:
            if isinstance(decoded, Exception):
                raise decoded
            samples, mel = decoded
            utt = planner.listener.prepare(samples, mel)  # the voice front end runs here: it uses torch
            plan = planner.plan(swap_mels.get("identity", utt), utt, swap_mels.get("emotion", utt))
        except (ImagineIDError, ValueError) as err:
            for seed, key in zip(source.seeds, source.keys):
                folder.record(_record(source, seed, key, cfg, error=f"{type(err).__name__}: {err}"))
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


OUTPUT_SETTINGS = ("steps", "guidance", "strength", "crf", "first_frame_retries", "identity_from", "emotion_from",
                   "precision")


def provenance(run: Path, cfg: GenerateConfig) -> dict:
    """What decides a video's pixels besides its audio and seed: the trained generator (a digest of its
    configs, weight file sizes and stage completion records, cheap even for SD 1.5) and the settings.
    Seeds and batch size are left out: more seeds extend a folder, and batching changes frames only by
    rounding (fp32) or a few grey levels on a few pixels (bf16 / fp16). The precision is kept as asked
    ("auto" resolves per worker; each record holds the resolved one)."""
    digest = hashlib.sha256()
    for path in sorted((run / "pipeline").rglob("*")) + sorted(run.glob("*/done.json")):
        if path.is_file():
            rel = path.relative_to(run).as_posix()
            digest.update(rel.encode())
            digest.update(path.read_bytes() if path.suffix == ".json" else str(path.stat().st_size).encode())
    return {"generator": digest.hexdigest()[:16], **{k: getattr(cfg, k) for k in OUTPUT_SETTINGS}}


def check_run(run: Path) -> None:
    """Fail before any work when the run lacks the frame generator (cheap: no weights are read)."""
    if not (run / "pipeline" / "model_index.json").exists() or not RunDir(run).is_done("adapters"):
        raise ImagineIDError(f"{run} has no trained frame generator (RUN/pipeline); train it with "
                             f"`imagineid train DATA --out {run} --stages ldm,adapters`")


def load_pipeline(run: Path, device: torch.device | None = None) -> ImagineIDPipeline:
    check_run(run)
    return ImagineIDPipeline.from_pretrained(run / "pipeline").to(device or pick_device())


def generate_shard(run: str | Path, sources: Sequence[Source], out: str | Path, cfg: GenerateConfig,
                   progress: bool = True) -> dict:
    """Generate every (source, seed) of this shard; per-video outcomes go to GEN/records. → counts."""
    torch.set_flush_denormal(True)  # CPU: denormal floats slow the VAE 10-20x
    run, folder = Path(run), GenFolder(Path(out))
    folder.videos.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(run)
    planner = Planner.load(run, size=pipe.vae.config.sample_size,
                           identity_dim=pipe.textual_inversion.config.identity_dim)
    swap_mels = {name: planner.listener.prepare(*_mel(path))
                 for name, path in (("identity", cfg.identity_from), ("emotion", cfg.emotion_from)) if path}
    batcher = ContinuousBatcher(pipe, cfg.batch_size, cfg.steps, cfg.guidance, accept_first=face_found(),
                                first_frame_retries=cfg.first_frame_retries, strength=cfg.strength,
                                precision=cfg.precision)
    counts = {"ok": 0, "failed": 0, "frames": 0}
    total = sum(len(s.seeds) for s in sources)
    start = time.perf_counter()
    with tqdm(total=total, desc="generate", unit="video", disable=not progress) as bar:
        for result in batcher.run(_jobs(sources, planner, folder, cfg, swap_mels)):
            source = result.job.info["source"]
            folder.record({**_record(source, result.job.seed, result.job.key, cfg, result.job.plan,
                                     result.frames if result.error is None else 0, result.error),
                           "first_frame_attempts": result.first_frame_attempts, "precision": batcher.precision})
            counts["ok" if result.error is None else "failed"] += 1
            counts["frames"] += result.frames if result.error is None else 0
            bar.update(1)
            bar.set_postfix(fps=f"{batcher.frames_done / (time.perf_counter() - start):.1f}")
    counts["failed"] = total - counts["ok"]  # includes audio rejected before it became a job
    counts["generated_frames"] = batcher.frames_done
    return counts


def plan_sources(audio: Sequence[str | Path], folder: GenFolder, seeds: int,
                 cfg: GenerateConfig) -> tuple[list[Source], int]:
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


def generate(run: str | Path, audio: Sequence[str | Path], out: str | Path, cfg: GenerateConfig = GenerateConfig(),
             use_ray: bool = True, ray_address: str | None = None, num_gpus: float = 1.0,
             progress: bool = True) -> dict:
    """Generate every (audio, seed) not yet finished in OUT; → a summary (counts, index path, seconds)."""
    run, out = Path(run), Path(out)
    cfg = replace(cfg, **{k: str(Path(v).resolve()) for k in ("identity_from", "emotion_from") if (v := getattr(cfg, k))})
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
            from imagineid.generation.workers import generate_on_ray

            counts = generate_on_ray(run, sources, out, cfg, ray_address, num_gpus, progress)
        else:
            counts = generate_shard(run, sources, out, cfg, progress)
        index = folder.write_index()
        write_json_atomic(out / "generate.json", {"run": str(run.resolve()), "config": asdict(cfg)})
    return {**counts, "skipped": skipped, "index": str(index), "videos": str(folder.videos),
            "seconds": round(time.perf_counter() - start, 2), "config": asdict(cfg)}

