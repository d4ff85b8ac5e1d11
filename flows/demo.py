"""Prefect flow `demo`: every flow in order on the embedded defaults (docs/architecture.md §5).

    python -m flows.demo                # → work/demo-flow/gen/report.html

synth (tasks) → preprocess → train → generate → evaluate, each the real flow as a subflow, so the
demo's run page shows the whole DAG with each flow's artifacts.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.preprocess import preprocess_flow
from flows.train import train_flow
from imagineid.demo import DemoPlan
from imagineid.synth.corpus import synthesize_corpus
from imagineid.training.run import ALL_STAGES


@task
def synth_corpus(out: str, quick: bool, heldout: bool) -> str:
    plan = DemoPlan.make(quick)
    synthesize_corpus(out, plan.heldout_corpus if heldout else plan.train_corpus, progress=False)
    return str(Path(out) / "videos")


@flow(name="demo", log_prints=True)
def demo_flow(workdir: str = "work/demo-flow", quick: bool = True) -> str:
    """Run the whole pipeline; returns the report path.

    Args:
        workdir: Where everything is written.
        quick: The smallest corpus and shortest training that still run every stage.
    """
    plan, root = DemoPlan.make(quick), Path(workdir)
    videos = synth_corpus(str(root / "synth"), quick, heldout=False)
    heldout = synth_corpus(str(root / "synth_heldout"), quick, heldout=True)
    data, run, gen = str(root / "data"), str(root / "run"), str(root / "gen")
    preprocess_flow(sources=[videos], out=data, workers=1)
    train_flow(data=data, out=run, stages=",".join(ALL_STAGES), max_steps=plan.max_steps)
    generate_flow(run=run, audio=[heldout], out=gen, seeds=plan.seeds, steps=plan.steps, use_ray=False)
    result = evaluate_flow(gen=gen, data=data)
    print(f"report → {result['report']}")
    return result["report"]


if __name__ == "__main__":
    demo_flow()
