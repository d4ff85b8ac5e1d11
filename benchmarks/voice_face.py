"""Does the voice move the face? Frame-1 faces imagined in variable mode, voice against seed.

    python benchmarks/voice_face.py [RUN] [DATA]     # defaults: work/demo/run, work/demo/data

Prints JSON:
- `recorded`: for Debian's flite voices (slt: a woman; awb, rms, kal: men; `apt-get install flite`), the
  dlib-descriptor distance between the faces imagined from a woman's and a man's voice at the same
  seed, against the distance between two seeds of one voice. Both are means over seeds and pairs; a
  ratio above 1 means the voice changes the face more than the seed does.
- `synthetic`: for the run's held-out (validation) speakers, the frame-1 face geometry (dlib landmarks
  of the imagined face → the morphable model's shape) retrieved against every speaker's true shape:
  top-1 accuracy beside chance (1 / N), and the same with the voices shuffled as a control. Beside it,
  where the chain voice → shape → mesh → pixels → landmarks loses the identity:
  `listener_top1` (the shape the disentangler hears, no pixels), `true_mesh_top1` (the generator given
  the speaker's true shape: its own ceiling), `dataset_frames_top1` (dlib on the real frames at the
  generator's size: the measurement's ceiling), and `mesh_following_error` (landmarks of the imagined
  face against the conditioning mesh after a similarity fit, in face widths; `dataset_frames_error`
  the same for real frames against their true landmarks).
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


def imagine(pipe, plan, seed: int, points: np.ndarray | None = None, **options) -> np.ndarray:
    """Frame 1 in variable mode, conditioned on `points` (68, 2) (default: the plan's own) → (S, S, 3) uint8;
    `options` go to the pipeline (e.g. guidance_scale, conditioning_scale)."""
    import torch

    from imagineid.face.mesh_render import render_mesh

    mesh = render_mesh((plan.points[0] if points is None else points)[None], plan.size)[0]
    mesh_t = torch.from_numpy(mesh).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        frame = pipe(
            mesh=mesh_t,
            identity=torch.from_numpy(plan.identity)[None],
            emotion=torch.from_numpy(plan.emotion)[None],
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(seed),
            **options,
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
            plan = planner.plan(planner.listener.prepare(load_audio(wav)))
            found = {s: face(landmarker, imagine(pipe, plan, s)) for s in SEEDS}
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


def following_error(found: np.ndarray, target: np.ndarray) -> float:
    """Mean landmark distance (68, 2) vs (68, 2) after the best similarity fit, in face widths."""
    from imagineid.face.landmarks68 import face_width

    z, w = found[:, 0] + 1j * found[:, 1], target[:, 0] + 1j * target[:, 1]
    zc, wc = z - z.mean(), w - w.mean()
    fitted = zc * (np.vdot(zc, wc) / np.vdot(zc, zc)) + w.mean()
    return float(np.abs(fitted - w).mean() / face_width(target))


def retrieval(imagined: dict[str, list[np.ndarray]], truth: np.ndarray, std: np.ndarray) -> dict:
    """Top-1 of each speaker's mean imagined shape among the true shapes (landmark-space distance)."""
    speakers = sorted(imagined)
    guesses = {}
    for s, shapes in imagined.items():
        if shapes:
            guesses[s] = int(np.argmin((((truth - np.mean(shapes, axis=0)) * std) ** 2).sum(axis=1)))
    hits = [guesses[s] == i for i, s in enumerate(speakers) if s in guesses]
    rng = np.random.default_rng(0)
    shuffled = []
    for _ in range(200):  # control: the same guesses against a random assignment of voices to speakers
        perm = rng.permutation(len(speakers))
        shuffled.append(np.mean([guesses[s] == perm[i] for i, s in enumerate(speakers) if s in guesses]))
    return {
        "top1": round(float(np.mean(hits)), 3) if hits else None,
        "shuffled": round(float(np.mean(shuffled)), 3) if hits else None,
        "speakers_with_a_face": len(guesses),
    }


def synthetic(pipe, planner, landmarker, run: Path, data: Path) -> dict:
    from imagineid.data.clips import clip_audio, clip_rows
    from imagineid.data.store import Store
    from imagineid.face.dlib_backend import DLIB_SIZE
    from imagineid.training.frame_data import ClipFrames

    store = Store(data)
    val = json.loads((run / "split.json").read_text())["val"]
    rows = clip_rows(store, val, columns=["speaker_id", "shape", "crops", "crop_size"])
    speakers = sorted({r["speaker_id"] for r in rows})
    truth = np.stack([np.asarray(next(r["shape"] for r in rows if r["speaker_id"] == s), np.float64) for s in speakers])
    model, size = planner.model, planner.size
    std = model.arrays["shape_std"].astype(np.float64)
    sets = ("imagined", "listener", "true_mesh", "dataset_frames")
    shapes: dict[str, dict[str, list[np.ndarray]]] = {k: {s: [] for s in speakers} for k in sets}
    errors: dict[str, list[float]] = {"mesh_following_error": [], "dataset_frames_error": []}

    def measured(image: np.ndarray) -> np.ndarray | None:
        found = face(landmarker, image)
        return None if found is None else found[0] * (size / DLIB_SIZE)  # dlib px → the generator's px

    for row in rows:
        s = row["speaker_id"]
        plan = planner.plan(planner.listener.prepare(clip_audio(store, row["clip_id"])[0]))
        heard_shape = plan.identity[: model.n_shape]
        shapes["listener"][s].append(heard_shape.astype(np.float64))
        coeffs = model.project(plan.points[:1], shape=heard_shape)  # the same expression and pose, true shape
        own = truth[speakers.index(s)].astype(np.float32)
        true_points = model.reconstruct(own, expression=coeffs.expression, pose=coeffs.pose)[0]
        for seed in SEEDS[:2]:
            for key, points in (("imagined", plan.points[0]), ("true_mesh", true_points)):
                found = measured(imagine(pipe, plan, seed, points))
                if found is not None:
                    shapes[key][s].append(model.project(found[None]).shape.astype(np.float64))
                    if key == "imagined":
                        errors["mesh_following_error"].append(following_error(found, points))
        clip = ClipFrames(store, row, model, size)
        for t in range(0, len(clip), max(1, len(clip) // 4))[:4]:
            found = measured(clip.images[t])
            if found is not None:
                shapes["dataset_frames"][s].append(model.project(found[None]).shape.astype(np.float64))
                errors["dataset_frames_error"].append(following_error(found, clip.points[t]))
    scores = {k: retrieval(v, truth, std) for k, v in shapes.items()}
    return {
        "speakers": len(speakers),
        "chance": round(1 / len(speakers), 3),
        "top1_accuracy": scores["imagined"]["top1"],
        "shuffled_voice_control": scores["imagined"]["shuffled"],
        "speakers_with_a_face": scores["imagined"]["speakers_with_a_face"],
        **{f"{k}_top1": scores[k]["top1"] for k in sets[1:]},
        **{k: round(float(np.mean(v)), 4) if v else None for k, v in errors.items()},
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
