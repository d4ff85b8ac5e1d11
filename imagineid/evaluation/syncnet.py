"""SyncNet (Chung & Zisserman 2016) as syncnet_python defines it, loading its `syncnet_v2.model`.

LSE-C / LSE-D (Wav2Lip's evaluation, used by most talking-face papers since) are SyncNet distances, so
the numbers are only comparable with this exact network: the module names and layer indices are
syncnet_python's `SyncNetModel.S` (netcnnaud / netfcaud / netcnnlip / netfclip), and the file is the
state dict its `loadParameters` reads.

    net = load_syncnet("models/syncnet_v2.model")
    net.forward_lip(video)  # (B, 3, 5, 224, 224) BGR 0..255 → (B, 1024)
    net.forward_aud(mfcc)   # (B, 1, 13, 20) → (B, 1024)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imagineid.evaluation.weights import load_state

SECTION = "SyncNet"
FILE = "syncnet_v2.model"
EMBEDDING = 1024


def _conv2d(cin: int, cout: int, **kwargs) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, **kwargs), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv3d(cin: int, cout: int, **kwargs) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, **kwargs), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _head(out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out))


class SyncNet(nn.Module):
    """syncnet_python's `S`: the Sequential indices are those of the official state dict."""

    def __init__(self, embedding: int = EMBEDDING) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=1, stride=1),
            *_conv2d(64, 192, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            *_conv2d(192, 384, kernel_size=3, padding=1),
            *_conv2d(384, 256, kernel_size=3, padding=1),
            *_conv2d(256, 256, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv2d(256, 512, kernel_size=(5, 4)),
        )
        self.netfcaud = _head(embedding)
        self.netfclip = _head(embedding)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(256, 512, kernel_size=(1, 6, 6)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows (0.2 s) → (B, E)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))  # (B, 512) in between

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) five-frame face crops, BGR 0..255 → (B, E)."""
        return self.netfclip(self.netcnnlip(video).flatten(1))  # (B, 512) in between


def load_syncnet(path: str | Path) -> SyncNet:
    """syncnet_python's `syncnet_v2.model` (a state dict; weights_only=True) → SyncNet in eval mode."""
    return load_state(SyncNet(), path, SECTION, f"syncnet_python's SyncNet state dict ({FILE})")
