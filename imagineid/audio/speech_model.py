"""Optional self-supervised speech features (wav2vec2 / HuBERT) from a local transformers folder
(docs/architecture.md §4).

    encoder = SpeechEncoder.load("models/wav2vec2-base-960h")     # local files only, never downloads
    feats = encoder.features_for_frames(wave, n_frames=75)         # (300, 768): 100 Hz, rows 4i..4i+3 = frame i
    feats = encoder.features_for_frames(wave, 75, per_frame=True)  # (75, 768): one row per 25 fps frame

The folder is what `save_pretrained` writes for `Wav2Vec2Model`, `HubertModel` (or any transformers audio
encoder with the same call): config.json + model.safetensors (or pytorch_model.bin), and optionally
preprocessor_config.json, whose `do_normalize` says whether the wave is normalised to zero mean and unit
variance first (wav2vec2-base: yes; HuBERT: no; without the file: yes).

Alignment: the encoder's convolutional front end has stride 320 and a 400-sample receptive field at
16 kHz, so its frame i is centred on (320·i + 200) / 16000 s (50 Hz). The features are linearly
interpolated onto the log-mel grid, where row j is centred on j / 100 s (`audio.features`), with the
same row count as `mel_for_frames`; `per_frame=True` averages each video frame's rows. Long audio is
encoded in `chunk_s` pieces (attention cost is quadratic in length), each with `context_s` of extra
audio on both sides that is dropped afterwards.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from imagineid.audio.features import MEL_RATE, SAMPLE_RATE, mel_frames_per_video_frame
from imagineid.errors import MalformedWeightsError, MissingWeightsError, see_docs

SECTION = "wav2vec2 / HuBERT"
STRIDE = 320  # samples between encoder frames at 16 kHz (50 Hz)
RECEPTIVE = 400  # samples seen by one encoder frame
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class SpeechEncoder:
    """A frozen transformers speech encoder and its input normalisation."""

    def __init__(self, model: torch.nn.Module, normalize: bool = True, layer: int | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.normalize = normalize
        self.layer = layer  # hidden-state index (0 = after the feature projection); None = last layer

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def load(cls, folder: str | Path, layer: int | None = None) -> SpeechEncoder:
        """From a local folder (see the module docstring); missing / malformed files raise one-line errors."""
        from transformers import AutoConfig, AutoModel

        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise MissingWeightsError(f"missing speech model config: {folder / 'config.json'} ({see_docs(SECTION)})")
        if not any((folder / name).is_file() for name in _WEIGHTS):
            raise MissingWeightsError(
                f"missing speech model weights: {folder}/{' or '.join(_WEIGHTS)} ({see_docs(SECTION)})"
            )
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            model = AutoModel.from_pretrained(
                folder, local_files_only=True, use_safetensors=None, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise MalformedWeightsError(
                f"{folder} does not load as a speech model: {first} ({see_docs(SECTION)})"
            ) from err
        if getattr(config, "conv_stride", None) is None or int(np.prod(config.conv_stride)) != STRIDE:
            raise MalformedWeightsError(
                f"{folder} holds a {config.model_type} model, not a wav2vec2-style speech encoder with a 320-sample "
                f"stride ({see_docs(SECTION)})"
            )
        normalize = True
        if (folder / "preprocessor_config.json").is_file():
            from transformers import AutoFeatureExtractor

            normalize = bool(
                getattr(AutoFeatureExtractor.from_pretrained(folder, local_files_only=True), "do_normalize", True)
            )
        return cls(model, normalize, layer)

    @torch.no_grad()
    def encode(self, samples: np.ndarray, chunk_s: float = 20.0, context_s: float = 1.0) -> np.ndarray:
        """16 kHz mono samples → encoder frames (N, D) float32 at 50 Hz, frame i centred on (320 i + 200) / 16000 s."""
        x = np.asarray(samples, np.float64).reshape(-1)
        if self.normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        n_frames = max(0, (len(x) - RECEPTIVE) // STRIDE + 1)
        chunk, context = int(chunk_s * 50), int(context_s * 50)  # in encoder frames
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, n_frames, chunk):
            lo, hi = max(0, start - context), min(n_frames, start + chunk + context)
            piece = torch.as_tensor(x[lo * STRIDE : (hi - 1) * STRIDE + RECEPTIVE], dtype=torch.float32)[None]
            result = self.model(piece.to(device), output_hidden_states=self.layer is not None)
            hidden = result.last_hidden_state if self.layer is None else result.hidden_states[self.layer]
            out.append(hidden[0, start - lo : start - lo + min(chunk, n_frames - start)].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def features_for_frames(
        self, samples: np.ndarray, n_frames: int, fps: float = 25.0, per_frame: bool = False
    ) -> np.ndarray:
        """Features on the log-mel grid of `mel_for_frames`: (k·n_frames, D), k = 100 / fps; with
        `per_frame`, each video frame's k rows averaged: (n_frames, D)."""
        k = mel_frames_per_video_frame(fps)
        rows = align(self.encode(samples), k * int(n_frames))
        return rows.reshape(int(n_frames), k, -1).mean(axis=1) if per_frame else rows


def align(frames: np.ndarray, n_rows: int) -> np.ndarray:
    """Encoder frames (N, D) at 50 Hz → (n_rows, D) at 100 Hz by linear interpolation in time (held at the ends)."""
    if len(frames) == 0:
        raise ValueError("no encoder frames: the audio is shorter than one 25 ms window")
    source = (np.arange(len(frames)) * STRIDE + RECEPTIVE / 2) / SAMPLE_RATE  # (N,) seconds
    target = np.arange(n_rows) / MEL_RATE  # (n_rows,) seconds
    columns = [np.interp(target, source, frames[:, d]) for d in range(frames.shape[1])]
    return np.stack(columns, axis=1).astype(np.float32)


@lru_cache(maxsize=2)
def cached_encoder(folder: str) -> SpeechEncoder:
    """One encoder per folder per process (preprocess workers reuse it across clips)."""
    return SpeechEncoder.load(folder)
