"""A synthetic talking-face corpus with exact ground truth, made offline and deterministic per seed.

Why: every stage after this one (preprocess, disentangler, generator, evaluation) needs talking faces
whose identity, mouth motion and emotion are known, to be tested honestly on a 2-core machine. The voice
drives the face as in the paper's premise: deeper voices get stronger jaws and brow ridges, children
smaller, rounder faces; the mouth follows eSpeak NG's phoneme timings; emotion shows in prosody and face.

    imagineid synth work/s --speakers 4 --clips-per-speaker 2 --seconds 3 --seed 1

writes `work/s/videos/<clip_id>.mp4` (H.264 + AAC, 25 fps) and `work/s/metadata.parquet`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from imagineid.audio.features import frame_rms
from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS
from imagineid.data.parquet_io import (
    vector_lists,
    write_json_atomic,
    write_table_atomic,
)
from imagineid.errors import ImagineIDError
from imagineid.media import write_video
from imagineid.synth import speech as sp
from imagineid.synth.face import (
    IdentityFactors,
    SpeakerLook,
    apply_affine,
    expression_landmarks,
    load_template,
    random_background,
    render_frame,
    smooth_head_motion,
)
from imagineid.synth.sentences import pick_sentence
from imagineid.synth.visemes import viseme_track

SKIN_TONES = (
    (1.05, 1.00, 0.97),
    (1.00, 0.93, 0.88),
    (0.95, 0.88, 0.80),
    (0.82, 0.70, 0.58),
    (0.68, 0.55, 0.44),
    (0.52, 0.42, 0.34),
)
HAIR_COLOURS = ((28, 24, 22), (60, 42, 30), (105, 75, 50), (200, 170, 110), (130, 60, 35), (150, 115, 80))
METADATA = "metadata.parquet"
CONFIG = "synth_config.json"


@dataclass(frozen=True)
class SynthConfig:
    speakers: int = 6  # identities, each with its own voice and face
    clips_per_speaker: int = 4  # clips per speaker; emotions cycle across a speaker's clips
    seconds: float = 3.0  # duration of every clip
    size: int = 256  # frame size in pixels (square)
    seed: int = 0  # the same seed gives the same corpus, bit for bit
    fps: float = 25.0  # video frame rate

    @property
    def n_frames(self) -> int:
        return int(round(self.seconds * self.fps))


@dataclass(frozen=True)
class Speaker:
    speaker_id: str
    gender: str
    age_group: str
    voice: sp.Voice
    factors: IdentityFactors


@dataclass(frozen=True)
class SynthSummary:
    n_speakers: int
    n_clips: int
    n_frames: int
    n_rendered: int  # clips rendered now; the rest were already on disk
    seconds: float


def _clip(x: float) -> float:
    return float(np.clip(x, -1.5, 1.5))


def sample_speaker(seed: int, index: int) -> Speaker:
    """Speaker `index` of corpus `seed`: voice first, then a face whose geometry follows the voice."""
    order = np.random.default_rng([seed, 0]).permutation(len(AGE_GROUPS))
    rng = np.random.default_rng([seed, 1, index])
    gender = GENDERS[(index + seed) % 2]
    age_group = AGE_GROUPS[order[index % len(AGE_GROUPS)]]
    voice = sp.sample_voice(rng, gender, age_group)
    depth = (50.0 - voice.pitch) / 20.0  # > 0 for deep voices
    male = 1.0 if gender == "male" else -1.0
    n = rng.standard_normal(6)
    # The voice sets most of the geometry (the paper's premise, made strong enough that a few dozen
    # training speakers can learn it); the rest is individual variation.
    factors = IdentityFactors(
        face_width=_clip(0.5 * male + 0.3 * depth + 0.1 * n[0]),
        jaw=_clip(0.6 * depth + 0.5 * male + 0.1 * n[1]),
        brow_ridge=_clip(0.5 * depth + 0.5 * male + 0.1 * n[2]),
        eye_spacing=_clip(0.15 * n[3]),
        nose_length=_clip(0.4 * male + 0.3 * depth + 0.1 * n[4]),
        child=1.0 if age_group == "child" else 0.0,
        elder=1.0 if age_group == "elder" else 0.0,
        skin_tone=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair_color=(
            tuple(float(v) for v in np.full(3, rng.uniform(165, 225)))
            if age_group == "elder"
            else tuple(float(v) for v in HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))])
        ),
    )
    return Speaker(f"s{seed}-{index:02d}", gender, age_group, voice, factors)


def _speech_for(rng: np.random.Generator, voice: sp.Voice, emotion: str, seconds: float) -> tuple[str, sp.Speech]:
    """A sentence that fits the clip (a few tries), synthesized and padded / trimmed to `seconds`."""
    best: tuple[str, sp.Speech] | None = None
    for _ in range(6):
        text = pick_sentence(rng)
        speech = sp.synthesize(text, voice, emotion)
        if best is None or len(speech.samples) < len(best[1].samples):
            best = (text, speech)
        if len(speech.samples) <= (seconds - 0.3) * speech.sample_rate:
            break
    assert best is not None
    return best[0], sp.fit_to_duration(best[1], seconds)


@dataclass
class ClipPlan:
    """Everything random about one clip, decided before any pixel is drawn (so reruns can skip rendering)."""

    clip_id: str
    speaker: Speaker
    emotion: str
    intensity: float
    text: str
    speech: sp.Speech
    visemes: np.ndarray  # (T, 2) opening, width
    landmarks: np.ndarray  # (T, 68, 2) ground truth in output pixels
    motions: np.ndarray  # (T, 2, 3) head motion affines
    head_pose: np.ndarray  # (T, 4) angle_deg, tx, ty, scale
    background_seed: int


def plan_clip(config: SynthConfig, speaker: Speaker, index: int, clip: int) -> ClipPlan:
    rng = np.random.default_rng([config.seed, 2, index, clip])
    emotion_offset = int(np.random.default_rng([config.seed, 3, index]).integers(len(EMOTIONS)))
    emotion = EMOTIONS[(emotion_offset + clip) % len(EMOTIONS)]
    intensity = float(rng.uniform(0.7, 1.0))
    text, speech = _speech_for(rng, speaker.voice, emotion, config.seconds)
    t = config.n_frames
    visemes = viseme_track(speech.phonemes, t, config.fps, speech.samples, speech.sample_rate)  # (T, 2)
    look_rest = identity_rest(config.size, speaker)
    motions = smooth_head_motion(rng, t, config.fps, config.size)
    landmarks, affines = [], []
    for (opening, width), motion in zip(visemes, motions):
        pts = expression_landmarks(look_rest, float(opening), float(width), emotion, intensity)
        m = motion.matrix(look_rest[30])
        landmarks.append(apply_affine(pts, m))
        affines.append(m)
    pose = np.array([(m.angle_deg, m.tx, m.ty, m.scale) for m in motions], dtype=np.float32)
    return ClipPlan(
        clip_id=f"{speaker.speaker_id}-c{clip:02d}",
        speaker=speaker,
        emotion=emotion,
        intensity=intensity,
        text=text,
        speech=speech,
        visemes=visemes.astype(np.float32),
        landmarks=np.stack(landmarks),
        motions=np.stack(affines),
        head_pose=pose,
        background_seed=int(rng.integers(2**31)),
    )


_LOOKS: dict[tuple[int, str, IdentityFactors], SpeakerLook] = {}


def speaker_look(size: int, speaker: Speaker) -> SpeakerLook:
    key = (size, speaker.speaker_id, speaker.factors)
    if key not in _LOOKS:
        _LOOKS[key] = SpeakerLook.build(load_template(size), speaker.factors)
    return _LOOKS[key]


def identity_rest(size: int, speaker: Speaker) -> np.ndarray:
    return speaker_look(size, speaker).rest


def render_clip(config: SynthConfig, plan: ClipPlan, path: Path) -> None:
    """Draw the frames and write the mp4 (streamed into the encoder, atomic rename at the end)."""
    look = speaker_look(config.size, plan.speaker)
    background = random_background(np.random.default_rng(plan.background_seed), config.size)
    frames = (render_frame(look, pts, m, background) for pts, m in zip(plan.landmarks, plan.motions))
    write_video(path, frames, fps=config.fps, audio=plan.speech.samples, sample_rate=plan.speech.sample_rate)


def _metadata_table(config: SynthConfig, plans: list[ClipPlan]) -> pa.Table:
    t = config.n_frames
    rows = {
        "clip_id": [p.clip_id for p in plans],
        "video": [f"videos/{p.clip_id}.mp4" for p in plans],
        "speaker_id": [p.speaker.speaker_id for p in plans],
        "gender": [p.speaker.gender for p in plans],
        "age_group": [p.speaker.age_group for p in plans],
        "emotion": [p.emotion for p in plans],
        "emotion_intensity": pa.array([p.intensity for p in plans], pa.float32()),
        "text": [p.text for p in plans],
        "voice": [p.speaker.voice.variant for p in plans],
        "voice_pitch": pa.array([float(p.speaker.voice.pitch) for p in plans], pa.float32()),
        "fps": pa.array([config.fps] * len(plans), pa.float32()),
        "n_frames": pa.array([t] * len(plans), pa.int32()),
        "seconds": pa.array([config.seconds] * len(plans), pa.float32()),
        "size": pa.array([config.size] * len(plans), pa.int32()),
        "seed": pa.array([config.seed] * len(plans), pa.int64()),
    }
    for name in ("face_width", "jaw", "brow_ridge", "eye_spacing", "nose_length", "child", "elder"):
        rows[name] = pa.array([float(getattr(p.speaker.factors, name)) for p in plans], pa.float32())
    rows["skin_tone"] = pa.array([list(p.speaker.factors.skin_tone) for p in plans], pa.list_(pa.float32(), 3))
    rows["hair_color"] = pa.array([list(p.speaker.factors.hair_color) for p in plans], pa.list_(pa.float32(), 3))
    rows["mouth_opening"] = pa.array([p.visemes[:, 0] for p in plans], pa.list_(pa.float32()))
    rows["mouth_width"] = pa.array([p.visemes[:, 1] for p in plans], pa.list_(pa.float32()))
    rows["audio_rms"] = pa.array(
        [frame_rms(p.speech.samples, t, config.fps, p.speech.sample_rate) for p in plans], pa.list_(pa.float32())
    )
    rows["landmarks"] = vector_lists([p.landmarks.reshape(t, 136) for p in plans])
    rows["head_pose"] = vector_lists([p.head_pose for p in plans])
    rows["phonemes"] = pa.array(
        [[{"name": ph.name, "start_s": ph.start_s, "end_s": ph.end_s} for ph in p.speech.phonemes] for p in plans]
    )
    return pa.table(rows)


def _claim_folder(out: Path, config: SynthConfig) -> None:
    """Refuse to mix corpora: a rerun may only resume the same config (clip ids do not encode it all)."""
    (out / "videos").mkdir(parents=True, exist_ok=True)
    path = out / CONFIG
    wanted = asdict(config)
    if path.exists():
        found = json.loads(path.read_text())
        if found != wanted:
            raise ImagineIDError(
                f"{out} holds a corpus made with {found}, not {wanted}; choose another folder or delete it"
            )
        return
    write_json_atomic(path, wanted)


def synthesize_corpus(out: str | Path, config: SynthConfig = SynthConfig(), progress: bool = True) -> SynthSummary:
    """Write the corpus under `out`; clips whose mp4 already exists are not rendered again."""
    start = time.perf_counter()
    out = Path(out)
    _claim_folder(out, config)
    speakers = [sample_speaker(config.seed, i) for i in range(config.speakers)]
    jobs = [(i, s, c) for i, s in enumerate(speakers) for c in range(config.clips_per_speaker)]
    plans, rendered = [], 0
    for i, speaker, clip in tqdm(jobs, desc="synth", unit="clip", disable=not progress):
        plan = plan_clip(config, speaker, i, clip)
        path = out / "videos" / f"{plan.clip_id}.mp4"
        if not path.exists():
            render_clip(config, plan, path)
            rendered += 1
        plans.append(plan)
    write_table_atomic(_metadata_table(config, plans), out / METADATA, {"synth_config": str(asdict(config))})
    return SynthSummary(
        n_speakers=len(speakers),
        n_clips=len(plans),
        n_frames=len(plans) * config.n_frames,
        n_rendered=rendered,
        seconds=time.perf_counter() - start,
    )
