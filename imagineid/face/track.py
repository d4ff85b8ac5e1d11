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
   shrink or grow too much, or whose face patch no longer looks like the last detected one, loses the
   tracklet and triggers a detection on the same frame.
3. At the end the subject is the largest, most persistent tracklet. A rival of comparable size in more
   than half of the detection frames rejects the clip (SeveralFacesError); smaller or transient faces
   are ignored. Lost frames get interpolated landmarks; a zero-phase Savitzky–Golay filter smooths the
   rest without lagging or flattening the mouth.

A frame with no face at all is searched once more upscaled (up to `probe_max_side`), so a face too
small for the detector is reported as TinyFaceError rather than NoFaceError; a probe that finds a face
of acceptable size makes the whole clip detect at that zoom. When no face has been seen for longer than
`max_lost_run_s`, the clip is rejected at once without decoding the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
from scipy.signal import savgol_filter

from imagineid.errors import ImagineIDError
from imagineid.face.dlib_backend import DlibLandmarker, FaceBox

RIGID = slice(17, 48)  # brows, nose and eyes: they do not move when the mouth opens
HOG_MIN_PX = 80  # dlib's HOG window: faces narrower than this are not found without upsampling


class FaceError(ImagineIDError):
    """A clip whose face cannot be tracked well enough to be used."""

    kind = "face"


class NoFaceError(FaceError):
    kind = "no_face"


class FaceLostError(FaceError):
    kind = "face_lost"


class SeveralFacesError(FaceError):
    kind = "several_faces"


class TinyFaceError(FaceError):
    kind = "tiny_face"


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
    min_face_px: float = 60.0  # median detector-box width of the subject below this → TinyFaceError
    max_lost_fraction: float = 0.25  # more frames than this without the face → FaceLostError
    max_lost_run_s: float = 1.0  # a longer run of consecutive frames without the face → FaceLostError
    min_frames: int = 8  # shorter clips → TooFewFramesError
    second_face_ratio: float = 0.5  # a rival face with at least this fraction of the subject's area ...
    rival_presence: float = 0.5  # ... in more than this fraction of detection frames → SeveralFacesError
    match_iou: float = 0.3  # a detection continues a tracklet when their boxes overlap at least this much
    max_faces: int = 4  # tracklets followed with landmarks at once (the largest); others only by detection
    max_shift: float = 0.15  # tracking step: landmark centre may move at most this fraction of the box width
    max_scale_change: float = 0.15  # tracking step: landmark scale may change at most this much (relative)
    min_appearance: float = 0.5  # tracking step: correlation of the face patch with the last detected one
    probe_max_side: int = 1024  # px; a frame without faces is searched again upscaled to about this side
    probe_every_s: float = 1.0  # at most one such probe per this many seconds, and only until a face is seen
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
    weight: float = 0.0  # sum of box areas over frames with landmarks: large and persistent wins
    raw: dict[int, np.ndarray] = field(default_factory=dict)  # frame index → (68, 2) landmarks


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


def _facebox(box: np.ndarray) -> FaceBox:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return FaceBox(x0, y0, x1, y1, float("nan"))


def _patch(grey: np.ndarray, box: np.ndarray, n: int = 24) -> np.ndarray:
    """The box resampled to n × n, zero mean and unit variance (borders replicate)."""
    w = max(round(float(box[2] - box[0])), 2)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    roi = cv2.getRectSubPix(grey, (w, w), centre)
    p = cv2.resize(roi, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)
    p -= p.mean()
    return p / (p.std() + 1e-6)


class _Tracker:
    """The streaming state of track_face: tracklets, their per-frame landmarks and the detection log."""

    def __init__(self, config: TrackConfig, landmarker: Landmarker, fps: float) -> None:
        self.config = config
        self.landmarker = landmarker
        self.fps = fps
        self.tracklets: list[_Tracklet] = []
        self.detection_log: list[list[tuple[int, float]]] = []  # per detection frame: (tracklet id, box area)
        self.n_detections = 0
        self.zoom = 1  # detection runs on frames upscaled by this (raised by a successful probe)
        self.tiny_widths: list[float] = []  # faces only a probe could find, too small to use
        self.last_detection = -(10**9)
        self.last_probe = -(10**9)

    # -- detection ----------------------------------------------------------------------------------
    def _detect(self, frame: np.ndarray, zoom: int) -> list[np.ndarray]:
        self.n_detections += 1
        image = frame if zoom == 1 else cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        return [np.array([b.left, b.top, b.right, b.bottom], np.float64) / zoom for b in self.landmarker.detect(image)]

    def _probe(self, frame: np.ndarray, t: int) -> list[np.ndarray]:
        """Search a face-less frame upscaled, while no face has been seen; may raise the clip's zoom."""
        if self.tracklets or t - self.last_probe < self.config.probe_every_s * self.fps:
            return []
        zoom = 2 ** int(math.log2(max(self.config.probe_max_side / max(frame.shape[:2]), 1.0)))
        if zoom <= self.zoom:
            return []
        self.last_probe = t
        boxes = self._detect(frame, zoom)
        usable = [b for b in boxes if b[2] - b[0] >= self.config.min_face_px]
        if not usable:
            self.tiny_widths += [float(b[2] - b[0]) for b in boxes]
            return []
        # Detect at the smallest zoom that brings the smallest usable face to the HOG window.
        smallest = min(float(b[2] - b[0]) for b in usable)
        self.zoom = max(self.zoom, min(zoom, 2 ** math.ceil(math.log2(HOG_MIN_PX * 1.1 / smallest))))
        return usable

    def detect_and_match(self, frame: np.ndarray, grey: np.ndarray, t: int) -> None:
        self.last_detection = t
        boxes = self._detect(frame, self.zoom)
        if not boxes:
            boxes = self._probe(frame, t)
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
            if rank >= self.config.max_faces:
                tr.points = None
                continue
            points = self.landmarker.landmarks(frame, _facebox(box)).astype(np.float64)
            calib = _calibrate(box, points)
            tr.calib = calib if not tr.weight else 0.5 * tr.calib + 0.5 * calib
            tr.patch = _patch(grey, box)
            self._keep(tr, points, t)
        self.detection_log.append([(matched[i].id, float(np.prod(boxes[i][2:] - boxes[i][:2]))) for i in matched])

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
        else:
            tr.points = None
        return ok

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


def track_face(
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    config: TrackConfig = TrackConfig(),
    landmarker: Landmarker | None = None,
) -> FaceTrack:
    """Track the one subject of a clip; raises a FaceError subclass when the clip cannot be used.

    `frames` are RGB uint8 (H, W, 3), consumed once (a generator is fine). `landmarker` defaults to
    DlibLandmarker(config.upsample); a given one is used as is (its own upsampling applies).
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

    # 2. The subject: the largest, most persistent face; comparable rivals reject the clip.
    main = max(tracker.tracklets, key=lambda tr: tr.weight)
    found = np.zeros(n, bool)
    found[list(main.raw)] = True
    raw = np.zeros((n, 68, 2), np.float32)
    raw[found] = np.stack([main.raw[t] for t in sorted(main.raw)])
    boxes = np.stack([_box_from_points(p, main.calib) for p in raw[found]])  # (F, 4)
    main_area = float(np.median(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)))
    n_det = len(tracker.detection_log)
    rival = sum(
        any(i != main.id and area >= config.second_face_ratio * main_area for i, area in log)
        for log in tracker.detection_log
    )
    if rival > config.rival_presence * n_det:
        raise SeveralFacesError(
            f"several faces: another face of comparable size (>= {config.second_face_ratio:.0%} of the main face's area) "
            f"in {rival} of {n_det} detection frames"
        )
    width = float(np.median(boxes[:, 2] - boxes[:, 0]))
    if width < config.min_face_px:
        raise TinyFaceError(f"face is {width:.0f} px wide (median box), below min_face_px={config.min_face_px:g}")

    # 3. Lost frames: too many, or too long a run, reject; otherwise interpolate.
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

    # 4. Smooth (zero phase) and derive the boxes from the smoothed landmarks.
    smooth = smooth_landmarks(raw, config.smooth_window, config.smooth_order)
    boxes = np.stack([_box_from_points(p.astype(np.float64), main.calib) for p in smooth]).astype(np.float32)
    return FaceTrack(
        landmarks=smooth.astype(np.float32), raw_landmarks=raw.astype(np.float32), boxes=boxes,
        found=found, n_detections=tracker.n_detections, fps=float(fps),
    )


def _raise_none_found(tracker: _Tracker, n: int, where: str) -> None:
    if tracker.tiny_widths:
        width = float(np.median(tracker.tiny_widths))
        raise TinyFaceError(
            f"face is {width:.0f} px wide (found only upscaled, {where}), below "
            f"min_face_px={tracker.config.min_face_px:g}"
        )
    raise NoFaceError(f"no face found {where} ({tracker.n_detections} detector runs)")
