"""The voice front end: what real voices share, as one utterance-level vector for the identity stage.

    vector, stats = voice_features(samples)   # (VOICE_DIM,) float32, VoiceStats (what Praat measured)

The vector is Resemblyzer's d-vector (a network trained on thousands of recorded speakers) followed by
Praat's pitch, voice-quality and formant measurements. Both are computed from the waveform, never from
the synthetic corpus' labels, so the same function serves training (on augmented copies of each clip),
`imagineid listen` and `imagineid generate`.
"""

from __future__ import annotations

import numpy as np

from imagineid.audio.features import SAMPLE_RATE
from imagineid.audio.speaker_encoder import EMBED_DIM, cached_speaker_encoder
from imagineid.audio.voice_stats import VOICE_STATS_DIM, VoiceStats, voice_stats

__all__ = ["DVECTOR", "FRONT_END_VERSION", "STATS", "VOICE_DIM", "VOICE_STATS_DIM", "voice_features"]

VOICE_DIM = EMBED_DIM + VOICE_STATS_DIM
FRONT_END_VERSION = 2  # bump when a measurement changes: voice banks built by another version are refused
DVECTOR = slice(0, EMBED_DIM)  # where the d-vector sits in the voice vector
STATS = slice(EMBED_DIM, VOICE_DIM)  # and the measured statistics


def voice_features(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, VoiceStats]:
    """16 kHz mono samples → ((VOICE_DIM,) float32 voice vector, the measured VoiceStats)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"the voice front end runs at {SAMPLE_RATE} Hz, got {sample_rate}")
    stats = voice_stats(samples, sample_rate)
    dvector = cached_speaker_encoder().embed_utterance(samples)  # (256,)
    return np.concatenate([dvector, stats.vector()]).astype(np.float32), stats
