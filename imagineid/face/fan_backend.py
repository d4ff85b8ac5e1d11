"""face-alignment FAN landmarks (DESIGN §4), from local checkpoints only.

face-alignment downloads its weights through torch.hub into `$TORCH_HOME/hub/checkpoints`; we never
let it: the files must already be there, otherwise a clear error names each missing file and its source.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from imagineid.errors import ImagineIDError
from imagineid.face.dlib_backend import FaceBox

CHECKPOINTS = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


class MissingWeightsError(ImagineIDError):
    kind = "missing_weights"


def checkpoint_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    return Path(torch_home) / "hub" / "checkpoints"


def check_checkpoints() -> Path:
    folder = checkpoint_dir()
    missing = [name for name in CHECKPOINTS if not (folder / name).exists()]
    if missing:
        how = "; ".join(f"{name} from {CHECKPOINTS[name]}" for name in missing)
        raise MissingWeightsError(
            f"--detector fan needs face-alignment checkpoints in {folder} (set TORCH_HOME to move it); "
            f"missing: {how}. Nothing is downloaded at run time: fetch them once and copy them there."
        )
    return folder


class FanLandmarker:
    """Same interface as `DlibLandmarker`: S3FD detection + 2D-FAN-4 landmarks, compile=False on CPU."""

    def __init__(self, device: str | None = None) -> None:
        check_checkpoints()
        import face_alignment
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=self.device, face_detector="sfd", compile=False
        )
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        with self._lock:
            boxes = self._fa.face_detector.detect_from_image(image.copy()) or []
        faces = [FaceBox(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(b[4])) for b in boxes]
        return sorted(faces, key=lambda b: -b.score)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        with self._lock:
            found = self._fa.get_landmarks_from_image(image, detected_faces=[(box.left, box.top, box.right, box.bottom, box.score)])
        if not found:
            raise ImagineIDError("FAN found no landmarks in the detected face box")
        return np.asarray(found[0][:, :2], np.float32)
