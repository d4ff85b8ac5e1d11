"""Does the imagined face match the voice? A score that needs no weights, for held-out speakers with
ground truth (the synthetic corpus): the paper's central claim, measured on the generated videos.

Each generated video's imagined face (its first frames with a detected face, projected on the dataset's
morphable model: identity shape coefficients, pose removed) is compared with every held-out speaker's
true shape (their clips' ground-truth landmarks, projected the same way). Top-1 retrieval is right when
the nearest true shape is the voice's own speaker; chance is 1 / speakers. A shuffled-voice control
scores the same shapes against a random other assignment of speakers to videos and should come out at
chance; the per-component correlation between imagined and true shapes says which identity factors the
voice carries into the face.
"""

from __future__ import annotations

import numpy as np

from imagineid.face.morphable import MorphableError, PCAMorphableModel

FIRST_FRAMES = 5  # frames with a face that make the imagined shape (later frames copy frame 1)
SHUFFLES = 200  # permutations averaged by the shuffled-voice control


def imagined_shape(model: PCAMorphableModel, landmarks: list[np.ndarray | None]) -> np.ndarray | None:
    """(n_shape,) identity coefficients of the first frames with a face, or None without one."""
    found = [p for p in landmarks if p is not None][:FIRST_FRAMES]
    if not found:
        return None
    try:
        return model.project(np.stack(found)).shape.astype(np.float64)
    except MorphableError:
        return None


def true_shape(model: PCAMorphableModel, landmarks: np.ndarray) -> np.ndarray:
    """(n_shape,) identity coefficients of a clip's ground-truth landmarks (T, 68, 2)."""
    return model.project(np.asarray(landmarks, np.float64)).shape.astype(np.float64)


def _top1(generated: np.ndarray, speaker_of: list[str], truth: dict[str, np.ndarray]) -> float:
    names = sorted(truth)
    bank = np.stack([truth[n] for n in names])  # (S, n_shape)
    scale = bank.std(axis=0) + 1e-8  # each coefficient in units of the speakers' spread
    d = np.linalg.norm((generated[:, None] - bank[None]) / scale, axis=-1)  # (V, S)
    nearest = [names[i] for i in d.argmin(axis=1)]
    return float(np.mean([a == b for a, b in zip(nearest, speaker_of)]))


def voice_face_match(
    generated: list[np.ndarray], speakers: list[str], truth: dict[str, np.ndarray], seed: int = 0
) -> dict:
    """generated[i] (n_shape,) is the imagined shape of a video whose voice is `speakers[i]`; `truth` the true
    shape per speaker (at least two). → top-1 accuracy, chance, shuffled control, per-component r."""
    if len(truth) < 2 or not generated:
        return {}
    g = np.stack(generated)  # (V, n_shape)
    rng = np.random.default_rng(seed)
    shuffled = [_top1(g, list(rng.permutation(speakers)), truth) for _ in range(SHUFFLES)]
    own = np.stack([truth[s] for s in speakers])  # (V, n_shape)
    r = [
        float(np.corrcoef(g[:, k], own[:, k])[0, 1]) if g[:, k].std() > 0 and own[:, k].std() > 0 else float("nan")
        for k in range(g.shape[1])
    ]
    return {
        "voice_face_top1": _top1(g, speakers, truth),
        "voice_face_chance": 1.0 / len(truth),
        "voice_face_shuffled_top1": float(np.mean(shuffled)),
        "voice_face_speakers": len(truth),
        "voice_face_videos": len(generated),
        "voice_face_shape_r": r,
    }
