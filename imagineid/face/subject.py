"""Which face track is the clip's subject: per-track evidence and a decision that says why.

Real footage has audiences, posters, logos and second people in view, and dlib's HOG detector fires on
face-like patches (a print on clothing). Rejecting every clip with a second detection of comparable size
loses a large share of good clips, so the tracker links detections into tracks and this module decides
on whole tracks:

1. Persistent: a track seen on too few frames (a passer-by, a flicker of the detector) is no candidate.
2. Face-like fit: the 68 landmarks of a real face move as one rigid shape from frame to frame; on a
   face-like texture (a print on moving cloth) they shuffle, and the track is dismissed.
3. Speaking: where the clip has speech, the track whose mouth opening follows the speech envelope
   clearly better than any other is the active speaker, whatever its size (a smaller speaker beside a
   poster is still the subject).
4. Comparable: otherwise a track much smaller than the largest candidate is background, as before.
5. Consistent: if comparable faces remain, dlib's 128-d descriptor, computed on a few kept chips of
   each, must stay close along the track; one whose descriptors drift apart is not one face.

Only when two or more persistent, consistent faces of comparable size remain and the audio does not
single one out is the clip ambiguous (`subject="one"`); `subject="all"` keeps every such track instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from imagineid.face import landmarks68 as lm


@dataclass(frozen=True)
class SubjectPolicy:
    min_presence: float = 0.5  # a candidate has landmarks on at least this fraction of the clip's frames
    comparable_area: float = 0.5  # a rival with at least this fraction of the main face's area competes
    max_spread: float = 0.6  # largest descriptor distance along one track (dlib's same-person threshold)
    max_jitter: float = 0.06  # rigid-landmark shape change per frame (face scale) above which the fit is no face
    descriptors_per_track: int = 3  # face chips kept per track (for descriptors), only where two faces are in view
    descriptor_every_s: float = 0.5  # at least this far apart, so the samples span the track
    speaker_min_r: float = 0.3  # mouth–speech correlation a speaker must reach ...
    speaker_margin: float = 0.2  # ... and by which it must beat every rival
    max_lag: int = 2  # frames of audio-video offset tolerated when correlating mouth and speech
    min_mouth_motion: float = 0.005  # std of mouth opening (face widths) below which a mouth is still


@dataclass
class TrackEvidence:
    """What speaks for one track being the subject (all figures per track, over the whole clip)."""

    track: int
    presence: float  # fraction of frames with landmarks
    width: float  # median detector-box width, px
    area: float  # median detector-box area, px²
    detector_score: float  # median detector score where it was detected (NaN for tracked-only)
    landmark_jitter: float  # median frame-to-frame rigid-landmark shape change, fraction of face scale
    spread: float | None  # largest pairwise descriptor distance; None when not sampled or not needed
    speech_r: float | None  # mouth–speech correlation; None without audio
    mouth_motion: float  # std of mouth opening over the track, in face widths

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class SubjectDecision:
    kept: list[int]  # track ids, the subject first (several only for subject="all")
    reason: str  # why the first kept track is the subject
    runner_up: dict | None  # {"track", "why_not", evidence...} of the best track not kept (subject="one")
    evidence: list[TrackEvidence]
    ambiguous: str | None = None  # set instead of a choice when the clip is genuinely ambiguous


def mouth_speech_correlation(opening: np.ndarray, found: np.ndarray, envelope: np.ndarray, max_lag: int) -> float:
    """Best Pearson correlation of mouth opening with the speech envelope over lags of ±max_lag frames.

    Only frames where the track was seen count; the lag window absorbs the small audio-video offsets of
    real recordings, where the mouth often opens a frame or two before the sound.
    """
    best = 0.0
    n = len(opening)
    for lag in range(-max_lag, max_lag + 1):
        a = slice(max(0, lag), n + min(0, lag))
        b = slice(max(0, -lag), n - max(0, lag))
        sel = found[a]
        x, y = opening[a][sel], envelope[b][sel]
        if len(x) < 8 or x.std() < 1e-9 or y.std() < 1e-9:
            continue
        best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


def track_evidence(
    track: int,
    raw: dict[int, np.ndarray],
    widths: list[float],
    scores: list[float],
    n_frames: int,
    envelope: np.ndarray | None,
    policy: SubjectPolicy,
) -> TrackEvidence:
    """Evidence for one track: raw is frame → (68, 2) landmarks, widths per frame, scores per detection.
    The descriptor spread is left for decide() to ask for, as only some decisions need it."""
    frames = sorted(raw)
    points = np.stack([raw[t] for t in frames]).astype(np.float64) if frames else np.zeros((0, 68, 2))
    opening = np.zeros(n_frames)
    found = np.zeros(n_frames, bool)
    if frames:
        opening[frames] = lm.mouth_opening(points)
        found[frames] = True
    motion = float(opening[found].std()) if found.sum() > 1 else 0.0
    speech_r = None
    if envelope is not None:
        speech_r = (
            0.0
            if motion < policy.min_mouth_motion
            else mouth_speech_correlation(opening, found, envelope, policy.max_lag)
        )
    return TrackEvidence(
        track=track,
        presence=len(frames) / max(n_frames, 1),
        width=float(np.median(widths)) if widths else 0.0,
        area=float(np.median(np.square(widths))) if widths else 0.0,
        detector_score=float(np.median(scores)) if scores and np.isfinite(scores).any() else float("nan"),
        landmark_jitter=_jitter(points),
        spread=None,
        speech_r=speech_r,
        mouth_motion=motion,
    )


def descriptor_spread(descriptors: list[np.ndarray]) -> float | None:
    """Largest pairwise distance among a track's descriptors; None with fewer than two."""
    if len(descriptors) < 2:
        return None
    d = np.stack(descriptors)
    return float(np.linalg.norm(d[:, None] - d[None], axis=-1).max())


def _jitter(points: np.ndarray) -> float:
    """Median frame-to-frame change of the rigid landmarks' shape, per face scale, after removing the
    step's translation, rotation and scale: a landmark fit that locks onto a face moves as one rigid
    shape, while one on a face-like texture (a print on moving cloth) shuffles its points."""
    if len(points) < 3:
        return float("nan")
    rigid = points[:, 17:48]
    z = (rigid[..., 0] + 1j * rigid[..., 1]) - (rigid[..., 0] + 1j * rigid[..., 1]).mean(axis=1, keepdims=True)
    prev, cur = z[:-1], z[1:]
    # Least-squares similarity cur → prev as one complex factor per step.
    a = (np.conj(cur) * prev).sum(axis=1) / np.maximum((np.abs(cur) ** 2).sum(axis=1), 1e-9)
    residual = np.sqrt((np.abs(a[:, None] * cur - prev) ** 2).mean(axis=1))
    scale = np.sqrt((np.abs(prev) ** 2).mean(axis=1))
    return float(np.median(residual / np.maximum(scale, 1e-9)))


def decide(
    evidence: list[TrackEvidence],
    policy: SubjectPolicy,
    subject: str = "one",
    spread_of: Callable[[int], float | None] | None = None,
) -> SubjectDecision:
    """Pick the subject track (or every persistent face for subject="all") and say why.

    `spread_of(track)` gives a track's descriptor spread on demand: the ResNet runs only when identity
    consistency can change the outcome (comparable faces and no clear speaker, or subject="all").
    """
    if subject not in ("one", "all"):
        raise ValueError(f"subject must be 'one' or 'all', got {subject!r}")
    by_weight = sorted(evidence, key=lambda e: -(e.presence * e.area))
    why_not: dict[int, str] = {}
    persistent = [e for e in by_weight if e.presence >= policy.min_presence] or by_weight[:1]
    fitting = [e for e in persistent if not e.landmark_jitter > policy.max_jitter] or persistent[:1]
    for e in by_weight:
        if e not in persistent:
            why_not[e.track] = f"transient: seen on {e.presence:.0%} of frames (< {policy.min_presence:.0%})"
        elif e not in fitting:
            why_not[e.track] = (
                f"no face-like landmark fit: its rigid landmarks change shape by "
                f"{e.landmark_jitter:.0%} of the face per frame (> {policy.max_jitter:.0%})"
            )

    def consistent(e: TrackEvidence) -> bool:
        if e.spread is None and spread_of is not None:
            e.spread = spread_of(e.track)
        if e.spread is not None and e.spread > policy.max_spread:
            why_not[e.track] = (
                f"not one consistent face: its descriptors differ by up to {e.spread:.2f} (> {policy.max_spread:g})"
            )
            return False
        return True

    if subject == "all":
        faces = [e for e in fitting if consistent(e)] or fitting[:1]
        faces.sort(key=lambda e: -(e.speech_r or 0.0))  # the speaker, if any, is the source's own clip
        reason = f"subject=all: one of {len(faces)} persistent, consistent face track{'s' * (len(faces) != 1)}"
        dismissed = [e for e in by_weight if e not in faces]
        return SubjectDecision([e.track for e in faces], reason, _runner_up(dismissed[:1], why_not), evidence)

    # Speaker evidence first: a face whose mouth follows the speech is the subject, even beside a larger
    # face that does not speak (a poster, a screen, a listener in close-up).
    speaker = _clear_speaker(fitting, policy)
    if speaker is not None:
        best, second = speaker
        for e in fitting:
            if e is not best:
                why_not[e.track] = (
                    f"not the speaker: its mouth follows the speech with r = {e.speech_r:.2f} "
                    f"against {best.speech_r:.2f}"
                )
        reason = (
            f"active speaker: mouth opening follows the speech envelope (r = {best.speech_r:.2f}; "
            f"next face {second.speech_r:.2f}) among {len(fitting)} persistent faces"
        )
        return SubjectDecision([best.track], reason, _runner_up([second], why_not), evidence)

    main = fitting[0]
    comparable = [e for e in fitting if e is main or e.area >= policy.comparable_area * main.area]
    for e in fitting:
        if e not in comparable:
            why_not[e.track] = f"smaller: {e.area / main.area:.0%} of the subject's area"
    if len(comparable) == 1:
        return _keep(main, "the largest persistent face with a face-like landmark fit", by_weight, why_not, evidence)

    # No speaker: only a consistent identity tells a face from a face-like thing.
    faces = [e for e in comparable if consistent(e)]
    if len(faces) <= 1:
        keep = faces[0] if faces else main
        note = "the only one" if faces else "the largest; none"
        return _keep(
            keep,
            f"{note} of {len(comparable)} comparable faces with one consistent identity",
            by_weight,
            why_not,
            evidence,
        )
    names = ", ".join(f"track {e.track} {e.width:.0f} px" for e in faces)
    speaking = sorted(faces, key=lambda e: -(e.speech_r or 0.0))
    r1, r2 = speaking[0].speech_r, speaking[1].speech_r
    if r1 is None:
        evidence_note = "no audio to tell the speaker"
    elif r1 < policy.speaker_min_r:
        evidence_note = (
            f"no speaker evidence: no mouth follows the speech (best r = {r1:.2f} < {policy.speaker_min_r:g})"
        )
    else:
        evidence_note = (
            f"no speaker evidence: their mouths follow the speech alike (r = {r1:.2f} and {r2:.2f}, "
            f"margin < {policy.speaker_margin:g})"
        )
    message = (
        f"ambiguous subject: {len(faces)} persistent, consistent faces of comparable size ({names}) and "
        f"{evidence_note}; --subject all keeps one clip per face"
    )
    return SubjectDecision([], "", None, evidence, ambiguous=message)


def _clear_speaker(faces: list[TrackEvidence], policy: SubjectPolicy) -> tuple[TrackEvidence, TrackEvidence] | None:
    """(speaker, next best) when one face's mouth follows the speech and clearly better than every other."""
    if len(faces) < 2 or faces[0].speech_r is None:
        return None
    best, second = sorted(faces, key=lambda e: -(e.speech_r or 0.0))[:2]
    if best.speech_r >= policy.speaker_min_r and best.speech_r - second.speech_r >= policy.speaker_margin:
        return best, second
    return None


def _keep(
    e: TrackEvidence,
    reason: str,
    by_weight: list[TrackEvidence],
    why_not: dict[int, str],
    evidence: list[TrackEvidence],
) -> SubjectDecision:
    dismissed = [d for d in by_weight if d is not e]
    runner_up = _runner_up(dismissed[:1], why_not)
    if runner_up is None:
        reason = "the only face track"
    else:
        reason += f"; next track {runner_up['track']}: {runner_up['why_not']}"
    return SubjectDecision([e.track], reason, runner_up, evidence)


def _runner_up(candidates: list[TrackEvidence], why_not: dict[int, str]) -> dict | None:
    if not candidates:
        return None
    e = candidates[0]
    return {"why_not": why_not.get(e.track, ""), **e.as_dict()}
