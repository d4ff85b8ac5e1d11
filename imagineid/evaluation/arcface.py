"""ArcFace identity embeddings from local files: insightface's ONNX models or an arcface_torch backbone.

CSIM in talking-face papers is the cosine similarity of ArcFace embeddings, and the network must be one
of the published ones for the number to mean anything, so two official formats load:
- insightface's model-zoo ONNX (e.g. `w600k_r50.onnx` of buffalo_l), run with onnxruntime (an optional
  dependency: `pip install onnxruntime`);
- arcface_torch's `backbone.pth` (an IResNet state dict: r18 / r34 / r50 / r100, depth read from its keys).
Both take the aligned 112 × 112 RGB crop scaled to [-1, 1] ((x − 127.5) / 127.5) and give an L2-normalised
embedding (512-d for the published models).

    embedder = load_arcface("models/w600k_r50.onnx")        # or ".../backbone.pth"
    emb = embedder(crops)  # (B, 112, 112, 3) RGB uint8 → (B, 512), unit norm
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imagineid.errors import ImagineIDError, MalformedWeightsError, MissingWeightsError, see_docs
from imagineid.evaluation.weights import load_state
from imagineid.safe_loading import load_torch

SECTION = "ArcFace"
FILES = "w600k_r50.onnx (insightface) or backbone.pth (arcface_torch)"


class IBasicBlock(nn.Module):
    """arcface_torch's pre-activation block: BN → conv → BN → PReLU → conv(stride) → BN, plus the shortcut."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-05)
        self.conv1 = nn.Conv2d(cin, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """arcface_torch's IResNet (module names as in `backbones/iresnet.py`) for 112 × 112 input."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 14, 3), num_features: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        cin = 64
        for k, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            down = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
            stage = [IBasicBlock(cin, planes, 2, down)] + [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{k}", nn.Sequential(*stage))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in [-1, 1] → (B, num_features), not normalised."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        return self.features(self.fc(self.bn2(x).flatten(1)))


def iresnet_layout(state: dict) -> tuple[tuple[int, int, int, int], int]:
    """Block counts per stage and embedding size, read from a backbone.pth state dict's keys."""
    counts = [0, 0, 0, 0]
    for key in state:
        found = re.match(r"layer([1-4])\.(\d+)\.", key)
        if found:
            stage = int(found.group(1)) - 1
            counts[stage] = max(counts[stage], int(found.group(2)) + 1)
    if not all(counts) or "fc.weight" not in state:
        raise MalformedWeightsError("not an arcface_torch IResNet state dict (no layer1..4 / fc keys)")
    return tuple(counts), int(state["fc.weight"].shape[0])


def _normalised(crops: np.ndarray) -> np.ndarray:
    """(B, 112, 112, 3) RGB uint8 → (B, 3, 112, 112) float32 in [-1, 1] (insightface's blobFromImages)."""
    return ((np.asarray(crops, np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2).copy()


def _unit(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


class TorchArcFace:
    """An arcface_torch backbone.pth as an embedder."""

    kind = "arcface_torch"

    def __init__(self, path: str | Path) -> None:
        state = load_torch(path, SECTION, what=f"ArcFace weights ({FILES})")
        try:
            layers, features = iresnet_layout(state if isinstance(state, dict) else {})
        except MalformedWeightsError as err:
            raise MalformedWeightsError(f"{path} is {err} ({see_docs(SECTION)})") from err
        self.model = load_state(IResNet(layers, features), path, SECTION, "an arcface_torch IResNet", state=state)

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return _unit(self.model(torch.from_numpy(_normalised(crops))).double().numpy())


class OnnxArcFace:
    """An insightface model-zoo ONNX recognition model as an embedder (onnxruntime, CPU)."""

    kind = "arcface_onnx"

    def __init__(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"missing ArcFace ONNX model: {path} ({see_docs(SECTION)})")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImagineIDError(
                f"{path.name} needs onnxruntime, an optional dependency: pip install onnxruntime "
                f"(or pass an arcface_torch backbone.pth) ({see_docs(SECTION)})"
            ) from err
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise MalformedWeightsError(f"{path} is not a readable ONNX model: {first} ({see_docs(SECTION)})") from err
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != [112, 112]:
            raise MalformedWeightsError(
                f"{path} takes input {shape}, not (N, 3, 112, 112): not an ArcFace recognition model "
                f"({see_docs(SECTION)})"
            )
        self.input = self.session.get_inputs()[0].name
        self.scaled_inside = _normalises_inside(path)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        batch = _normalised(crops) if not self.scaled_inside else np.asarray(crops, np.float32).transpose(0, 3, 1, 2)
        out = [self.session.run(None, {self.input: batch[i : i + 1]})[0] for i in range(len(batch))]  # fixed batch 1
        return _unit(np.concatenate(out).astype(np.float64))


def _normalises_inside(path: Path) -> bool:
    """insightface's rule: node names opening the graph with both Sub/_minus and Mul/_mul (mxnet exports)
    mean the graph scales its own input (feed 0..255); otherwise the caller scales to [-1, 1].

    The `onnx` package is needed to look; without it the w600k models' convention (scale outside) is assumed.
    """
    try:
        import onnx
    except ImportError:
        return False
    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node[:8]]
    return any(n.startswith(("Sub", "_minus")) for n in names) and any(n.startswith(("Mul", "_mul")) for n in names)


def load_arcface(path: str | Path) -> TorchArcFace | OnnxArcFace:
    """An ArcFace embedder from `.onnx` (insightface) or a torch state dict (arcface_torch), by suffix."""
    return OnnxArcFace(path) if str(path).lower().endswith(".onnx") else TorchArcFace(path)
