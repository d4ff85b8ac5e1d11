"""Per-clip face tracking: one subject's 68 landmarks on every frame of a clip, or a typed reason why not.

    from imagineid.face.track import track_face
    from imagineid.media import iter_frames
    track = track_face(iter_frames("clip.mp4", fps=25), fps=25)  # FaceTrack, or a FaceError subclass
    track.landmarks  # (T, 68, 2) float32, smoothed; track.found (T,) says where the face was really seen

How it works, in one streaming pass (only the current frame is held):
1. Detect faces on the whole frame (dlib HOG, ~60 ms at 256 px) every `detect_every` frames, and on
   every frame while nothing is tracked. Detections are matched to face tracklets by IoU.
2. In between, track: the shape predictor (~2 ms) runs on a box derived from the previous frame's
   landmarks. Each tracklet learns how the detector's box sits on its landmarks, so the derived box
   looks like a detection and the predictor behaves as it does on one. A step whose landmarks jump,
   shrink or grow too much, or whose face patch no longer looks like the last detected one, is
   re-anchored: the last detection's pixels are searched for near the last box (template matching) and
   the predictor runs on the box found there, as on a detection, so a face the predictor fits poorly
   (half hidden, turned) does not drift away. If the pixels are gone too, the tracklet is lost and a
   detection runs on the same frame.
   Where two faces are in view at once, a few detection frames per tracklet also keep an aligned face
   chip; dlib's 128-d descriptor (a slow ResNet) runs on them at the end, only if identity decides.
3. At the end, subject.py decides on whole tracks: persistent, with a face-like landmark fit,
   comparable in size, and, given the clip's audio, the one whose mouth follows the speech; only if
   that leaves several faces does identity consistency (the descriptors) count. A clip is rejected only
   when two consistent faces remain and nothing tells the speaker (AmbiguousSubjectError);
   `subject="all"` (track_faces) keeps each of them instead. Lost frames get interpolated landmarks; a
   zero-phase Savitzky–Golay filter smooths the rest without lagging or flattening the mouth.

A frame with no face at all is searched once more upscaled (enough for `probe_face_px` faces, within
`probe_max_pixels`), and, if HOG still finds nothing, by dlib's CNN detector within `cnn_budget_s`; a
face found only this way and narrower than `min_face_px` is reported as FaceTooSmallError with its size
rather than NoFaceError, and a usable one makes the whole clip detect at the zoom it needs. When no face
has been seen for longer than `max_lost_run_s`, the clip is rejected at once without decoding the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

import cv2
import numpy as np
from scipy.signal import savgol_filter

from imagineid.audio.features import frame_rms
from imagineid.errors import ImagineIDError
from imagineid.face.dlib_backend import DlibLandmarker, FaceBox
from imagineid.face.dlib_extras import chip_descriptor, cnn_detect, face_chip
from imagineid.face.subject import (
    SubjectDecision,
    SubjectPolicy,
    decide,
    descriptor_spread,
    track_evidence,
)

RIGID = slice(17, 48)  # brows, nose and eyes: they do not move when the mouth opens
HOG_MIN_PX = 80  # dlib's HOG window: faces narrower than this are not found without upsampling
CNN_S_PER_PX = 7e-6  # first guess of the CNN detector's CPU time per input pixel, refined by each run


class FaceError(ImagineIDError):
    """A clip whose face cannot be tracked well enough to be used; `detail` holds the figures that decided
    (sizes, per-track evidence), for the failures/ table."""

    kind = "face"

    def __init__(self, message: str, detail: dict | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


class NoFaceError(FaceError):
    kind = "no_face"


class FaceLostError(FaceError):
    kind = "face_lost"


class AmbiguousSubjectError(FaceError):
    """Two or more persistent, consistent faces of comparable size and no evidence of who speaks."""

    kind = "ambiguous_subject"


class FaceTooSmallError(FaceError):
    kind = "face_too_small"


class TooFewFramesError(FaceError):
    kind = "too_few_frames"


class Landmarker(Protocol):
    """What track_face needs from a backend (DlibLandmarker fits)."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray: ...


@dataclass(frozen=True)
class TrackConfig:
    detect_every: int = 5  # frames between full-frame detections; landmarks are tracked in between
    upsample: int = 0  # dlib HOG upsampling for the default landmarker (1 finds ~40 px faces, 4x slower)
    min_face_px: float = 48.0  # median detector-box width of the subject below this → FaceTooSmallError
    subject: str = "one"  # one: the subject's track (or AmbiguousSubjectError) | all: every persistent face
    policy: SubjectPolicy = field(default_factory=SubjectPolicy)  # how tracks are told apart (subject.py)
    max_lost_fraction: float = 0.25  # more frames than this without the face → FaceLostError
    max_lost_run_s: float = 1.0  # a longer run of consecutive frames without the face → FaceLostError
    min_frames: int = 8  # shorter clips → TooFewFramesError
    match_iou: float = 0.3  # a detection continues a tracklet when their boxes overlap at least this much
    max_faces: int = 4  # tracklets followed with landmarks at once (the largest); others only by detection
    max_shift: float = 0.15  # tracking step: landmark centre may move at most this fraction of the box width
    max_scale_change: float = 0.15  # tracking step: landmark scale may change at most this much (relative)
    min_appearance: float = 0.5  # tracking step: correlation of the face patch with the last detected one
    reanchor_appearance: float = (
        0.7  # a failed step is re-anchored on the last detection's pixels if they match this well
    )
    probe_face_px: float = 20.0  # a frame without faces is searched again upscaled to find faces this small ...
    probe_max_pixels: int = 5_000_000  # ... unless the upscaled frame would exceed this (then at least 2x)
    probe_every_s: float = 1.0  # at most one such probe per this many seconds, and only until a face is seen
    cnn_budget_s: float = 12.0  # CPU seconds per clip the CNN detector may take when HOG finds nothing
    smooth_window: int = 5  # frames of the Savitzky–Golay filter on landmarks (odd; 1 = no smoothing)
    smooth_order: int = 2  # its polynomial order (2 keeps the peaks of mouth opening)


@dataclass
class FaceTrack:
    landmarks: np.ndarray  # (T, 68, 2) float32, smoothed; interpolated where not found
    raw_landmarks: np.ndarray  # (T, 68, 2) float32, as predicted; interpolated where not found
    boxes: np.ndarray  # (T, 4) float32 (x0, y0, x1, y1), detector-style box of the subject
    found: np.ndarray  # (T,) bool, the face was seen on this frame (detected or tracked)
    n_detections: int  # full-frame detector runs (probes included)
    fps: float
    track_id: int = 0  # which of the clip's face tracks this is
    subject_reason: str = ""  # why this track was kept
    runner_up: dict | None = None  # the best track not kept, with why_not and its evidence
    evidence: list[dict] = field(default_factory=list)  # every track's evidence (subject.TrackEvidence)

    @property
    def n_frames(self) -> int:
        return len(self.found)


@dataclass
class _Tracklet:
    """One face followed over time: detections matched by IoU, landmarks while it is tracked."""

    id: int
    calib: np.ndarray  # (3,) detector box relative to the rigid landmarks: centre dx, dy and width, in scale units
    box: np.ndarray  # (4,) last known detector-style box
    points: np.ndarray | None = None  # (68, 2) landmarks on the current frame; None = not tracked now
    patch: np.ndarray | None = None  # normalised grey patch of the last detection, for the appearance check
    template: np.ndarray | None = None  # grey pixels of the last detection's box, to re-anchor a drifting fit
    weight: float = 0.0  # sum of box areas over frames with landmarks: large and persistent wins
    raw: dict[int, np.ndarray] = field(default_factory=dict)  # frame index → (68, 2) landmarks
    scores: list[float] = field(default_factory=list)  # detector score of each detection matched to it
    chips: list[np.ndarray] = field(default_factory=list)  # a few aligned 150 px face chips along the track
    last_chip: int = -(10**9)  # frame of the last chip


def _rigid_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and RMS radius of the rigid landmarks: a face position and size that ignore the mouth."""
    rigid = points[RIGID]
    centre = rigid.mean(axis=0)
    return centre, float(np.sqrt(((rigid - centre) ** 2).sum(axis=1).mean()))


def _calibrate(box: np.ndarray, points: np.ndarray) -> np.ndarray:
    centre, scale = _rigid_frame(points)
    box_centre = (box[:2] + box[2:]) / 2
    return np.array([*(box_centre - centre) / scale, (box[2] - box[0]) / scale])


def _box_from_points(points: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """The box the detector would give for these landmarks (square, like dlib's)."""
    centre, scale = _rigid_frame(points)
    c = centre + calib[:2] * scale
    half = calib[2] * scale / 2
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _probe_zoom(pixels: int, config: TrackConfig) -> int:
    """Power-of-two upscaling that brings probe_face_px faces to HOG's window, capped by probe_max_pixels."""
    zoom = 2 ** math.ceil(math.log2(HOG_MIN_PX / config.probe_face_px))
    while zoom > 2 and pixels * zoom**2 > config.probe_max_pixels:
        zoom //= 2
    return max(zoom, 2)


def _zoomed(frame: np.ndarray, zoom: int) -> np.ndarray:
    return frame if zoom == 1 else cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)


def _facebox(box: np.ndarray) -> FaceBox:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return FaceBox(x0, y0, x1, y1, float("nan"))


def _crop(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box's grey pixels (borders replicate), float32."""
    w = max(round(float(box[2] - box[0])), 2)
    return cv2.getRectSubPix(grey, (w, w), ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)).astype(np.float32)


def _match_template(grey: np.ndarray, template: np.ndarray, box: np.ndarray, max_shift: float) -> np.ndarray | None:
    """Where the template (a detection's pixels) sits best within max_shift box widths of box: the box
    moved there, keeping the template's size; None where either is featureless (nothing to match)."""
    w = template.shape[0]
    margin = max(2, round(max_shift * w))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    window = cv2.getRectSubPix(grey, (w + 2 * margin, w + 2 * margin), (cx, cy)).astype(np.float32)
    if window.std() < 1e-3 or template.std() < 1e-3:
        return None
    score = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, _, _, (dx, dy) = cv2.minMaxLoc(score)
    cx, cy = cx + dx - margin, cy + dy - margin
    return np.array([cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2])


def _patch(grey: np.ndarray, box: np.ndarray, n: int = 24) -> np.ndarray:
    """The box resampled to n × n, zero mean and unit variance (borders replicate)."""
    p = cv2.resize(_crop(grey, box), (n, n), interpolation=cv2.INTER_AREA)
    p -= p.mean()
    return p / (p.std() + 1e-6)


class _Tracker:
    """The streaming state of track_face: tracklets, their per-frame landmarks and the detection log."""

    def __init__(self, config: TrackConfig, landmarker: Landmarker, fps: float) -> None:
        self.config = config
        self.landmarker = landmarker
        self.fps = fps
        self.tracklets: list[_Tracklet] = []
        self.n_detections = 0
        self.zoom = 1  # detection runs on frames upscaled by this (raised by a successful probe)
        self.tiny_widths: list[float] = []  # faces only a probe could find, too small to use
        self.probes: list[str] = []  # what the search for a first face tried, for the no-face message
        self.cnn_left_s = config.cnn_budget_s
        self.cnn_s_per_px = CNN_S_PER_PX
        self.last_detection = -(10**9)
        self.last_probe = -(10**9)

    # -- detection ----------------------------------------------------------------------------------
    def _detect(self, frame: np.ndarray, zoom: int) -> list[tuple[np.ndarray, float]]:
        """(box in frame pixels, detector score) per face, on the frame upscaled by zoom."""
        self.n_detections += 1
        image = _zoomed(frame, zoom)
        return [
            (np.array([b.left, b.top, b.right, b.bottom], np.float64) / zoom, b.score)
            for b in self.landmarker.detect(image)
        ]

    def _cnn(self, frame: np.ndarray, max_zoom: int) -> list[tuple[np.ndarray, float]]:
        """dlib's CNN detector at zoom 1, 2, 4 … (<= max_zoom) until it finds a face or the next zoom's
        expected time no longer fits the budget left: a face HOG cannot see is usually found at zoom 1
        (cheap), a small one needs the costlier zooms."""
        pixels = frame.shape[0] * frame.shape[1]
        zoom = 1
        while zoom <= max_zoom and pixels * zoom**2 * self.cnn_s_per_px <= self.cnn_left_s:
            start = time.perf_counter()
            self.n_detections += 1
            found = cnn_detect(_zoomed(frame, zoom))
            spent = time.perf_counter() - start
            self.cnn_left_s -= spent
            self.cnn_s_per_px = spent / (pixels * zoom**2)
            self.probes.append(f"CNN detector x{zoom}")
            if found:
                return [(np.array([b.left, b.top, b.right, b.bottom], np.float64) / zoom, b.score) for b in found]
            zoom *= 2
        return []

    def _probe(self, frame: np.ndarray, t: int) -> list[tuple[np.ndarray, float]]:
        """Search a face-less frame upscaled, then with the CNN, while no face has been seen; may raise
        the clip's zoom."""
        if self.tracklets or t - self.last_probe < self.config.probe_every_s * self.fps:
            return []
        zoom = _probe_zoom(frame.shape[0] * frame.shape[1], self.config)
        if zoom <= self.zoom:
            return []
        self.last_probe = t
        found = self._detect(frame, zoom)
        self.probes.append(f"HOG x{zoom}")
        if not found and self.cnn_left_s > 0:
            found = self._cnn(frame, zoom)
        usable = [(b, s) for b, s in found if b[2] - b[0] >= self.config.min_face_px]
        if not usable:
            self.tiny_widths += [float(b[2] - b[0]) for b, _ in found]
            return []
        # Detect at the smallest zoom that brings the smallest usable face to the HOG window.
        smallest = min(float(b[2] - b[0]) for b, _ in usable)
        self.zoom = max(self.zoom, min(zoom, 2 ** max(0, math.ceil(math.log2(HOG_MIN_PX * 1.1 / smallest)))))
        return usable

    def detect_and_match(self, frame: np.ndarray, grey: np.ndarray, t: int) -> None:
        self.last_detection = t
        found = self._detect(frame, self.zoom)
        if not found:
            found = self._probe(frame, t)
        boxes = [b for b, _ in found]
        # Greedy IoU matching against where each tracklet is now expected.
        expected = {
            tr.id: tr.box if tr.points is None else _box_from_points(tr.points, tr.calib) for tr in self.tracklets
        }
        pairs = sorted(
            ((_iou(b, expected[tr.id]), i, tr) for i, b in enumerate(boxes) for tr in self.tracklets),
            key=lambda p: -p[0],
        )
        matched: dict[int, _Tracklet] = {}
        used: set[int] = set()
        for iou, i, tr in pairs:
            if iou < self.config.match_iou:
                break
            if i not in matched and tr.id not in used:
                matched[i] = tr
                used.add(tr.id)
        for i, box in enumerate(boxes):
            if i not in matched:
                tr = _Tracklet(id=len(self.tracklets), calib=np.zeros(3), box=box)
                self.tracklets.append(tr)
                matched[i] = tr
        # Tracklets the detector missed keep tracking (HOG misses some frames); the checks guard them.
        for tr in self.tracklets:
            if tr.points is not None and tr.id not in used and t not in tr.raw:
                self.track(tr, frame, grey, t)
        # Landmarks on the detections, largest first, up to max_faces followed at once.
        order = sorted(matched, key=lambda i: -(boxes[i][2] - boxes[i][0]))
        for rank, i in enumerate(order):
            tr, box = matched[i], boxes[i]
            tr.box = box
            tr.scores.append(found[i][1])
            if rank >= self.config.max_faces:
                tr.points = None
                continue
            points = self.landmarker.landmarks(frame, _facebox(box)).astype(np.float64)
            calib = _calibrate(box, points)
            tr.calib = calib if not tr.weight else 0.5 * tr.calib + 0.5 * calib
            tr.patch = _patch(grey, box)
            tr.template = _crop(grey, box)
            self._keep(tr, points, t)
        self._sample_chips(frame, t)

    def _sample_chips(self, frame: np.ndarray, t: int) -> None:
        """Face chips for descriptors, only where two or more faces are in view: a single face needs no
        identity check. Chips are small, so the streaming pass still holds one frame."""
        seen = [tr for tr in self.tracklets if tr.points is not None and t in tr.raw]
        if len(seen) < 2:
            return
        policy = self.config.policy
        for tr in seen:
            if (
                len(tr.chips) < policy.descriptors_per_track
                and t - tr.last_chip >= policy.descriptor_every_s * self.fps
            ):
                tr.chips.append(face_chip(frame, tr.box, tr.points))
                tr.last_chip = t

    # -- tracking -----------------------------------------------------------------------------------
    def track(self, tr: _Tracklet, frame: np.ndarray, grey: np.ndarray, t: int) -> bool:
        """One predictor step from the previous landmarks; False (and the tracklet dropped) if it fails."""
        assert tr.points is not None and tr.patch is not None
        box = _box_from_points(tr.points, tr.calib)
        points = self.landmarker.landmarks(frame, _facebox(box)).astype(np.float64)
        (c0, s0), (c1, s1) = _rigid_frame(tr.points), _rigid_frame(points)
        width = box[2] - box[0]
        new_box = _box_from_points(points, tr.calib)
        ok = (
            np.linalg.norm(c1 - c0) <= self.config.max_shift * width
            and abs(s1 / s0 - 1.0) <= self.config.max_scale_change
            and float((_patch(grey, new_box) * tr.patch).mean()) >= self.config.min_appearance
        )
        if ok:
            tr.box = new_box
            self._keep(tr, points, t)
            return True
        return self._reanchor(tr, frame, grey, t)

    def _reanchor(self, tr: _Tracklet, frame: np.ndarray, grey: np.ndarray, t: int) -> bool:
        """When the predictor drifts from its own last fit (faces it fits poorly: half hidden, turned,
        seen only by the CNN detector), find the last detection's pixels again near the last box and fit
        the landmarks on that box, as on a detection. False (and the tracklet dropped) if they are gone."""
        box = _match_template(grey, tr.template, tr.box, self.config.max_shift) if tr.template is not None else None
        if box is None or float((_patch(grey, box) * tr.patch).mean()) < self.config.reanchor_appearance:
            tr.points = None
            return False
        points = self.landmarker.landmarks(frame, _facebox(box)).astype(np.float64)
        tr.box = box
        self._keep(tr, points, t)
        return True

    def _keep(self, tr: _Tracklet, points: np.ndarray, t: int) -> None:
        if t not in tr.raw:
            tr.weight += float(np.prod(tr.box[2:] - tr.box[:2]))
        tr.points = points
        tr.raw[t] = points.astype(np.float32)

    def step(self, frame: np.ndarray, t: int) -> bool:
        """Process frame t; True if some face has landmarks on it."""
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
        active = [tr for tr in self.tracklets if tr.points is not None]
        due = t - self.last_detection >= self.config.detect_every
        # Track every active face (no short-circuit); any loss means detecting on this frame.
        if active and not due and all([self.track(tr, frame, grey, t) for tr in active]):  # noqa: C419
            return True
        self.detect_and_match(frame, grey, t)
        return any(tr.points is not None for tr in self.tracklets)


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(length, start) of the longest run of True."""
    best, start, run = 0, 0, 0
    for i, v in enumerate(mask):
        run = run + 1 if v else 0
        if run > best:
            best, start = run, i - run + 1
    return best, start


def _interpolate(raw: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Fill frames where found is False by linear interpolation (nearest value at the ends)."""
    t = np.arange(len(found))
    flat = raw.reshape(len(found), -1)
    out = np.empty_like(flat)
    for k in range(flat.shape[1]):
        out[:, k] = np.interp(t, t[found], flat[found, k])
    return out.reshape(raw.shape)


def smooth_landmarks(points: np.ndarray, window: int = 5, order: int = 2) -> np.ndarray:
    """Zero-phase Savitzky–Golay filter over time. (T, 68, 2) → (T, 68, 2); short clips shrink the window."""
    window = min(window, len(points))
    window -= 1 - window % 2  # odd
    if window <= order or window < 3:
        return points.copy()
    return savgol_filter(points, window, order, axis=0, mode="interp").astype(points.dtype)


def track_faces(
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    config: TrackConfig = TrackConfig(),
    landmarker: Landmarker | None = None,
    audio: tuple[np.ndarray, int] | None = None,
) -> list[FaceTrack]:
    """The clip's subject track (config.subject="one") or every persistent face track ("all"), subject first.

    `frames` are RGB uint8 (H, W, 3), consumed once (a generator is fine). `audio` = (mono samples,
    sample rate) of the same clip lets the speaker's mouth decide between comparable faces. `landmarker`
    defaults to DlibLandmarker(config.upsample); a given one is used as is (its own upsampling applies).
    Raises a FaceError subclass when the clip cannot be used.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if config.detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {config.detect_every}")
    tracker = _Tracker(config, landmarker or DlibLandmarker(config.upsample), fps)
    max_run = math.floor(config.max_lost_run_s * fps + 1e-9)

    # 1. Stream: detect / track, and give up early when nothing has been seen for too long.
    n, run = 0, 0
    for t, frame in enumerate(frames):
        n = t + 1
        run = 0 if tracker.step(frame, t) else run + 1
        if run > max_run:
            if not tracker.tracklets:
                _raise_none_found(tracker, n, f"in the first {n} frames")
            raise FaceLostError(
                f"face lost for {run} consecutive frames from frame {t - run + 1} "
                f"(more than {config.max_lost_run_s:g} s at {fps:g} fps)"
            )
    if n < config.min_frames:
        raise TooFewFramesError(f"clip has {n} frame{'s' * (n != 1)}; at least {config.min_frames} are needed")
    if not any(tr.raw for tr in tracker.tracklets):
        _raise_none_found(tracker, n, f"in any of {n} frames")

    # 2. The subject, decided on whole tracks (subject.py).
    envelope = None if audio is None else frame_rms(audio[0], n, fps, audio[1])
    tracklets = {tr.id: tr for tr in tracker.tracklets if tr.raw}
    evidence = [
        track_evidence(tr.id, tr.raw, _track_widths(tr), tr.scores, n, envelope, config.policy)
        for tr in tracklets.values()
    ]

    def spread_of(track_id: int) -> float | None:
        return descriptor_spread([chip_descriptor(c) for c in tracklets[track_id].chips])

    decision = decide(evidence, config.policy, config.subject, spread_of)
    if decision.ambiguous:
        raise AmbiguousSubjectError(decision.ambiguous, {"tracks": [e.as_dict() for e in evidence]})
    tracks, errors = [], []
    for k, track_id in enumerate(decision.kept):
        try:
            tracks.append(_subject_track(tracklets[track_id], n, tracker, decision, k, max_run))
        except FaceError as err:  # with subject="all", a track that fails its checks is left out
            errors.append(err)
    if not tracks:
        raise errors[0]
    return tracks


def track_face(
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    config: TrackConfig = TrackConfig(),
    landmarker: Landmarker | None = None,
    audio: tuple[np.ndarray, int] | None = None,
) -> FaceTrack:
    """Track the one subject of a clip (track_faces with subject="one")."""
    return track_faces(frames, fps, replace(config, subject="one"), landmarker, audio)[0]


def _track_widths(tr: _Tracklet) -> list[float]:
    """Detector-style box width on every frame the tracklet has landmarks."""
    widths = []
    for points in tr.raw.values():
        box = _box_from_points(points.astype(np.float64), tr.calib)
        widths.append(float(box[2] - box[0]))
    return widths


def _subject_track(
    tr: _Tracklet, n: int, tracker: _Tracker, decision: SubjectDecision, rank: int, max_run: int
) -> FaceTrack:
    """One kept tracklet as a FaceTrack: size and loss checks, interpolation, smoothing."""
    config, fps = tracker.config, tracker.fps
    found = np.zeros(n, bool)
    found[list(tr.raw)] = True
    raw = np.zeros((n, 68, 2), np.float32)
    raw[found] = np.stack([tr.raw[t] for t in sorted(tr.raw)])
    width = float(np.median(_track_widths(tr)))
    if width < config.min_face_px:
        raise FaceTooSmallError(
            f"face too small ({_px(width, config.min_face_px)} px < {config.min_face_px:g} px, median box width)",
            {"face_px": round(width, 1), "min_face_px": config.min_face_px, "track": tr.id},
        )

    # Lost frames: too many, or too long a run, reject; otherwise interpolate.
    lost = int((~found).sum())
    if lost > config.max_lost_fraction * n:
        raise FaceLostError(f"face lost in {lost} of {n} frames (more than {config.max_lost_fraction:.0%})")
    longest, start = _longest_run(~found)
    if longest > max_run:
        raise FaceLostError(
            f"face lost for {longest} consecutive frames from frame {start} "
            f"(more than {config.max_lost_run_s:g} s at {fps:g} fps)"
        )
    raw = _interpolate(raw, found)

    # Smooth (zero phase) and derive the boxes from the smoothed landmarks.
    smooth = smooth_landmarks(raw, config.smooth_window, config.smooth_order)
    boxes = np.stack([_box_from_points(p.astype(np.float64), tr.calib) for p in smooth]).astype(np.float32)
    return FaceTrack(
        landmarks=smooth.astype(np.float32),
        raw_landmarks=raw.astype(np.float32),
        boxes=boxes,
        found=found,
        n_detections=tracker.n_detections,
        fps=float(fps),
        track_id=tr.id,
        subject_reason=decision.reason if rank == 0 else f"subject=all: face track {rank + 1} of {len(decision.kept)}",
        runner_up=decision.runner_up,
        evidence=[e.as_dict() for e in decision.evidence],
    )


def _px(width: float, limit: float) -> str:
    """A width below limit, in whole pixels unless rounding would make it read as the limit itself."""
    return f"{width:.0f}" if round(width) < limit else f"{math.floor(width * 10) / 10:.1f}"


def _raise_none_found(tracker: _Tracker, n: int, where: str) -> None:
    tried = f"; also tried {', '.join(dict.fromkeys(tracker.probes))}" if tracker.probes else ""
    if tracker.tiny_widths:
        width = float(np.median(tracker.tiny_widths))
        raise FaceTooSmallError(
            f"face too small ({_px(width, tracker.config.min_face_px)} px < {tracker.config.min_face_px:g} px; "
            f"found only upscaled, {where})",
            {"face_px": round(width, 1), "min_face_px": tracker.config.min_face_px, "tried": tracker.probes},
        )
    raise NoFaceError(
        f"no face found {where} ({tracker.n_detections} detector runs{tried})",
        {"detector_runs": tracker.n_detections, "tried": tracker.probes},
    )
