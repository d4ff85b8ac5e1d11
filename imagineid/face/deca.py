"""DECA's coarse encoder (Feng et al. 2021): a face crop → FLAME shape, expression, pose, camera, texture, light.

    encoder = DecaEncoder.from_checkpoint("models/deca/deca_model.tar")  # weights_only=True, never downloads
    crops = deca_crops(frames, landmarks)                                # (T, 3, 224, 224) in [0, 1]
    code = encoder.encode(crops)                                         # DecaCode of numpy arrays
    code.shape (T, 100), code.expression (T, 50), code.pose (T, 6) = global + jaw axis-angle, code.cam (T, 3)

The network is DECA's `E_flame`: a ResNet-50 (bottleneck blocks 3, 4, 6, 3; global average pool → 2048)
and a regressor Linear(2048, 1024) → ReLU → Linear(1024, 236). The 236 numbers split, in DECA's order,
into shape 100, tex 50, exp 50, pose 6, cam 3, light 27 (9 SH bands × RGB).

Checkpoint layout (`deca_model.tar`, a torch.save dict): `E_flame` → its state dict (`encoder.conv1.weight`,
`encoder.layer1.0.conv1.weight`, …, `layers.0.weight`, `layers.2.weight`), next to `E_detail` and
`D_detail`, which we do not need. A flat dict with `E_flame.`-prefixed keys loads too. Block counts and
widths are read from the checkpoint, so a smaller bottleneck ResNet in the same layout loads as well
(the tests' stand-in does); the 236-d output is checked.

Input crops follow DECA's test-time recipe: a square around the 68 landmarks' box, 1.1 × its mean side
× 1.25, resized to 224, RGB in [0, 1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from imagineid.errors import MalformedWeightsError, see_docs
from imagineid.safe_loading import load_torch

SECTION = "DECA"
CHECKPOINT = "deca_model.tar"
PARAMS = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}  # DECA's order
N_PARAMS = sum(PARAMS.values())  # 236
IMAGE_SIZE = 224
CROP_SCALE = 1.25  # DECA's TestData scale
BOX_SCALE = 1.1  # DECA's bbox2point for 68-point boxes


@dataclass
class DecaCode:
    """One batch of DECA parameters (numpy, float32)."""

    shape: np.ndarray  # (B, 100) FLAME identity
    tex: np.ndarray  # (B, 50) albedo
    expression: np.ndarray  # (B, 50) FLAME expression
    pose: np.ndarray  # (B, 6) global rotation (3) + jaw (3), axis-angle
    cam: np.ndarray  # (B, 3) orthographic scale, tx, ty
    light: np.ndarray  # (B, 9, 3) spherical harmonics


def decompose(code: torch.Tensor | np.ndarray) -> DecaCode:
    """(B, 236) → DecaCode, in DECA's parameter order."""
    code = code.detach().cpu().numpy() if isinstance(code, torch.Tensor) else np.asarray(code)
    if code.ndim != 2 or code.shape[1] != N_PARAMS:
        raise ValueError(f"DECA code must be (B, {N_PARAMS}), got {code.shape}")
    parts, start = {}, 0
    for name, size in PARAMS.items():
        parts[name] = code[:, start : start + size].astype(np.float32)
        start += size
    return DecaCode(
        parts["shape"], parts["tex"], parts["exp"], parts["pose"], parts["cam"], parts["light"].reshape(-1, 9, 3)
    )


class _Bottleneck(nn.Module):
    """torchvision-style bottleneck (stride on the 3×3 conv), DECA's key names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ResNet(nn.Module):
    """DECA's ResNet feature extractor: image (B, 3, H, W) → pooled features (B, 32·width)."""

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            layer = [_Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * 4
            layer += [_Bottleneck(inplanes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.n_layers = len(blocks)
        self.out_features = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))  # DECA's AvgPool2d(7) on the 7×7 map of a 224 crop


class DecaEncoder(nn.Module):
    """DECA's E_flame: ResNet features → Linear → ReLU → Linear(236)."""

    def __init__(
        self, blocks: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, hidden: int = 1024, n_params: int = N_PARAMS
    ) -> None:
        super().__init__()
        self.encoder = _ResNet(blocks, width)
        self.layers = nn.Sequential(
            nn.Linear(self.encoder.out_features, hidden), nn.ReLU(), nn.Linear(hidden, n_params)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, 224, 224) RGB in [0, 1] → (B, 236)."""
        return self.layers(self.encoder(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor | np.ndarray, batch_size: int = 32) -> DecaCode:
        """Crops (B, 3, 224, 224) in [0, 1] → DecaCode, in batches (eval mode, no gradients)."""
        images = torch.as_tensor(images, dtype=torch.float32)
        device = next(self.parameters()).device
        codes = [self(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
        return decompose(torch.cat(codes) if codes else torch.zeros(0, N_PARAMS))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> DecaEncoder:
        """Load E_flame from DECA's deca_model.tar (or a folder holding it); see the module docstring."""
        path = Path(path).expanduser()
        file = path / CHECKPOINT if path.is_dir() else path
        checkpoint = load_torch(file, SECTION, what=f"DECA model ({CHECKPOINT})")
        state = _flame_encoder_state(checkpoint, file)
        blocks, width, hidden, n_params = _architecture(state, file)
        if n_params != N_PARAMS:
            raise MalformedWeightsError(
                f"{file}: E_flame predicts {n_params} numbers, DECA's coarse model predicts "
                f"{N_PARAMS} ({see_docs(SECTION)})"
            )
        model = cls(blocks, width, hidden, n_params)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise MalformedWeightsError(
                f"{file}: E_flame keys do not match DECA's encoder (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}) ({see_docs(SECTION)})"
            )
        return model.eval()


def _flame_encoder_state(checkpoint: object, file: Path) -> dict[str, torch.Tensor]:
    if not isinstance(checkpoint, dict):
        raise MalformedWeightsError(
            f"{file} holds a {type(checkpoint).__name__}, not DECA's dict ({see_docs(SECTION)})"
        )
    if isinstance(checkpoint.get("E_flame"), dict):
        state = dict(checkpoint["E_flame"])
    else:
        state = {k[len("E_flame.") :]: v for k, v in checkpoint.items() if k.startswith("E_flame.")}
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise MalformedWeightsError(
            f"{file} has no E_flame weights (keys: {sorted(checkpoint)[:6]}); is it DECA's deca_model.tar? "
            f"({see_docs(SECTION)})"
        )
    return state


def _architecture(state: dict[str, torch.Tensor], file: Path) -> tuple[tuple[int, ...], int, int, int]:
    """(blocks per layer, stem width, regressor hidden size, outputs) read off the tensor names and shapes."""
    try:
        width = state["encoder.conv1.weight"].shape[0]
        counts: dict[int, set[int]] = {}
        for key in state:
            if m := re.match(r"encoder\.layer(\d+)\.(\d+)\.", key):
                counts.setdefault(int(m[1]), set()).add(int(m[2]))
        blocks = tuple(len(counts[i]) for i in sorted(counts))
        hidden, n_params = state["layers.0.weight"].shape[0], state["layers.2.weight"].shape[0]
    except KeyError as err:
        raise MalformedWeightsError(f"{file}: E_flame lacks {err.args[0]} ({see_docs(SECTION)})") from err
    if not blocks or sorted(counts) != list(range(1, len(blocks) + 1)):
        raise MalformedWeightsError(f"{file}: E_flame has no encoder.layer1..N blocks ({see_docs(SECTION)})")
    return blocks, width, hidden, n_params


def crop_transform(landmarks: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """68 landmarks (68, 2) in image pixels → the 2×3 affine of DECA's square crop into `size` px."""
    left, top = landmarks.min(axis=0)
    right, bottom = landmarks.max(axis=0)
    side = (right - left + bottom - top) / 2 * BOX_SCALE * CROP_SCALE
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    scale = size / max(side, 1e-6)
    return np.array([[scale, 0, size / 2 - scale * centre[0]], [0, scale, size / 2 - scale * centre[1]]], np.float32)


def deca_crops(frames, landmarks: np.ndarray, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 frames (each (H, W, 3)) + their landmarks (T, 68, 2) → crops (T, 3, size, size) in [0, 1]
    and the crop transforms (T, 2, 3)."""
    crops, transforms = [], []
    for frame, points in zip(frames, landmarks):
        m = crop_transform(points, size)
        crops.append(cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
        transforms.append(m)
    if len(crops) != len(landmarks):
        raise ValueError(f"{len(crops)} frames for {len(landmarks)} landmark sets")
    images = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # (T, 3, size, size)
    return images, np.stack(transforms)
