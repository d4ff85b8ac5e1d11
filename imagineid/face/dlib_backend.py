"""dlib face detection + 68 landmarks: the offline default backend (docs/architecture.md §4).

The models ship inside the `face-recognition-models` wheel, so nothing is downloaded. dlib's HOG
detector wants faces of ~80 px or more; `upsample=1` doubles the image first for smaller faces.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class FaceBox:
    """A detection in pixel coordinates (right/bottom exclusive) with dlib's HOG score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def area(self) -> int:
        return self.width * (self.bottom - self.top)


@lru_cache(maxsize=1)
def _models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports the deprecated pkg_resources
        import dlib
        import face_recognition_models as frm

        return dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_model_location())


@lru_cache(maxsize=1)
def descriptor_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dlib
        import face_recognition_models as frm

        return dlib.face_recognition_model_v1(frm.face_recognition_model_location())


DLIB_SIZE = 256  # px: small generated frames (64 px) are upscaled to this before dlib looks at them


def upscaled(image: np.ndarray, size: int = DLIB_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3), bicubic: dlib's HOG detector misses faces much below ~80 px."""
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)


class DlibLandmarker:
    """HOG face detector and the 68-point shape predictor. Thread-safe (dlib objects are not)."""

    def __init__(self, upsample: int = 0) -> None:
        self.upsample = upsample
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image (H, W, 3), best score first."""
        detector, _ = _models()
        with self._lock:
            rects, scores, _ = detector.run(np.ascontiguousarray(image), self.upsample, 0.0)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: -b.score)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 landmarks (68, 2) float32 in pixels for one detected face."""
        import dlib

        _, predictor = _models()
        with self._lock:
            shape = predictor(np.ascontiguousarray(image), dlib.rectangle(box.left, box.top, box.right, box.bottom))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def descriptor(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """dlib's 128-d face descriptor (ResNet, ships in face-recognition-models); same person < 0.6 apart."""
        import dlib

        _, predictor = _models()
        with self._lock:
            image = np.ascontiguousarray(image)
            shape = predictor(image, dlib.rectangle(box.left, box.top, box.right, box.bottom))
            return np.asarray(descriptor_model().compute_face_descriptor(image, shape), np.float32)
