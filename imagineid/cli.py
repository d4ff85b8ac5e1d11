"""The `imagineid` command line (docs/architecture.md §6).

    imagineid synth work/s --speakers 4 --clips-per-speaker 2 --seconds 3 --seed 1

Every command exits 0 when the run completed (even if some inputs were rejected and recorded) and
non-zero with a one-line reason when nothing could be done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console

from imagineid.data.layouts import DATASETS
from imagineid.errors import ImagineIDError
from imagineid.evaluation.metric_info import LANDMARK_BACKENDS
from imagineid.generation.config import GenerateConfig
from imagineid.precision import CHOICES as PRECISIONS
from imagineid.preprocessing.config import DETECTORS, MORPHABLES, SETTLE_S, SUBJECTS, PreprocessConfig
from imagineid.training.config import PROFILES, TrainConfig

app = typer.Typer(
    help="Talking-face videos imagined from audio alone (FaceChain-ImagineID).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # errors and progress
out_console = Console(soft_wrap=True)  # summaries


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _print_fields(fields: dict[str, object]) -> None:
    for key, value in fields.items():
        out_console.print(f"  {key:>22}: {value:.3f}" if isinstance(value, float) else f"  {key:>22}: {value}")


def _given(ctx: typer.Context, **options: object) -> dict[str, object]:
    """The options the user gave (command line or environment), not their defaults: they override a
    --config file."""
    # by name: typer may bring its own copy of click, whose enum is not click's
    return {
        name: value
        for name, value in options.items()
        if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    }


def _settings(cls: type, config_file: Path | None, given: dict[str, object]):
    """A job's settings: the defaults, then the --config file, then the options given (one line on error)."""
    from imagineid.settings import read_settings, settings_from

    with _reported(ValueError, OSError):
        return settings_from(cls, given, base=settings_from(cls, read_settings(config_file) if config_file else {}))


def _config_file_option(job: str) -> typer.Option:
    return typer.Option(
        None, "--config", help=f"{job} settings (YAML or JSON); options given on the command line override it."
    )


@contextlib.contextmanager
def _reported(*also: type[Exception]) -> Iterator[None]:
    """The project's errors (and `also`) end the command with one red line, never a traceback: exit 2
    for a part that is not built yet, else 1."""
    try:
        yield
    except (ImagineIDError, *also) as err:
        _fail(str(err), code=2 if getattr(err, "kind", "") == "not_built" else 1)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder: videos/*.mp4 and metadata.parquet."),
    speakers: int = typer.Option(6, min=1, help="Number of speakers (identities with a voice)."),
    clips_per_speaker: int = typer.Option(4, min=1, help="Clips per speaker."),
    seconds: float = typer.Option(3.0, min=0.5, help="Duration of each clip in seconds."),
    size: int = typer.Option(256, min=64, help="Frame size in pixels (square)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same corpus."),
    verify: bool = typer.Option(False, help="Decode the corpus and check it against its ground truth."),
) -> None:
    """Synthesize a talking-face corpus with ground truth (speech, faces, visemes, landmarks)."""
    from imagineid.synth.corpus import SynthConfig, synthesize_corpus

    config = SynthConfig(speakers=speakers, clips_per_speaker=clips_per_speaker, seconds=seconds, size=size, seed=seed)
    with _reported():
        summary = synthesize_corpus(out, config)
    out_console.print(
        f"[green]synth:[/] {summary.n_clips} clips of {summary.n_speakers} speakers "
        f"({summary.n_frames} frames, {summary.n_rendered} rendered now) in {summary.seconds:.1f}s "
        f"→ {out / 'videos'}, {out / 'metadata.parquet'}"
    )
    if verify:
        from imagineid.synth.check import check_corpus

        _print_fields(check_corpus(out).as_dict())


def _check_pretrained_preprocess(detector: str, morphable: str, flame: Optional[Path], deca: Optional[Path]) -> dict:
    """Fail before any long work when a bring-your-own file is missing (docs/pretrained.md); returns the
    FLAME / DECA files (a folder resolves to its file, so both spellings give the same config)."""
    if morphable not in ("pca", "flame"):
        raise ImagineIDError(f"--morphable must be pca or flame, got {morphable!r}")
    if morphable == "flame":
        from imagineid.face.flame_morphable import resolve_files

        if flame is None or deca is None:
            raise ImagineIDError(
                "--morphable flame needs --flame PATH and --deca PATH (see docs/pretrained.md § FLAME and § DECA)"
            )
        files = resolve_files(flame, deca)
    elif flame is not None or deca is not None:
        raise ImagineIDError("--flame / --deca are used with --morphable flame only")
    if detector == "fan":
        from imagineid.face.fan_backend import check_checkpoints

        check_checkpoints()
    return files if morphable == "flame" else {}


def _by_rule(counts: dict[str, int]) -> str:
    """ " (ambiguous_subject 2, no_face 1)": which rule rejected how many sources."""
    return f" ({', '.join(f'{rule} {n}' for rule, n in counts.items())})" if counts else ""


@app.command()
def preprocess(
    ctx: typer.Context,
    src: list[Path] = typer.Argument(..., help="Video files or folders."),
    out: Path = typer.Option(..., "--out", help="Dataset folder (docs/architecture.md §3)."),
    workers: Optional[int] = typer.Option(None, help="Parallel clip workers (default: all cores; 1 = no Ray)."),
    detector: Literal[DETECTORS] = typer.Option(PreprocessConfig.detector, help="Face detector and landmarks."),
    morphable: Literal[MORPHABLES] = typer.Option(
        PreprocessConfig.morphable, help="3DMM: PCA of the 68 landmarks, or FLAME (--flame / --deca)."
    ),
    dataset: Literal[DATASETS] = typer.Option("auto", help="Source layout (labels, speaker ids); auto: detect."),
    crop_size: int = typer.Option(PreprocessConfig.crop_size, help="Aligned face crop size in pixels."),
    refit_morphable: bool = typer.Option(False, help="Fit a new morphable-model version."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Join a Ray cluster."),
    flame: Optional[Path] = typer.Option(None, help="--morphable flame: FLAME generic_model.pkl or its folder."),
    deca: Optional[Path] = typer.Option(None, help="--morphable flame: DECA deca_model.tar or its folder."),
    speech_model: Optional[Path] = typer.Option(
        None, help="Local wav2vec2 / HuBERT folder: adds `speech` features to audio/."
    ),
    subject: Literal[SUBJECTS] = typer.Option(
        PreprocessConfig.subject, help="one: the speaker's face per video | all: one clip per persistent face."
    ),
    min_face_px: float = typer.Option(
        PreprocessConfig.min_face_px, help="Reject faces narrower than this (median detector box, px)."
    ),
    settle_seconds: float = typer.Option(
        SETTLE_S,
        min=0.0,
        help="Leave sources modified less than this many seconds ago (still being copied in?) for the next run.",
    ),
    config_file: Optional[Path] = _config_file_option("Preprocess"),
) -> None:
    """Videos → landmarks, 3DMM coefficients, masks and audio features (Parquet).

    Settings come from the defaults, then --config, then the options given on the command line."""
    from dataclasses import replace

    from rich.markup import escape

    from imagineid.preprocessing import PreprocessConfig
    from imagineid.preprocessing import preprocess as run_preprocess

    missing = [str(p) for p in src if not p.exists()]
    if len(missing) == len(src):
        _fail(f"no such file or folder: {', '.join(missing)}")
    given = _given(
        ctx,
        detector=detector,
        morphable=morphable,
        crop_size=crop_size,
        subject=subject,
        min_face_px=min_face_px,
        **{k: str(v) for k, v in (("flame", flame), ("deca", deca), ("speech_model", speech_model)) if v},
    )
    settings = _settings(PreprocessConfig, config_file, given)
    flame, deca = (Path(p) if p else None for p in (settings.flame, settings.deca))
    speech_model = Path(settings.speech_model) if settings.speech_model else None
    with _reported():
        files = _check_pretrained_preprocess(settings.detector, settings.morphable, flame, deca)
        if speech_model is not None:
            from imagineid.audio.speech_model import SpeechEncoder

            SpeechEncoder.load(speech_model)  # fail now, not in every worker
    with _reported(ValueError):
        config = replace(
            settings,
            **{k: str(files[k].resolve()) for k in ("flame", "deca") if k in files},
            speech_model=str(speech_model.expanduser().resolve()) if speech_model else None,
        )
    with _reported(ValueError):
        summary = run_preprocess(
            src,
            out,
            config,
            dataset=dataset,
            workers=workers,
            ray_address=ray_address,
            refit_morphable=refit_morphable,
            settle_s=settle_seconds,
        )
    if summary.n_sources + summary.n_deferred == 0:
        _fail(f"no videos found under {', '.join(map(str, src))}")
    deferred = (
        f", {summary.n_deferred} left for the next run (modified < {settle_seconds:g}s ago)"
        if summary.n_deferred
        else ""
    )
    out_console.print(
        f"[green]preprocess:[/] {summary.n_sources + summary.n_deferred} sources: {summary.n_processed} processed, "
        f"{summary.n_failed} rejected{_by_rule(summary.by_rule)}, {summary.n_skipped} already done{deferred}, "
        f"in {summary.seconds:.1f}s → {out}"
    )
    for failure in summary.failures:
        # escape: "[ambiguous_subject]" would otherwise be read as rich markup and vanish
        out_console.print(
            f"  [yellow]rejected[/] {escape(f'{failure.source}: [{failure.error_type}] {failure.message}')}"
        )


@app.command()
def train(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Dataset folder written by `imagineid preprocess`."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    profile: Literal[PROFILES] = typer.Option(TrainConfig.profile, help="tiny: the 64 px base | sd15: --base-model."),
    stages: str = typer.Option("identity,content,emotion", help="Comma-separated stages, trained in order."),
    max_steps: Optional[int] = typer.Option(None, help="Cap on optimisation steps per stage."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Join a Ray cluster."),
    no_ray: bool = typer.Option(False, "--no-ray", help="Train in this process instead of a Ray task."),
    num_gpus: float = typer.Option(
        TrainConfig.num_gpus, help="GPUs per stage task, used only where the cluster has them."
    ),
    workers: int = typer.Option(
        TrainConfig.workers,
        min=1,
        help="Data-parallel workers per stage (Ray Train, one per GPU where there are GPUs); "
        "each stage's batch_size stays the global batch.",
    ),
    checkpoint_every: int = typer.Option(
        TrainConfig.checkpoint_every, min=1, help="Steps between resumable checkpoints."
    ),
    base_model: Optional[Path] = typer.Option(
        None, help="--profile sd15: local Stable Diffusion 1.5 folder (diffusers layout)."
    ),
    voice_variants: int = typer.Option(
        TrainConfig.voice_variants,
        min=1,
        help="Copies of each training clip's audio in the voice bank (1 = no augmentation).",
    ),
    config_file: Optional[Path] = typer.Option(
        None, "--config", help="Training settings (YAML or JSON, e.g. an earlier RUN/train_config.json)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="key=value over --config and the options, e.g. --set adapters.steps=500 --set hidden=96."
    ),
) -> None:
    """Train the disentangler (identity → content → emotion) stage by stage; reruns resume.

    Settings come from the defaults, then --config, then the options given on the command line, then
    each --set; the resolved settings are written to RUN/train_config.json."""
    from imagineid.training.config import TrainConfig
    from imagineid.training.run import train as run_train

    given = _given(
        ctx,
        max_steps=max_steps,
        num_gpus=num_gpus,
        workers=workers,
        checkpoint_every=checkpoint_every,
        profile=profile,
        base_model=str(base_model) if base_model else None,
        voice_variants=voice_variants,
    )
    with _reported(ValueError, OSError):
        config = TrainConfig.load(config_file)
        config = TrainConfig.load(overrides=overrides, base=TrainConfig.from_dict(given, config))
    profile, base_model = config.profile, Path(config.base_model) if config.base_model else None
    if profile == "sd15":  # check the base's files now, not after the disentangler stages
        from imagineid.errors import see_docs
        from imagineid.models.ldm import SD15_SECTION, check_sd15

        if base_model is None:
            _fail(
                "--profile sd15 needs --base-model PATH, a local Stable Diffusion 1.5 folder "
                f"({see_docs(SD15_SECTION)})"
            )
        with _reported():
            base_model = check_sd15(base_model).resolve()
        if "ldm" in stages.split(","):
            out_console.print("[yellow]ldm[/] not trained: with --profile sd15 the frozen base is --base-model")
    elif base_model is not None:
        _fail("--base-model is used with --profile sd15 only")
    config = TrainConfig.from_dict({"base_model": str(base_model) if base_model else None}, config)
    with _reported():
        results = run_train(data, out, stages, config, ray_address=ray_address, use_ray=not no_ray)
    for stage, metrics in results.items():
        shown = {k: v for k, v in metrics.items() if not k.startswith("train_") and k != "skipped"}
        state = "already trained" if metrics.get("skipped") else "trained"
        out_console.print(
            f"[green]{stage}[/] {state}: "
            + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        )
    out_console.print(f"run → {out} (metrics in {out / 'metrics.jsonl'})")


@app.command()
def listen(
    run: Path = typer.Argument(..., help="Run folder with trained stages."),
    audio: list[Path] = typer.Argument(..., help="Audio files or folders."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per audio."),
    retrieve: Optional[Path] = typer.Option(None, help="Dataset folder for identity retrieval."),
    top_k: int = typer.Option(5, help="Clips to retrieve."),
) -> None:
    """What the disentangler hears: gender, age, emotion, nearest identities, and what it measured (F0,
    voicing, formants)."""
    import json

    from imagineid.listening import listen as run_listen

    with _reported():
        for entry in run_listen(run, audio, retrieve, top_k):
            if as_json:
                print(json.dumps(entry), flush=True)
            elif entry["error"]:
                out_console.print(f"[yellow]{entry['audio']}[/]: error: {entry['error']}")
            else:
                best = {k: max(entry[k], key=entry[k].get) for k in ("gender", "age", "emotion") if entry[k]}
                near = ", ".join(r["clip_id"] for r in entry["retrieved"] or [])
                f0 = (entry["measured"] or {}).get("f0_median_hz")
                heard = f"{best}" + (f" (median F0 {f0:.0f} Hz)" if f0 else " (no voiced speech measured)")
                out_console.print(f"{entry['audio']}: {heard}" + (f" nearest: {near}" if near else ""))


@app.command()
def generate(
    ctx: typer.Context,
    run: Path = typer.Argument(..., help="Run folder with every stage trained (disentangler + frame generator)."),
    audio: Optional[list[Path]] = typer.Argument(None, help="Audio files or folders (any common format / rate)."),
    out: Path = typer.Option(..., "--out", help="Output folder: videos/, records/, index.parquet."),
    seeds: int = typer.Option(1, min=1, help="Seeds (imagined identities) per audio."),
    batch_size: int = typer.Option(
        GenerateConfig.batch_size, min=1, help="Continuous-batching slots; 1 = the per-clip loop."
    ),
    steps: int = typer.Option(20, min=1, help="DDIM denoising steps per frame."),
    guidance: float = typer.Option(2.0, help="Classifier-free guidance scale (1 = off)."),
    strength: float = typer.Option(
        0.8, min=0.05, max=1.0, help="Frames 2..T start from frame 1's latent noised this far (1 = pure noise)."
    ),
    identity_from: Optional[Path] = typer.Option(None, help="Factor swap: identity from this audio."),
    content_from: Optional[Path] = typer.Option(
        None, help="Factor swap: content (mouth, sound track) from this audio."
    ),
    emotion_from: Optional[Path] = typer.Option(None, help="Factor swap: emotion from this audio."),
    first_frame_retries: int = typer.Option(
        GenerateConfig.first_frame_retries, min=0, help="Redraw frame 1 while dlib finds no face (0 = off)."
    ),
    precision: Literal[PRECISIONS] = typer.Option(
        "auto",
        help="auto: fp16 on GPUs; bf16 on CPUs with native bf16 from 8 clips per batch; else fp32.",
    ),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Join a Ray cluster."),
    no_ray: bool = typer.Option(False, "--no-ray", help="Generate in this process instead of Ray workers."),
    config_file: Optional[Path] = _config_file_option("Generation"),
) -> None:
    """Imagine talking-face videos for audio files: frame 1 from the voice alone, then autoregressively.

    Settings come from the defaults, then --config, then the options given on the command line."""
    from imagineid.generation.config import GenerateConfig
    from imagineid.generation.run import generate as run_generate

    sources = list(audio or []) + ([content_from] if content_from else [])
    if not sources:
        _fail("give AUDIO files or folders (or --content-from)")
    given = _given(
        ctx,
        seeds=seeds,
        batch_size=batch_size,
        steps=steps,
        guidance=guidance,
        strength=strength,
        first_frame_retries=first_frame_retries,
        precision=precision,
        **{k: str(v) for k, v in (("identity_from", identity_from), ("emotion_from", emotion_from)) if v},
    )
    cfg = _settings(GenerateConfig, config_file, given)
    with _reported():
        summary = run_generate(run, sources, out, cfg, use_ray=not no_ray, ray_address=ray_address)
    out_console.print(
        f"generate: {summary['ok']} videos written, {summary['failed']} failed, {summary['skipped']} already done, "
        f"{summary['generated_frames']} frames in {summary['seconds']:.1f}s → {summary['videos']} "
        f"(index: {summary['index']})"
    )
    if summary["failed"]:
        out_console.print("  failures are listed with their reason in the index (status = failed)")
    if summary.get("by_worker"):
        out_console.print("  videos per worker: " + ", ".join(f"{k} {v}" for k, v in summary["by_worker"].items()))
    for error in summary.get("worker_errors", []):  # the rest of the pool finished their clips
        console.print(f"[bold yellow]a worker failed[/] (its clips were redone by the others):\n{error}")


@app.command()
def evaluate(
    gen: Path = typer.Argument(..., help="Folder written by `imagineid generate`."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (identity retrieval, emotion map)."),
    report: Optional[Path] = typer.Option(None, help="HTML report path (default: GEN/report.html)."),
    every: int = typer.Option(1, min=1, help="Measure every N-th frame (faster on long videos)."),
    syncnet: Optional[Path] = typer.Option(None, help="syncnet_v2.model: LSE-C / LSE-D (docs/pretrained.md)."),
    fid_inception: Optional[Path] = typer.Option(None, help="pytorch-fid's pt_inception-2015-12-05-*.pth: FID."),
    arcface: Optional[Path] = typer.Option(None, help="w600k_r50.onnx or arcface_torch backbone.pth: CSIM."),
    i3d: Optional[Path] = typer.Option(None, help="I3D weights (i3d_pretrained_400.pt, rgb_imagenet.pt): FVD."),
    lmd_landmarks: Literal[LANDMARK_BACKENDS] = typer.Option("dlib", help="M-LMD / F-LMD landmarks."),
    sources: Optional[Path] = typer.Option(
        None, help="Another method's videos (no index.parquet): the folder of their driving clips, matched by name."
    ),
    compare: list[Path] = typer.Option(
        [], "--compare", help="Other folders (any method's videos) to evaluate the same way and set beside GEN."
    ),
) -> None:
    """Metrics (GEN/metrics.json) and a self-contained HTML report for generated videos: this project's
    (GEN of `imagineid generate`) or any method's folder of mp4s; with --compare, a side-by-side table
    (GEN/comparison.html, .json)."""
    from imagineid.evaluation.compare import compare as compare_methods
    from imagineid.evaluation.compare import markdown, write_comparison
    from imagineid.evaluation.evaluate import evaluate as run_evaluate
    from imagineid.evaluation.field_metrics import FieldWeights

    weights = FieldWeights(syncnet, fid_inception, arcface, i3d, lmd_landmarks)
    folders = {}
    for folder in [gen, *compare]:
        page = report if folder == gen and report else folder / "report.html"
        with _reported():
            metrics = run_evaluate(folder, data, page, every=every, weights=weights, sources=sources)
        folders[folder.name if folder.name not in folders else str(folder)] = folder
        if not compare:
            _print_fields({k: v for k, v in metrics["summary"].items() if v is not None})
        for error in metrics.get("errors", []):
            console.print(f"not measured: {folder / error['video']}: {error['error']}", markup=False)
        out_console.print(f"metrics → {folder / 'metrics.json'}\nreport → {page}")
    if compare:
        with _reported():
            table = compare_methods(folders)
            json_path, html_path = write_comparison(gen / "comparison", table)
        out_console.print(markdown(table), markup=False)
        out_console.print(f"comparison → {html_path} ({json_path.name})")


@app.command()
def demo(
    workdir: Path = typer.Option(Path("work/demo"), help="Where the demo writes everything."),
    quick: bool = typer.Option(False, help="Smaller corpus and shorter training (a few minutes; low quality)."),
) -> None:
    """End to end on the embedded defaults: synth → preprocess → train → generate → evaluate."""
    from imagineid.demo import run_demo

    with _reported():
        result = run_demo(workdir, quick, say=lambda text: out_console.print(f"[green]{text}[/]"))
    _print_fields({k: v for k, v in result["metrics"].items() if v is not None})
    out_console.print(f"report → {result['report']}")


if __name__ == "__main__":
    app()
