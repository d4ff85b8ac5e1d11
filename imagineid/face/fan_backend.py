"""face-alignment FAN landmarks (docs/architecture.md §4), from local checkpoints only.

face-alignment downloads its weights through torch.hub into `$TORCH_HOME/hub/checkpoints`; we never
let it: the files must already be there, otherwise a clear error names each missing file and its source
(docs/pretrained.md § face-alignment (FAN)). Both load with `weights_only=True`: face-alignment does so
for 2D-FAN-4 itself, and S3FD is given by path (`path_to_detector`) instead of through torch.hub, whose
loader would unpickle it freely.

    landmarker = FanLandmarker()  # S3FD + 2D-FAN-4, compile=False
    boxes = landmarker.detect(rgb)  # [FaceBox], best first
    points = landmarker.landmarks(rgb, boxes[0])  # (68, 2) float32 pixels
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from imagineid.errors import (
    ImagineIDError,
    MalformedWeightsError,
    MissingWeightsError,
    see_docs,
)
from imagineid.face.dlib_backend import FaceBox

SECTION = "face-alignment (FAN)"
FAN_CHECKPOINT = "2DFAN4-11f355bf06.pth.tar"
S3FD_CHECKPOINT = "s3fd-619a316812.pth"
CHECKPOINTS = {
    FAN_CHECKPOINT: "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    S3FD_CHECKPOINT: "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


def checkpoint_dir() -> Path:
    """Where face-alignment looks: torch.hub's dir (`$TORCH_HOME/hub`, default ~/.cache/torch/hub) / checkpoints."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_checkpoints() -> Path:
    folder = checkpoint_dir()
    missing = [name for name in CHECKPOINTS if not (folder / name).is_file()]
    if missing:
        how = "; ".join(f"{name} from {CHECKPOINTS[name]}" for name in missing)
        raise MissingWeightsError(
            f"--detector fan needs face-alignment checkpoints in {folder} (set TORCH_HOME to move it); "
            f"missing: {how}; nothing is downloaded at run time ({see_docs(SECTION)})"
        )
    return folder


class FanLandmarker:
    """Same interface as `DlibLandmarker`: S3FD detection + 2D-FAN-4 landmarks, compile=False on CPU."""

    def __init__(self, device: str | None = None) -> None:
        folder = check_checkpoints()
        import face_alignment
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D,
                device=self.device,
                face_detector="sfd",
                compile=False,
                face_detector_kwargs={"path_to_detector": str(folder / S3FD_CHECKPOINT)},
            )
        except Exception as err:  # a truncated or foreign file fails inside torch.load / load_state_dict
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise MalformedWeightsError(
                f"face-alignment checkpoints in {folder} do not load ({type(err).__name__}: {first}); "
                f"replace {FAN_CHECKPOINT} / {S3FD_CHECKPOINT} ({see_docs(SECTION)})"
            ) from err
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        with self._lock:
            boxes = self._fa.face_detector.detect_from_image(image.copy()) or []
        faces = [FaceBox(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(b[4])) for b in boxes]
        return sorted(faces, key=lambda b: -b.score)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        with self._lock:
            found = self._fa.get_landmarks_from_image(
                image, detected_faces=[(box.left, box.top, box.right, box.bottom, box.score)]
            )
        if not found:
            raise ImagineIDError("FAN found no landmarks in the detected face box")
        return np.asarray(found[0][:, :2], np.float32)
