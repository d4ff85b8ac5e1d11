"""Photographic synthetic faces with exactly known landmarks: the astronaut photo, warped.

Why a warped photo and not a drawn face: the offline detector (dlib HOG + 68 landmarks) must find the
faces, and later stages must learn appearance from real skin, hair and lighting. The public-domain
astronaut photo (bundled with scikit-image) is the one face we may ship; identities, mouth motion and
emotions are made by moving its 68 landmarks and warping the pixels with a thin-plate spline, so the
ground-truth landmarks are known exactly for every frame.

    template = load_template(256)
    look = SpeakerLook.build(template, factors)
    frame = render_frame(look, landmarks_px, motion, background)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from imagineid.data.labels import EMOTIONS
from imagineid.errors import ImagineIDError
from imagineid.face import landmarks68 as lm
from imagineid.face.warp import remap, tps_backward_map

# Head-and-shoulders square of skimage's 512 px astronaut photo (x0, y0, x1, y1): face ~40 % of the width.
TEMPLATE_CROP = (105, 6, 335, 236)


@dataclass(frozen=True)
class FaceTemplate:
    """The source photo at output size with its landmarks and soft region masks (all in pixels)."""

    image: np.ndarray  # (S, S, 3) float32 in 0..255
    landmarks: np.ndarray  # (68, 2) landmarks of `image`: the photo's face with its lips closed (rest pose)
    person: np.ndarray  # (S, S) float32 0..1, head + shoulders vs. studio background
    hair: np.ndarray  # (S, S) float32 0..1
    skin: np.ndarray  # (S, S) float32 0..1
    brows: np.ndarray  # (S, S) float32 0..1, for the brow-ridge shading

    @property
    def size(self) -> int:
        return self.image.shape[0]


@dataclass(frozen=True)
class IdentityFactors:
    """Face geometry and colouring of one synthetic speaker; geometry factors are z-scores (≈ -1.5..1.5)."""

    face_width: float
    jaw: float  # jaw strength: wider lower jaw, longer chin
    brow_ridge: float  # lower, heavier brows
    eye_spacing: float
    nose_length: float
    child: float  # 0 adult .. 1 child: smaller, rounder face, larger eyes, shorter nose
    elder: float  # 0 .. 1: sagging jaw line, lower brows
    skin_tone: tuple[float, float, float]  # RGB gain on skin
    hair_color: tuple[float, float, float]  # RGB 0..255 target hair colour


def _polygon_mask(size: int, polygons: list[np.ndarray], blur: float = 0.0) -> np.ndarray:
    """Antialiased filled polygons as a float mask (S, S) in 0..1 (4× sub-pixel precision)."""
    mask = np.zeros((size, size), np.uint8)
    for poly in polygons:
        cv2.fillPoly(mask, [np.round(poly * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
    out = mask.astype(np.float32) / 255.0
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def _face_hull(points: np.ndarray) -> np.ndarray:
    """Jaw line plus a forehead arc above the brows: the skin region of the face. (68, 2) → (K, 2)."""
    width = lm.face_width(points)
    brows = np.concatenate([points[lm.RIGHT_BROW], points[lm.LEFT_BROW]])
    forehead = brows[::-1] - np.array([0.0, 0.1 * width])
    return np.concatenate([points[lm.JAW], forehead]).astype(np.float32)


def _close_mouth(points: np.ndarray) -> np.ndarray:
    """The template with its lips closed: lower lip and chin move up by the inner-lip gap."""
    out = points.copy()
    gap = float(np.mean(points[list(lm.INNER_LOWER), 1] - points[list(lm.INNER_UPPER), 1]))
    out[[65, 66, 67, 55, 56, 57, 58, 59], 1] -= gap
    out[[6, 7, 8, 9, 10], 1] -= 0.5 * gap
    return out


def _person_mask(photo: np.ndarray) -> np.ndarray:
    """Foreground (head, hair, shoulders) of the template photo by GrabCut, holes filled. (H, W) 0..1."""
    h, w = photo.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.setRNGSeed(0)
    cv2.grabCut(
        cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
        mask,
        (4, 4, w - 8, h - 4),
        np.zeros((1, 65)),
        np.zeros((1, 65)),
        5,
        cv2.GC_INIT_WITH_RECT,
    )
    fg = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(fg)
    if contours:
        cv2.drawContours(filled, [max(contours, key=cv2.contourArea)], -1, 255, cv2.FILLED)
    return cv2.GaussianBlur(filled.astype(np.float32) / 255.0, (0, 0), 1.0)


@lru_cache(maxsize=4)
def load_template(size: int) -> FaceTemplate:
    """The astronaut template at `size` px; landmarks come from dlib on the native-resolution crop."""
    from skimage import data as skdata

    from imagineid.face.dlib_backend import DlibLandmarker

    x0, y0, x1, y1 = TEMPLATE_CROP
    photo = np.ascontiguousarray(skdata.astronaut()[y0:y1, x0:x1])  # (230, 230, 3)
    landmarker = DlibLandmarker(upsample=1)
    boxes = landmarker.detect(photo)
    if len(boxes) != 1:
        raise ImagineIDError(f"expected one face in the template photo, dlib found {len(boxes)}")
    scale = size / photo.shape[1]
    smiling = landmarker.landmarks(photo, boxes[0]) * scale  # (68, 2), lips apart, teeth showing
    person = cv2.resize(_person_mask(photo), (size, size), interpolation=cv2.INTER_LINEAR)
    image = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    points = _close_mouth(smiling)
    image, person = _closed_mouth_photo(image, person, smiling, points)

    width = float(lm.face_width(points))
    skin = _polygon_mask(size, [_face_hull(points)], blur=0.02 * width)
    chin_y = float(points[8, 1])
    above_chin = (np.arange(size, dtype=np.float32)[:, None] < chin_y - 0.1 * width).astype(np.float32)
    grown_face = cv2.dilate(skin, np.ones((3, 3), np.uint8), iterations=max(1, int(0.01 * width)))
    hair = np.clip(person * above_chin * (1.0 - grown_face), 0.0, 1.0)
    hair = cv2.GaussianBlur(hair, (0, 0), 0.015 * width)
    brow_mask = np.zeros((size, size), np.float32)
    for brow in (points[lm.RIGHT_BROW], points[lm.LEFT_BROW]):
        cv2.polylines(
            brow_mask, [np.round(brow * 4).astype(np.int32)], False, 1.0, max(1, int(0.04 * width)), cv2.LINE_AA, 2
        )
    brows = cv2.GaussianBlur(brow_mask, (0, 0), 0.02 * width)
    return FaceTemplate(image=image, landmarks=points, person=person, hair=hair, skin=skin, brows=brows)


def _closed_mouth_photo(
    image: np.ndarray, person: np.ndarray, smiling: np.ndarray, closed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The photo warped to closed lips, the squeezed teeth seam inpainted with lip colour.

    Why: warping always starts from closed lips, so a closed target never asks the thin-plate spline to
    squeeze the photo's open mouth into a line (which folds the map and shows teeth or a dark hole);
    an open target stretches the lips and the interior is painted by `_paint_mouth`.
    """
    size = image.shape[0]
    anchors = _anchors(size)
    maps = tps_backward_map(np.concatenate([closed, anchors]), np.concatenate([smiling, anchors]), (size, size))
    warped = np.clip(remap(image.astype(np.float32), maps), 0, 255).astype(np.uint8)
    width = float(lm.face_width(closed))
    seam = np.zeros((size, size), np.uint8)
    lip_line = closed[[60, 61, 62, 63, 64]]
    cv2.polylines(seam, [np.round(lip_line).astype(np.int32)], False, 255, max(2, int(round(0.03 * width))))
    filled = cv2.inpaint(warped, seam, 3, cv2.INPAINT_TELEA).astype(np.float32)
    # A soft, darker line where the lips meet, as on a real closed mouth.
    line = np.zeros((size, size), np.float32)
    cv2.polylines(line, [np.round(lip_line * 4).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, 2)
    line = cv2.GaussianBlur(line, (0, 0), 0.6)[..., None]
    filled = filled * (1 - 0.45 * line) + np.array([95, 40, 42], np.float32) * 0.45 * line
    return filled, remap(person, maps, border=cv2.BORDER_CONSTANT)


def identity_landmarks(template: FaceTemplate, f: IdentityFactors) -> np.ndarray:
    """The speaker's rest-pose landmarks (68, 2): the template's neutral face reshaped by the factors."""
    p = template.landmarks.astype(np.float64).copy()
    w = float(lm.face_width(p))
    cx = float(p[lm.NOSE_BRIDGE, 0].mean())
    # Face width: the whole jaw line scales about the nose line.
    p[lm.JAW, 0] = cx + (p[lm.JAW, 0] - cx) * (1.0 + 0.07 * f.face_width)
    # Jaw strength: the lower jaw widens (peaking at the jaw angles) and the chin lengthens.
    lower = np.array([0, 0, 0, 0.4, 0.8, 1.0, 0.8, 0.3, 0.0, 0.3, 0.8, 1.0, 0.8, 0.4, 0, 0, 0])
    p[lm.JAW, 0] += np.sign(p[lm.JAW, 0] - cx) * lower * 0.05 * w * f.jaw
    p[[7, 8, 9], 1] += 0.04 * w * f.jaw
    # Brow ridge: brows sit lower (they are also darkened in `SpeakerLook`).
    p[17:27, 1] += 0.018 * w * f.brow_ridge
    # Eye spacing: eyes (and half the brows) move apart.
    p[lm.RIGHT_EYE, 0] -= 0.025 * w * f.eye_spacing
    p[lm.LEFT_EYE, 0] += 0.025 * w * f.eye_spacing
    p[lm.RIGHT_BROW, 0] -= 0.012 * w * f.eye_spacing
    p[lm.LEFT_BROW, 0] += 0.012 * w * f.eye_spacing
    # Nose length: the nose tip and base move down.
    p[[30, 31, 32, 33, 34, 35], 1] += 0.045 * w * f.nose_length
    # Elder: jaw line sags, brows drop a little.
    p[3:14, 1] += 0.025 * w * f.elder * np.sin(np.linspace(0, np.pi, 11))
    p[17:27, 1] += 0.012 * w * f.elder
    if f.child > 0:
        # Child: smaller and rounder face, relatively larger eyes, shorter nose, shorter chin.
        centre = p[lm.NOSE_BRIDGE].mean(0)
        p = centre + (p - centre) * (1.0 - 0.12 * f.child)
        for eye in (lm.RIGHT_EYE, lm.LEFT_EYE):
            ec = p[eye].mean(0)
            p[eye] = ec + (p[eye] - ec) * (1.0 + 0.15 * f.child)
        p[[30, 31, 32, 33, 34, 35], 1] -= 0.03 * w * f.child
        p[[6, 7, 8, 9, 10], 1] -= 0.03 * w * f.child
        p[lm.JAW, 0] += np.sign(p[lm.JAW, 0] - cx) * lower * 0.03 * w * f.child
    return p.astype(np.float32)


def expression_landmarks(rest: np.ndarray, opening: float, width: float, emotion: str, intensity: float) -> np.ndarray:
    """Landmarks (68, 2) for one frame: rest pose + viseme (opening 0..1, width 0..1 with 0.5 neutral) + emotion."""
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
    p = rest.astype(np.float64).copy()
    w = float(lm.face_width(p))
    k = intensity
    # Emotion first, so the mouth opening acts on the emotional mouth.
    if emotion == "happy":
        p[[48, 60], :] += [-0.025 * w * k, -0.045 * w * k]
        p[[54, 64], :] += [0.025 * w * k, -0.045 * w * k]
        p[[49, 53], 1] -= 0.02 * w * k
        p[[40, 41, 46, 47], 1] -= 0.012 * w * k  # cheeks push the lower lids up
        p[17:27, 1] -= 0.01 * w * k
    elif emotion == "sad":
        p[[48, 60, 54, 64], 1] += 0.04 * w * k
        p[[59, 55], 1] += 0.015 * w * k
        p[[20, 21, 22, 23], 1] -= 0.045 * w * k  # inner brows rise
        p[[17, 26], 1] += 0.015 * w * k
        p[[37, 38, 43, 44], 1] += 0.008 * w * k
    elif emotion == "angry":
        p[17:27, 1] += 0.015 * w * k
        p[[20, 21, 22, 23], 1] += 0.02 * w * k  # inner brows drop and knit
        p[[20, 21], 0] += 0.02 * w * k
        p[[22, 23], 0] -= 0.02 * w * k
        p[[37, 38, 43, 44], 1] += 0.012 * w * k  # upper lids lower
        p[[48, 60], 0] += 0.015 * w * k
        p[[54, 64], 0] -= 0.015 * w * k
        p[[48, 60, 54, 64], 1] += 0.015 * w * k
    # Viseme: jaw drop moves the lower lip and chin; width spreads or rounds the lips.
    o = float(np.clip(opening, 0.0, 1.0))
    p[[65, 66, 67], 1] += 0.27 * w * o
    p[[56, 57, 58], 1] += 0.26 * w * o
    p[[55, 59], 1] += 0.19 * w * o
    p[[61, 62, 63], 1] -= 0.025 * w * o
    p[[50, 51, 52], 1] -= 0.02 * w * o
    p[[60, 64, 48, 54], 1] += 0.06 * w * o
    p[[7, 8, 9], 1] += 0.12 * w * o
    p[[5, 6, 10, 11], 1] += 0.07 * w * o
    p[[4, 12], 1] += 0.03 * w * o
    spread = (float(width) - 0.5) * 0.16 * w
    mouth_cx = float(p[lm.OUTER_LIP, 0].mean())
    mouth = list(range(48, 68))
    rel = (p[mouth, 0] - mouth_cx) / (0.5 * (p[54, 0] - p[48, 0]) + 1e-6)  # -1 .. 1 across the mouth
    p[mouth, 0] += rel * spread
    return p.astype(np.float32)


@dataclass(frozen=True)
class HeadMotion:
    """Mild head motion: a similarity transform about the nose per frame."""

    angle_deg: float
    tx: float
    ty: float
    scale: float

    def matrix(self, centre: np.ndarray) -> np.ndarray:
        """(2, 3) affine for cv2 / point transforms."""
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), self.angle_deg, self.scale)
        m[:, 2] += (self.tx, self.ty)
        return m


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine."""
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def smooth_head_motion(rng: np.random.Generator, n_frames: int, fps: float, size: int) -> list[HeadMotion]:
    """A slow random sway: sums of two sines per parameter, amplitudes a few degrees / pixels."""
    t = np.arange(n_frames) / fps

    def sway(amplitude: float) -> np.ndarray:
        f = rng.uniform(0.15, 0.6, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        a = rng.uniform(0.4, 1.0, 2) * amplitude / 2
        return a[0] * np.sin(2 * np.pi * f[0] * t + ph[0]) + a[1] * np.sin(2 * np.pi * f[1] * t + ph[1])

    angle, tx, ty, sc = sway(4.0), sway(0.012 * size), sway(0.008 * size), 1.0 + sway(0.02)
    return [HeadMotion(float(a), float(x), float(y), float(s)) for a, x, y, s in zip(angle, tx, ty, sc)]


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A studio-like backdrop (S, S, 3) float32: a tinted gradient with soft blobs and grain, no edges."""
    c0, c1 = rng.uniform(40, 230, 3), rng.uniform(40, 230, 3)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = np.clip(0.5 + (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta), 0, 1)[..., None]
    bg = c0 * (1 - ramp) + c1 * ramp
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 0.4)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        bg = bg + blob * rng.uniform(-35, 35, 3)
    grain = cv2.GaussianBlur(rng.normal(0, 6, (size, size)).astype(np.float32), (0, 0), 1.5)
    return np.clip(bg + grain[..., None], 0, 255).astype(np.float32)


@dataclass(frozen=True)
class SpeakerLook:
    """A speaker's appearance: the template recoloured (skin, hair, brows) plus rest-pose landmarks."""

    template: FaceTemplate
    image: np.ndarray  # (S, S, 3) float32
    rest: np.ndarray  # (68, 2) rest-pose landmarks of this speaker

    @classmethod
    def build(cls, template: FaceTemplate, f: IdentityFactors) -> SpeakerLook:
        img = template.image.copy()
        skin = template.skin[..., None]
        img = img * (1 - skin) + np.clip(img * np.asarray(f.skin_tone, np.float32), 0, 255) * skin
        # Hair: keep the photo's texture as luminance, replace the colour.
        lum = img.mean(axis=2, keepdims=True)
        hair_w = template.hair[..., None]
        mean_lum = float((lum * hair_w).sum() / max(hair_w.sum(), 1.0))
        recoloured = np.clip(np.asarray(f.hair_color, np.float32) * (lum / max(mean_lum, 1.0)), 0, 255)
        img = img * (1 - hair_w) + recoloured * hair_w
        # Brow ridge: heavier brows read as a darker band.
        img = img * (1 - 0.35 * max(f.brow_ridge, 0.0) * template.brows[..., None])
        return cls(template=template, image=img.astype(np.float32), rest=identity_landmarks(template, f))


def _anchors(size: int, n: int = 5) -> np.ndarray:
    """Points on the frame border: they move rigidly with the head so the body follows it."""
    s = np.linspace(0, size - 1, n)
    e = np.full(n, size - 1.0)
    z = np.zeros(n)
    pts = np.concatenate(
        [np.stack([s, z], 1), np.stack([s, e], 1), np.stack([z, s], 1)[1:-1], np.stack([e, s], 1)[1:-1]]
    )
    return pts.astype(np.float32)


def _paint_mouth(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Lips tinted red, and inside the inner lips a dark cavity with the upper front teeth.

    Teeth only under the middle of the upper lip (not a ring along the whole lip line), so the
    lip / interior edge stays where the inner-lip landmarks are and detectors can find it.
    """
    size = frame.shape[0]
    outer, inner = points[lm.OUTER_LIP], points[lm.INNER_LIP]
    lips = np.clip(_polygon_mask(size, [outer], blur=0.6) - _polygon_mask(size, [inner]), 0, 1)[..., None]
    out = frame * (1 - 0.35 * lips) + frame * np.array([1.0, 0.55, 0.6], np.float32) * 0.35 * lips
    gap = float(np.mean(points[list(lm.INNER_LOWER), 1] - points[list(lm.INNER_UPPER), 1]))
    if gap < 0.5:
        return out
    cavity = _polygon_mask(size, [inner], blur=0.4)
    w = float(lm.face_width(points))
    upper = points[[61, 62, 63]]
    upper_teeth = np.concatenate([upper, upper[::-1] + [0.0, min(0.18 * gap, 0.025 * w)]])
    teeth = np.clip(_polygon_mask(size, [upper_teeth], blur=0.5), 0, 1) * cavity
    out = out * (1 - cavity[..., None]) + np.array([45, 14, 20], np.float32) * cavity[..., None]
    return out * (1 - teeth[..., None]) + np.array([228, 222, 208], np.float32) * teeth[..., None]


def render_frame(look: SpeakerLook, landmarks: np.ndarray, motion: np.ndarray, background: np.ndarray) -> np.ndarray:
    """One RGB uint8 frame (S, S, 3) whose face has exactly `landmarks` (68, 2, output pixels).

    `landmarks` already include the head motion `motion` (2, 3), which also moves the body and hair.
    """
    t = look.template
    anchors = _anchors(t.size)
    dst = np.concatenate([landmarks, apply_affine(anchors, motion)])
    src = np.concatenate([t.landmarks, anchors])
    maps = tps_backward_map(dst, src, (t.size, t.size))
    face = remap(look.image, maps)
    person = remap(t.person, maps, border=cv2.BORDER_CONSTANT)[..., None]
    frame = face * person + background * (1 - person)
    frame = _paint_mouth(frame, landmarks)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)
