"""Visemes: eSpeak's phonemes → mouth (opening, width) per video frame, gated by loudness, so the
synthetic face's mouth moves with its speech."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from imagineid.audio.features import frame_rms
from imagineid.synth.speech import Phoneme, clean_phoneme_name

# --------------------------------------------------------------------------------------------------
# Visemes: phoneme → mouth (opening, width)
# --------------------------------------------------------------------------------------------------

_CLOSED = (0.0, 0.5)

# (opening 0..1, width 0..1 with 0.5 neutral, > 0.5 spread lips, < 0.5 rounded/protruded lips),
# keyed by eSpeak en-us phoneme mnemonics. Diphthongs use their first, more visible target.
VISEMES: dict[str, tuple[float, float]] = {
    # pauses
    "_": _CLOSED, "_:": _CLOSED, "_!": _CLOSED, "_|": _CLOSED, "||": _CLOSED, "_^_": _CLOSED,
    # bilabials: lips shut
    "p": _CLOSED, "b": _CLOSED, "m": _CLOSED,
    # labiodentals: lower lip under the teeth
    "f": (0.10, 0.50), "v": (0.10, 0.50),
    # dentals, alveolars
    "T": (0.22, 0.55), "D": (0.22, 0.55),
    "t": (0.18, 0.55), "d": (0.18, 0.55), "n": (0.18, 0.55), "l": (0.25, 0.52),
    "t#": (0.20, 0.52), "d#": (0.20, 0.52), "?": (0.15, 0.50),
    "s": (0.12, 0.65), "z": (0.12, 0.65),
    # post-alveolars: protruded, slightly rounded
    "S": (0.20, 0.30), "Z": (0.20, 0.30), "tS": (0.18, 0.30), "dZ": (0.18, 0.30),
    "r": (0.22, 0.35), "r-": (0.22, 0.35), "3": (0.35, 0.38),
    # velars, glottal
    "k": (0.28, 0.50), "g": (0.28, 0.50), "N": (0.25, 0.50), "x": (0.28, 0.50), "h": (0.40, 0.50),
    # glides
    "w": (0.12, 0.12), "j": (0.22, 0.70), "W": (0.12, 0.12), ";": (0.25, 0.68),  # ';' = i-glide
    # syllabic consonants
    "n-": (0.18, 0.55), "l-": (0.25, 0.52), "m-": _CLOSED, "@L": (0.30, 0.52),
    # open vowels
    "a": (0.90, 0.62), "aa": (0.95, 0.55), "A:": (1.00, 0.50), "A": (0.95, 0.50), "0": (0.85, 0.42),
    "A@": (0.80, 0.45), "a#": (0.65, 0.52), "V": (0.68, 0.50),
    # diphthongs
    "aI": (0.85, 0.62), "aU": (0.85, 0.40), "aI@": (0.85, 0.62), "aU@": (0.85, 0.40),
    "eI": (0.50, 0.70), "OI": (0.65, 0.30), "oU": (0.55, 0.20), "e@": (0.55, 0.65),
    "i@": (0.40, 0.70), "i@3": (0.40, 0.70), "U@": (0.40, 0.30), "O@": (0.70, 0.32),
    # mid vowels
    "E": (0.60, 0.65), "e": (0.50, 0.68), "@": (0.45, 0.50), "@2": (0.40, 0.50), "@5": (0.40, 0.50),
    "3:": (0.45, 0.42), "O:": (0.75, 0.28), "O": (0.72, 0.30), "O2": (0.72, 0.30), "o": (0.55, 0.22),
    "o@": (0.60, 0.28),
    # close vowels
    "i:": (0.30, 0.85), "i": (0.30, 0.80), "I": (0.35, 0.75), "I2": (0.35, 0.72), "I#": (0.35, 0.70),
    "u:": (0.30, 0.15), "U": (0.35, 0.30), "u": (0.30, 0.18),
}  # fmt: skip

_VOWELISH = set("aeiouAEIOUV03@")
_DEFAULT_VOWEL = (0.55, 0.50)
_DEFAULT_CONSONANT = (0.22, 0.50)


def viseme_for(name: str) -> tuple[float, float]:
    """(opening, width) for an eSpeak phoneme; unknown names fall back on vowel vs consonant."""
    name = clean_phoneme_name(name)
    if name in VISEMES:
        return VISEMES[name]
    if name.startswith("_"):
        return _CLOSED
    base = name.rstrip("#:;0123456789")  # variants such as 'I2', 'a#', 'O2'
    if base in VISEMES:
        return VISEMES[base]
    return _DEFAULT_VOWEL if name[:1] in _VOWELISH else _DEFAULT_CONSONANT


def viseme_track(
    phonemes: list[Phoneme],
    n_frames: int,
    fps: float = 25.0,
    samples: np.ndarray | None = None,
    sample_rate: int = 16000,
    coarticulation_s: float = 0.03,
) -> np.ndarray:
    """Mouth (opening, width) per video frame, (n_frames, 2) float32.

    Phoneme targets are laid on a 5 ms grid and blurred by a Gaussian (`coarticulation_s`), since
    lips move toward the next sound before it starts; each frame averages its own 1/fps window. With
    `samples`, opening is scaled by the frame's loudness, so the mouth shuts in silence and opens
    wider on stressed, louder syllables.
    """
    if n_frames <= 0:
        return np.zeros((0, 2), np.float32)
    step = min(0.005, 0.5 / fps)  # at least two grid points per frame
    total_s = n_frames / fps
    grid_t = (np.arange(int(np.ceil(total_s / step))) + 0.5) * step
    target = np.tile(np.asarray(_CLOSED, np.float64), (len(grid_t), 1))  # (G, 2), rest = closed
    for p in phonemes:
        sel = (grid_t >= p.start_s) & (grid_t < p.end_s)
        target[sel] = viseme_for(p.name)
    smooth = gaussian_filter1d(target, sigma=coarticulation_s / step, axis=0, mode="nearest")

    frame_of = np.minimum((grid_t * fps).astype(int), n_frames - 1)  # (G,)
    counts = np.maximum(np.bincount(frame_of, minlength=n_frames), 1)
    track = np.stack([np.bincount(frame_of, smooth[:, k], minlength=n_frames) / counts for k in range(2)], 1)

    if samples is not None:
        track[:, 0] *= _loudness_gate(frame_rms(samples, n_frames, fps, sample_rate))
    return track.astype(np.float32)


# Frame RMS at which the mouth opens fully: eSpeak at volume 100 peaks at ~0.17 (neutral), angry
# voices at ~0.33. Loud clips are normalised to their own peak; quieter ones (sad, soft voices) keep
# smaller openings, so opening also tracks loudness across clips, not only within one.
_FULL_OPEN_RMS = 0.25
_LOUDNESS_EXPONENT = 0.7  # < 1: soft syllables still open the mouth visibly


def _loudness_gate(rms: np.ndarray) -> np.ndarray:
    """0..1 per frame from frame RMS; exactly 0 below -40 dB of the reference (silence)."""
    ref = max(float(np.percentile(rms, 95)), _FULL_OPEN_RMS)
    gate = np.clip(rms / ref, 0.0, 1.0) ** _LOUDNESS_EXPONENT
    gate[rms < 0.01 * ref] = 0.0
    return gate
