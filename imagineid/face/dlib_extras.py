"""dlib's ResNet face descriptor and CNN (MMOD) face detector, for the subject policy and small faces.

Both models ship in the `face-recognition-models` wheel beside the HOG detector and shape predictor
(dlib_backend.py), so nothing is downloaded. They are far slower than HOG on a CPU, which is why
track.py calls them only on a few frames: descriptors on a few chips of tracks whose identity decides
the subject, the CNN only when HOG found nothing, within a time budget.
"""

from __future__ import annotations

import threading
import warnings
from functools import lru_cache

import numpy as np

from imagineid.face.dlib_backend import FaceBox, descriptor_model

_LOCK = threading.Lock()  # dlib model objects are not thread-safe


@lru_cache(maxsize=1)
def _cnn_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports the deprecated pkg_resources
        import dlib
        import face_recognition_models as frm

        return dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())


def face_chip(image: np.ndarray, box: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 150 × 150 aligned chip dlib's descriptor reads, from the tracker's own 68 landmarks (any
    backend's). Keeping chips instead of descriptors lets the ResNet run later, and only if needed."""
    import dlib

    x0, y0, x1, y1 = (round(float(v)) for v in box)
    shape = dlib.full_object_detection(
        dlib.rectangle(x0, y0, x1, y1), [dlib.point(round(float(x)), round(float(y))) for x, y in points]
    )
    return np.asarray(dlib.get_face_chip(np.ascontiguousarray(image), shape, 150, 0.25))


def chip_descriptor(chip: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptor of an aligned chip, (128,) float32.

    Two descriptors of one person are < 0.6 apart (dlib's threshold); along one real face track they stay
    close, while a face-like pattern that changes with folds and light need not.
    """
    with _LOCK:
        return np.asarray(descriptor_model().compute_face_descriptor(np.ascontiguousarray(chip)), np.float32)


def cnn_detect(image: np.ndarray) -> list[FaceBox]:
    """Faces found by dlib's CNN (MMOD) detector in an RGB uint8 image, best first.

    It finds faces HOG misses (turned, unevenly lit), at the same ~80 px smallest size, so callers
    upscale small frames first.
    """
    with _LOCK:
        found = _cnn_model()(np.ascontiguousarray(image), 0)
    boxes = [FaceBox(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), float(d.confidence)) for d in found]
    return sorted(boxes, key=lambda b: -b.score)
