"""The end-to-end demo on the embedded defaults (`imagineid demo`, `make demo`, flow `demo`):

    synth (training speakers) + synth (held-out speakers) → preprocess → train every stage (tiny profile)
    → generate videos for the held-out speakers' audio → evaluate → the report path.

Everything is real and offline; only sizes differ. `quick` is the smallest run that still exercises
every stage (quality is low); the full demo trains long enough for the figures in README.md.
Re-running continues where a previous run stopped (every step skips finished work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagineid.synth.corpus import SynthConfig


@dataclass(frozen=True)
class DemoPlan:
    train_corpus: SynthConfig
    heldout_corpus: SynthConfig
    max_steps: int | None  # per training stage; None = the stage defaults
    seeds: int  # videos per held-out audio
    steps: int  # DDIM steps per frame

    @classmethod
    def make(cls, quick: bool) -> DemoPlan:
        if quick:
            return cls(
                SynthConfig(speakers=4, clips_per_speaker=2, seed=1),
                SynthConfig(speakers=2, clips_per_speaker=1, seconds=2.0, seed=101),
                120,
                2,
                10,
            )
        return cls(
            SynthConfig(speakers=32, clips_per_speaker=2, seed=1),
            SynthConfig(speakers=4, clips_per_speaker=1, seed=101),
            None,
            2,
            20,
        )


def run_demo(
    workdir: str | Path, quick: bool = False, say: Callable[[str], None] = print, progress: bool = True
) -> dict:
    """Run every step; → {"report": path, "metrics": summary dict, paths...}."""
    from imagineid.evaluation.evaluate import evaluate
    from imagineid.generation.config import GenerateConfig
    from imagineid.generation.run import generate
    from imagineid.preprocessing import PreprocessConfig, preprocess
    from imagineid.synth.corpus import synthesize_corpus
    from imagineid.training.config import TrainConfig
    from imagineid.training.run import ALL_STAGES, train

    workdir = Path(workdir)
    plan = DemoPlan.make(quick)
    corpus, heldout = workdir / "synth", workdir / "synth_heldout"
    data, run, gen = workdir / "data", workdir / "run", workdir / "gen"
    made = synthesize_corpus(corpus, plan.train_corpus, progress=progress)
    held = synthesize_corpus(heldout, plan.heldout_corpus, progress=progress)
    say(
        f"demo 1/5 synth: {made.n_clips} training clips of {made.n_speakers} speakers → {corpus}; "
        f"{held.n_clips} held-out clips of {held.n_speakers} new speakers → {heldout}"
    )
    pre = preprocess([corpus / "videos"], data, PreprocessConfig(), progress=progress)
    say(
        f"demo 2/5 preprocess: {pre.n_processed} processed, {pre.n_failed} rejected, "
        f"{pre.n_skipped} already done → {data}"
    )
    results = train(
        data, run, list(ALL_STAGES), TrainConfig(max_steps=plan.max_steps), use_ray=False, progress=progress
    )
    say(f"demo 3/5 train: {', '.join(results)} → {run}")
    made_videos = generate(
        run,
        [heldout / "videos"],
        gen,
        GenerateConfig(seeds=plan.seeds, steps=plan.steps),
        use_ray=False,
        progress=progress,
    )
    say(
        f"demo 4/5 generate: {made_videos['ok']} videos, {made_videos['failed']} failed, "
        f"{made_videos['skipped']} already done → {gen / 'videos'}"
    )
    report = gen / "report.html"
    metrics = evaluate(gen, data, report, progress=progress)
    say(f"demo 5/5 evaluate: {metrics['summary']['videos']} videos → {gen / 'metrics.json'}")
    return {"report": str(report), "metrics": metrics["summary"], "run": str(run), "data": str(data), "gen": str(gen)}
