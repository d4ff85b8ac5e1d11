"""Prefect flow `generate`: audio corpora → talking-face videos + GEN/index.parquet (docs/architecture.md §6).

    python -m flows.generate            # work/demo/run + work/demo/synth_heldout/videos → work/demo/gen

Deployed as `generate/weekly-eval` (prefect.yaml): each week, the evaluation audio set is generated
again with the newest run; finished videos are skipped.
"""

from __future__ import annotations

from prefect import flow

from imagineid.generation.config import GenerateConfig
from imagineid.settings import settings_from
from tasks.generate import failed_videos, generate_videos
from tasks.summary import publish_summary


@flow(name="generate", log_prints=True)
def generate_flow(
    run: str,
    audio: list[str],
    out: str,
    seeds: int = GenerateConfig.seeds,
    batch_size: int = GenerateConfig.batch_size,
    steps: int = GenerateConfig.steps,
    guidance: float = GenerateConfig.guidance,
    strength: float = GenerateConfig.strength,
    identity_from: str | None = None,
    emotion_from: str | None = None,
    precision: str = GenerateConfig.precision,
    first_frame_retries: int = GenerateConfig.first_frame_retries,
    use_ray: bool = True,
    ray_address: str | None = None,
    config: dict | None = None,
) -> dict:
    """Generate a video per (audio, seed); bad audio is listed in the summary, never fails the run.

    Args:
        run: Run folder with every stage trained.
        audio: Audio files or folders (any common format, rate and channel count).
        out: Output folder: videos/, records/, index.parquet; reruns skip finished videos.
        seeds: Videos (imagined identities) per audio.
        batch_size: Continuous-batching slots per worker (1 = the per-clip loop).
        steps: DDIM steps per frame.
        guidance: Classifier-free guidance scale.
        strength: Frames 2..T start from frame 1's latent noised this far (1 = pure noise).
        identity_from: Factor swap: take every video's identity from this audio.
        emotion_from: Factor swap: take every video's emotion from this audio.
        precision: fp32 | bf16 | fp16 | auto (fp16 on GPUs; bf16 on CPUs with native bf16 from 8 clips
            per batch; else fp32).
        first_frame_retries: Redraw frame 1 (next noise of the same seed) while dlib finds no face; 0 = off.
        use_ray: One Ray worker per GPU (one CPU worker without GPUs); False runs in the flow's process.
        ray_address: Ray cluster to join (default: $RAY_ADDRESS, else a local Ray).
        config: Generation settings as `imagineid generate --config` reads them (e.g. {"steps": 30}),
            laid over the parameters above.
    """
    settings = GenerateConfig(
        seeds=seeds,
        batch_size=batch_size,
        steps=steps,
        guidance=guidance,
        strength=strength,
        identity_from=identity_from,
        emotion_from=emotion_from,
        precision=precision,
        first_frame_retries=first_frame_retries,
    )
    summary = generate_videos(
        run, audio, out, settings_from(GenerateConfig, config or {}, settings), ray_address, use_ray
    )
    failures = failed_videos(summary["index"])
    counts = {k: summary[k] for k in ("ok", "failed", "skipped", "generated_frames", "seconds")}
    publish_summary("generate-summary", f"generate → {out}", counts, failures)
    print(f"generate: {counts} → {summary['index']}")
    for error in summary.get("worker_errors", []):  # the others finished its clips; its traceback is kept here
        print(f"a generation worker failed:\n{error}")
    return summary


if __name__ == "__main__":
    generate_flow(run="work/demo/run", audio=["work/demo/synth_heldout/videos"], out="work/demo/gen")
