"""Augmented voices of the training clips, computed once per run: what the disentangler stages train on.

    bank = VoiceBank.build(DATA, RUN / "voice_bank", train_ids, val_ids, variants=6)
    entry = bank.get(clip_id)        # mel (V, 4T, 80) raw log-mel, voice (V, VOICE_DIM), augments [V dicts]

Variant 0 of each clip is its own audio; variants 1..V-1 of training clips are copies through a drawn
augmentation chain (pitch and vocal-tract warps, room, noise, band, codec: `imagineid.audio.augment`)
with the timing kept, so each still lines up with the clip's video frames and labels. Validation clips
get variant 0 only. Each clip is one `.npz` written atomically, so an interrupted build resumes where it
stopped, and the bank's config is checked so a rerun with other settings is refused, not mixed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from imagineid.audio.augment import IDENTITY, augment_voice
from imagineid.audio.features import SAMPLE_RATE, mel_for_frames
from imagineid.audio.voice_features import FRONT_END_VERSION, VOICE_DIM, voice_features
from imagineid.data.clips import clip_audio
from imagineid.data.parquet_io import write_json_atomic
from imagineid.data.store import Store
from imagineid.errors import ImagineIDError


@dataclass(frozen=True)
class VoiceEntry:
    mel: np.ndarray  # (V, 4T, 80) raw log-mel per variant
    voice: np.ndarray  # (V, VOICE_DIM) voice front-end vector per variant
    augments: list[dict]  # what each variant went through (variant 0: nothing)


class VoiceBank:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, clip_id: str) -> Path:
        return self.root / f"{clip_id}.npz"

    def get(self, clip_id: str) -> VoiceEntry:
        with np.load(self.path(clip_id)) as z:
            return VoiceEntry(
                z["mel"].astype(np.float32), z["voice"].astype(np.float32), json.loads(bytes(z["augments"]).decode())
            )

    def voice_stats(self, clip_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension (mean, std) of the voice vectors of `clip_ids`, every variant."""
        vectors = np.concatenate([self.get(c).voice for c in clip_ids])
        return vectors.mean(axis=0).astype(np.float32), vectors.std(axis=0).astype(np.float32)

    @classmethod
    def build(
        cls,
        data: str | Path,
        root: str | Path,
        train_ids: Sequence[str],
        val_ids: Sequence[str],
        variants: int,
        seed: int = 0,
        progress: bool = True,
    ) -> VoiceBank:
        if variants < 1:
            raise ValueError(f"variants must be >= 1, got {variants}")
        bank = cls(Path(root))
        bank.root.mkdir(parents=True, exist_ok=True)
        config = {
            "variants": variants,
            "seed": seed,
            "voice_dim": VOICE_DIM,
            "sample_rate": SAMPLE_RATE,
            "front_end": FRONT_END_VERSION,
        }
        config_path = bank.root / "config.json"
        if config_path.exists() and json.loads(config_path.read_text()) != config:
            raise ImagineIDError(f"{bank.root} holds a voice bank built with {config_path.read_text()}, not {config}")
        write_json_atomic(config_path, config)
        store = Store(Path(data))
        jobs = [(c, variants) for c in train_ids] + [(c, 1) for c in val_ids]
        todo = [(c, v) for c, v in jobs if not bank.path(c).exists()]
        for clip_id, n in tqdm(todo, desc="voice bank", unit="clip", disable=not progress or not todo):
            bank._write(clip_id, *clip_audio(store, clip_id), n, seed)
        return bank

    def _write(self, clip_id: str, samples: np.ndarray, n_frames: int, n_variants: int, seed: int) -> None:
        rng = np.random.default_rng([seed, int(clip_id[:12], 16) if _is_hex(clip_id[:12]) else len(clip_id)])
        mels, voices, augments = [], [], []
        for v in range(n_variants):
            wave, aug = (samples, IDENTITY) if v == 0 else augment_voice(samples, SAMPLE_RATE, rng, keep_timing=True)
            mels.append(mel_for_frames(wave, n_frames))  # (4T, 80)
            voices.append(voice_features(wave)[0])  # (VOICE_DIM,)
            augments.append(asdict(aug))
        tmp = self.root / f".tmp-{uuid.uuid4().hex}.npz"
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                mel=np.stack(mels).astype(np.float16),
                voice=np.stack(voices),
                augments=np.frombuffer(json.dumps(augments).encode(), np.uint8),
            )
        os.replace(tmp, self.path(clip_id))


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text.lower())
