"""A pretrained speaker encoder: Resemblyzer's GE2E d-vector network, run here from its state dict.

The identity stage is trained on a few synthetic speakers; a d-vector network trained on thousands of
recorded speakers gives it a representation in which real voices and synthetic ones share the axes
that matter (vocal-tract size, pitch register, voice quality). The weights ship inside the
`resemblyzer` wheel (`resemblyzer/pretrained.pt`); only that file is used, loaded with
`weights_only=True`, so the package's own audio extras (librosa, webrtcvad) are not needed: the 40-bin
power mel and the silence trimming are reimplemented here with the same conventions.

    encoder = SpeakerEncoder.from_file()            # RESEMBLYZER_WEIGHTS, or the wheel's pretrained.pt
    vector = encoder.embed_utterance(samples)       # (256,) float32, L2-normalised, 16 kHz mono input
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from imagineid.audio.features import (
    SAMPLE_RATE,
    SpeakerEncoderUnavailableError,
    mel_filterbank,
)

N_CHANNELS = 40  # mel bins of the network's input
WINDOW = 400  # 25 ms at 16 kHz (also the FFT size)
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIAL_RATE = 0.625  # partials per second: back to back (Resemblyzer's minimum; its default 1.3 overlaps them)
MAX_PARTIALS = 8  # ~13 s of speech: enough for a voice; longer audio costs no more
MIN_COVERAGE = 0.75  # a last partial shorter than this fraction is dropped (unless it is the only one)
TARGET_DBFS = -30.0  # quiet audio is raised to this RMS before embedding (never lowered)
EMBED_DIM = 256
WEIGHTS_ENV = "RESEMBLYZER_WEIGHTS"


def default_weights() -> Path:
    """`$RESEMBLYZER_WEIGHTS`, else `pretrained.pt` inside the installed resemblyzer package (not imported)."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerEncoderUnavailableError(
            "the speaker encoder's weights ship in the resemblyzer wheel, which is not installed: "
            f"`pip install --no-deps resemblyzer` (or point {WEIGHTS_ENV} at a pretrained.pt); see docs/pretrained.md"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"


def power_mel(samples: np.ndarray) -> np.ndarray:
    """(1 + N // 160, 40) float32 power mel: periodic Hann of 400, centred zero-padded frames, Slaney mel."""
    x = np.asarray(samples, np.float64)
    window = np.hanning(WINDOW + 1)[:-1]
    frames = sliding_window_view(np.pad(x, WINDOW // 2), WINDOW)[::HOP]  # (T, 400), a view
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, 201)
    return (power @ mel_filterbank(N_CHANNELS, SAMPLE_RATE, WINDOW).T).astype(np.float32)  # (T, 40)


def trim_long_silences(
    samples: np.ndarray, frame_ms: int = 30, max_silent_frames: int = 6, threshold_db: float = 40.0
) -> np.ndarray:
    """Drop silent stretches longer than `max_silent_frames` frames: pauses would otherwise dilute the
    partial embeddings. A frame is speech when its energy is within `threshold_db` of the loudest frame,
    smoothed over a few frames like a VAD; shorter pauses stay (they are part of the speaker's rhythm)."""
    x = np.asarray(samples, np.float32)
    n = SAMPLE_RATE * frame_ms // 1000
    count = len(x) // n
    if count < 3:
        return x
    energy = 10 * np.log10(np.mean(x[: count * n].reshape(count, n) ** 2, axis=1) + 1e-12)  # (F,)
    speech = np.convolve(energy > energy.max() - threshold_db, np.ones(5) / 5, mode="same") > 0.1
    # dilate speech by the allowed silence so only long pauses are removed
    keep = np.convolve(speech, np.ones(2 * max_silent_frames + 1), mode="same") > 0
    if not keep.any():
        return x
    return x[: count * n].reshape(count, n)[keep].reshape(-1)


def _raise_level(samples: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0:
        return samples
    change = TARGET_DBFS - 20 * np.log10(rms)
    return samples * (10 ** (change / 20)) if change > 0 else samples


def partial_starts(n_frames: int) -> list[int]:
    """Start frames of the 1.6 s partials that cover an utterance of `n_frames` mel frames."""
    step = int(round(SAMPLE_RATE / PARTIAL_RATE / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_frames - starts[-1]) / PARTIAL_FRAMES
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts


class SpeakerEncoder(nn.Module):
    """3-layer LSTM over 40-bin power mel → linear → ReLU → L2 norm, per 1.6 s partial (GE2E)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_CHANNELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, EMBED_DIM)

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> SpeakerEncoder:
        """Load Resemblyzer's checkpoint (`{"model_state": state_dict, ...}`) without executing pickled code."""
        path = Path(path) if path is not None else default_weights()
        if not path.is_file():
            raise SpeakerEncoderUnavailableError(f"speaker encoder weights not found: {path} (see docs/pretrained.md)")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            state = checkpoint.get("model_state", checkpoint)
            model = cls()
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        except Exception as err:  # a truncated or foreign file: say which one
            raise SpeakerEncoderUnavailableError(
                f"{path} is not a Resemblyzer speaker encoder checkpoint: {err}"
            ) from err
        return model.eval()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels (B, 160, 40) power mel → (B, 256) unit-norm partial embeddings."""
        _, (hidden, _) = self.lstm(mels)  # hidden (3, B, 256)
        raw = torch.relu(self.linear(hidden[-1]))  # (B, 256)
        return raw / raw.norm(dim=1, keepdim=True).clamp(min=1e-8)

    @torch.no_grad()
    def embed_utterance(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz mono float samples → (256,) float32 unit-norm d-vector (mean of the partials')."""
        wav = trim_long_silences(_raise_level(np.asarray(samples, np.float32)))
        n_frames = len(wav) // HOP + 1
        starts = partial_starts(n_frames)
        if len(starts) > MAX_PARTIALS:  # evenly spread over the utterance
            starts = [starts[i] for i in np.linspace(0, len(starts) - 1, MAX_PARTIALS).round().astype(int)]
        need = (starts[-1] + PARTIAL_FRAMES) * HOP
        mel = power_mel(np.pad(wav, (0, max(0, need - len(wav)))))  # (T', 40)
        batch = np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])  # (P, 160, 40)
        device = next(self.parameters()).device
        partials = self(torch.from_numpy(batch).to(device)).cpu().numpy()  # (P, 256)
        mean = partials.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)


@functools.lru_cache(maxsize=2)
def cached_speaker_encoder(path: str | None = None) -> SpeakerEncoder:
    """One loaded encoder per process (weights file path or the default)."""
    return SpeakerEncoder.from_file(path)
