"""What the generator is told for each frame of one video, derived from audio by the disentangler.

    plans = Planner.load(RUN, size=64)
    utt = plans.listener.prepare(samples)                             # log-mel + voice front end
    plan = plans.plan(identity=utt_a, content=utt_b, emotion=utt_c)   # each an Utterance
    mesh, blend, mouth = plan.frame(t)                                 # rendered on demand

Identity (shape → the mesh and the textual-inversion tokens) comes from the identity audio; the
per-frame mouth motion from the content audio, which sets the video length; the full expression and the
emotion tokens from the emotion audio (looped or cut to that length). Normally all three are the same
audio; `--identity-from / --content-from / --emotion-from` swap them (the paper's factor swapping).
Only landmarks (T, 68, 2) are kept; images are rendered per frame, so minutes of audio stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imagineid.data.labels import GENDERS
from imagineid.face import landmarks68 as lm
from imagineid.face.masks import blend_mask, mouth_mask
from imagineid.face.mesh_render import render_mesh
from imagineid.face.morphable import PCAMorphableModel
from imagineid.listening import Listener, Utterance, identity_features
from imagineid.runs.assets import load_run_assets, pose_at

MEL_PER_FRAME = 4  # 100 Hz log-mel, 25 fps video


@dataclass
class ClipPlan:
    points: np.ndarray  # (T, 68, 2) mesh landmarks in output pixels
    identity: np.ndarray  # (n_shape + 5,) predicted shape, gender and age probabilities: the identity features
    emotion: np.ndarray  # (n_emotions,) predicted emotion probabilities: the emotion features
    size: int
    gender: str = ""  # the identity audio's most likely gender (for the index)

    @property
    def n_frames(self) -> int:
        return len(self.points)

    @property
    def mouth_opening(self) -> np.ndarray:
        """(T,) inner-lip gap / face width of the conditioning mesh."""
        return lm.mouth_opening(self.points)

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame t → mesh (S, S, 3) uint8, blend mask (S, S) float in [0, 1], mouth mask (S, S) bool."""
        p = self.points[t]
        return (
            render_mesh(p[None], self.size)[0],
            blend_mask(p, self.size).astype(np.float32) / 255.0,
            mouth_mask(p, self.size).astype(bool),
        )


def fit_length(mel: np.ndarray, n_mel: int) -> np.ndarray:
    """Loop or cut a log-mel (N, 80) to n_mel rows (an emotion source shorter than the content)."""
    reps = -(-n_mel // len(mel))
    return np.concatenate([mel] * reps)[:n_mel] if reps > 1 else mel[:n_mel]


class Planner:
    """The trained disentangler + the run's morphable model and face pose: log-mels → `ClipPlan`."""

    def __init__(
        self,
        listener: Listener,
        model: PCAMorphableModel,
        relative_pose: np.ndarray,
        size: int,
        identity_dim: int | None = None,
    ) -> None:
        if listener.emotion is None:
            raise ValueError("generation needs the identity, content and emotion stages trained")
        self.listener, self.model, self.size = listener, model, size
        self.pose = pose_at(relative_pose, size)
        # pipelines trained before heard features took the shape alone: the vector's first n_shape values
        self.identity_dim = identity_dim

    @classmethod
    def load(cls, run: str | Path, size: int, identity_dim: int | None = None) -> Planner:
        model, pose = load_run_assets(run)
        return cls(Listener.load(run), model, pose, size, identity_dim)

    @torch.no_grad()
    def plan(self, identity: Utterance, content: Utterance | None = None, emotion: Utterance | None = None) -> ClipPlan:
        """The identity / content / emotion sources (`Listener.prepare`) → the clip's conditions."""
        content = identity if content is None else content
        emotion = content if emotion is None else emotion
        n_frames = len(content.mel) // MEL_PER_FRAME
        if n_frames < 1:
            raise ValueError(f"content audio gives {len(content.mel)} mel frames, fewer than one video frame")
        li = self.listener
        ident = li.identify(identity)
        content_mel = li.mel(content.mel[: MEL_PER_FRAME * n_frames])  # (1, 4T, 80)
        heard = li.content(content_mel, ident.shape, li.envelope(content.mel[: MEL_PER_FRAME * n_frames]))
        out = li.emotion(
            li.emotion_mel(fit_length(emotion.mel, MEL_PER_FRAME * n_frames)),
            ident.for_emotion(li.emotion.config.identity_dim),
            heard.features,
        )
        shape = ident.shape[0].float().cpu().numpy()  # (n_shape,)
        expression = out.expression[0].float().cpu().numpy()  # (T, n_expression)
        pose = np.repeat(self.pose[None], n_frames, axis=0)  # (T, 4)
        points = self.model.reconstruct(shape, expression=expression, pose=pose).astype(np.float32)
        return ClipPlan(
            points=points,
            identity=identity_features(ident)[0].float().cpu().numpy()[: self.identity_dim],
            emotion=out.emotion_logits.softmax(-1)[0].float().cpu().numpy(),
            size=self.size,
            gender=GENDERS[int(ident.gender_logits[0].argmax())],
        )
