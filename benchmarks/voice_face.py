"""Does the voice move the face? Frame-1 faces imagined in variable mode, voice against seed.

    python benchmarks/voice_face.py [RUN] [DATA]     # defaults: work/demo/run, work/demo/data

Prints JSON:
- `recorded`: for Debian's flite voices (slt: a woman; awb, rms, kal: men; `apt-get install flite`), the
  dlib-descriptor distance between the faces imagined from a woman's and a man's voice at the same
  seed, against the distance between two seeds of one voice. Both are means over seeds and pairs; a
  ratio above 1 means the voice changes the face more than the seed does.
- `synthetic`: for the run's held-out (validation) speakers, the frame-1 face geometry (dlib landmarks
  of the imagined face → the morphable model's shape) retrieved against every speaker's true shape:
  top-1 accuracy beside chance (1 / N), and the same with the voices shuffled as a control.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listen_real import SENTENCES, cpu_name  # noqa: E402

SEEDS = (0, 1, 2, 3)
STEPS = 20


def imagine(pipe, planner, utterance, seed: int) -> np.ndarray:
    """Frame 1 in variable mode → (S, S, 3) uint8."""
    import torch

    plan = planner.plan(utterance)
    mesh, _, _ = plan.frame(0)
    mesh_t = torch.from_numpy(mesh).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        frame = pipe(
            mesh=mesh_t,
            identity=torch.from_numpy(plan.identity)[None],
            emotion=torch.from_numpy(plan.emotion)[None],
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(seed),
        )
    return ((frame[0].permute(1, 2, 0).clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8)


def face(landmarker, image: np.ndarray):
    """(landmarks (68, 2) at DLIB_SIZE, descriptor (128,)) of the best face, or None."""
    from imagineid.face.dlib_backend import upscaled

    big = upscaled(image)
    boxes = landmarker.detect(big)
    return (landmarker.landmarks(big, boxes[0]), landmarker.descriptor(big, boxes[0])) if boxes else None


def recorded(pipe, planner, landmarker) -> dict:
    from imagineid.media import load_audio

    voices = {"slt": "female", "awb": "male", "rms": "male", "kal": "male"}
    descriptors: dict[str, dict[int, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for voice in voices:
            wav = Path(tmp) / f"{voice}.wav"
            subprocess.run(
                ["flite", "-voice", voice, "-t", SENTENCES[0], "-o", str(wav)], check=True, capture_output=True
            )
            utterance = planner.listener.prepare(load_audio(wav))
            found = {s: face(landmarker, imagine(pipe, planner, utterance, s)) for s in SEEDS}
            descriptors[voice] = {s: f[1] for s, f in found.items() if f is not None}
    across = [
        float(np.linalg.norm(descriptors["slt"][s] - descriptors[m][s]))
        for m in ("awb", "rms", "kal")
        for s in SEEDS
        if s in descriptors["slt"] and s in descriptors[m]
    ]
    within = [
        float(np.linalg.norm(d[a] - d[b]))
        for d in descriptors.values()
        for a, b in itertools.combinations(sorted(d), 2)
    ]
    a, w = float(np.mean(across)) if across else float("nan"), float(np.mean(within)) if within else float("nan")
    return {
        "woman_vs_man_same_seed": round(a, 4),
        "same_voice_two_seeds": round(w, 4),
        "voice_over_seed_ratio": round(a / w, 3) if w else None,
        "faces_found": {v: len(d) for v, d in descriptors.items()},
        "seeds": len(SEEDS),
    }


def synthetic(pipe, planner, landmarker, run: Path, data: Path) -> dict:
    from imagineid.data.clips import clip_audio, clip_rows
    from imagineid.data.store import Store
    from imagineid.face.dlib_backend import DLIB_SIZE

    store = Store(data)
    val = json.loads((run / "split.json").read_text())["val"]
    rows = clip_rows(store, val, columns=["speaker_id", "shape"])
    speakers = sorted({r["speaker_id"] for r in rows})
    truth = np.stack([np.asarray(next(r["shape"] for r in rows if r["speaker_id"] == s), np.float64) for s in speakers])
    model = planner.model
    std = model.arrays["shape_std"].astype(np.float64)
    imagined: dict[str, list[np.ndarray]] = {s: [] for s in speakers}
    for row in rows:
        utterance = planner.listener.prepare(clip_audio(store, row["clip_id"])[0])
        for seed in SEEDS[:2]:
            found = face(landmarker, imagine(pipe, planner, utterance, seed))
            if found is not None:
                points = found[0] * (planner.size / DLIB_SIZE)  # dlib px → the generator's px
                imagined[row["speaker_id"]].append(model.project(points[None]).shape.astype(np.float64))
    guesses, n = {}, len(speakers)
    for s, shapes in imagined.items():
        if shapes:
            mean = np.mean(shapes, axis=0)
            guesses[s] = int(np.argmin((((truth - mean) * std) ** 2).sum(axis=1)))  # landmark-space distance
    hits = [guesses[s] == i for i, s in enumerate(speakers) if s in guesses]
    rng = np.random.default_rng(0)
    shuffled = []
    for _ in range(200):  # control: the same guesses against a random assignment of voices to speakers
        perm = rng.permutation(n)
        shuffled.append(np.mean([guesses[s] == perm[i] for i, s in enumerate(speakers) if s in guesses]))
    return {
        "speakers": n,
        "top1_accuracy": round(float(np.mean(hits)), 3) if hits else None,
        "chance": round(1 / n, 3),
        "shuffled_voice_control": round(float(np.mean(shuffled)), 3),
        "speakers_with_a_face": len(guesses),
    }


def main(run: Path, data: Path) -> dict:
    import torch

    from imagineid.face.dlib_backend import DlibLandmarker
    from imagineid.generation.conditions import Planner
    from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline

    torch.set_num_threads(2)
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline").eval()
    planner = Planner.load(
        run, size=pipe.vae.config.sample_size, identity_dim=pipe.textual_inversion.config.identity_dim
    )
    landmarker = DlibLandmarker(upsample=1)
    out = {"benchmark": "voice_face", "run": str(run), "host": cpu_name(), "steps": STEPS}
    out["recorded"] = recorded(pipe, planner, landmarker) if shutil.which("flite") else "skipped: flite not installed"
    out["synthetic"] = synthetic(pipe, planner, landmarker, run, data)
    return out


if __name__ == "__main__":
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("work/demo/run")
    data_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("work/demo/data")
    if not (run_dir / "pipeline" / "model_index.json").exists():
        print(
            json.dumps({"benchmark": "voice_face", "skipped": f"{run_dir} has no trained pipeline (run `make demo`)"})
        )
        sys.exit(2)
    print(json.dumps(main(run_dir, data_dir), indent=1))
