"""Per-utterance voice measurements with Praat (praat-parselmouth): pitch, voice quality, formants.

These are the cues that carry over from synthetic to recorded speech because they are physical: F0
level separates men's from women's and children's voices, formant frequencies and their dispersion
scale with vocal-tract length (body size, age), jitter and the harmonics-to-noise ratio describe an
unsteady, aged voice. Every value is measured, never learned, so `imagineid listen --json` can report
them beside what the model heard.

    stats = voice_stats(samples)          # 16 kHz mono float samples
    stats.f0_median_hz, stats.voiced_fraction, stats.formants_hz
    stats.vector()                        # (VOICE_STATS_DIM,) float32 model input, log-scaled
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from imagineid.audio.features import SAMPLE_RATE

PITCH_FLOOR_HZ = 60.0  # first pass: wide enough for a bass voice and a child
PITCH_CEILING_HZ = 700.0
FORMANT_CEILING_HZ = 5500.0  # Praat's usual ceiling for a mixed set of adult and child voices
REFERENCE_F0_HZ = 150.0  # log-scale reference for the model inputs (between men and women)
VOICE_STATS_DIM = 12


@dataclass(frozen=True)
class VoiceStats:
    """What Praat measured on one utterance (NaN where nothing was voiced)."""

    duration_s: float  # seconds of audio measured
    voiced_fraction: float  # share of 10 ms frames with a pitch
    f0_median_hz: float
    f0_p10_hz: float
    f0_p90_hz: float
    f0_range_semitones: float  # 12·log2(p90 / p10): intonation range
    jitter: float  # local period jitter (fraction), high for unsteady (aged) voices
    hnr_db: float  # mean harmonics-to-noise ratio over voiced frames
    formants_hz: tuple[float, float, float, float]  # median F1..F4 over voiced frames
    formant_dispersion_hz: float  # mean spacing of F1..F4: shrinks with a longer vocal tract

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()} | {
            "formants_hz": [None if math.isnan(f) else round(f, 1) for f in self.formants_hz]}

    def vector(self) -> np.ndarray:
        """(VOICE_STATS_DIM,) float32: log-frequencies, range, voicing, quality; 0 where unmeasured."""
        def log2(hz: float, ref: float) -> float:
            return math.log2(hz / ref) if hz > 0 and math.isfinite(hz) else 0.0

        f = self.formants_hz
        values = [
            log2(self.f0_median_hz, REFERENCE_F0_HZ), log2(self.f0_p10_hz, REFERENCE_F0_HZ),
            log2(self.f0_p90_hz, REFERENCE_F0_HZ), self.f0_range_semitones / 12.0, self.voiced_fraction,
            math.log10(max(self.jitter, 1e-4)) + 2.0 if math.isfinite(self.jitter) else 0.0,
            self.hnr_db / 20.0 if math.isfinite(self.hnr_db) else 0.0,
            log2(f[0], 500.0), log2(f[1], 1500.0), log2(f[2], 2500.0), log2(f[3], 3500.0),
            log2(self.formant_dispersion_hz, 1000.0),
        ]
        return np.nan_to_num(np.asarray(values, np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _pitch(sound, floor: float, ceiling: float):
    return sound.to_pitch_ac(time_step=0.01, pitch_floor=floor, pitch_ceiling=ceiling)


def voice_stats(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> VoiceStats:
    """Measure one utterance. Pitch in two passes (a wide range, then one fitted to the speaker's
    quartiles, as in De Looze & Hirst) so octave errors of the first pass do not decide the level."""
    import parselmouth
    from parselmouth.praat import call

    x = np.asarray(samples, np.float64)
    sound = parselmouth.Sound(x, sampling_frequency=sample_rate)
    f0 = _pitch(sound, PITCH_FLOOR_HZ, PITCH_CEILING_HZ).selected_array["frequency"]
    voiced = f0[f0 > 0]
    if len(voiced) >= 5:
        q1, q3 = np.percentile(voiced, [25, 75])
        floor, ceiling = max(40.0, 0.75 * q1), min(1000.0, 2.5 * q3)
        pitch = _pitch(sound, floor, ceiling)
        f0 = pitch.selected_array["frequency"]
        voiced = f0[f0 > 0]
    else:
        pitch, floor, ceiling = None, PITCH_FLOOR_HZ, PITCH_CEILING_HZ
    nan = float("nan")
    if len(voiced) < 5 or pitch is None:
        return VoiceStats(len(x) / sample_rate, float(len(voiced)) / max(len(f0), 1), nan, nan, nan, nan, nan, nan,
                          (nan, nan, nan, nan), nan)
    p10, p50, p90 = (float(v) for v in np.percentile(voiced, [10, 50, 90]))
    points = call([sound, pitch], "To PointProcess (cc)")
    jitter = float(call(points, "Get jitter (local)", 0, 0, 1 / ceiling, 1 / floor, 1.3))
    harmonicity = sound.to_harmonicity_cc(time_step=0.01, minimum_pitch=floor).values[0]
    hnr = float(np.mean(harmonicity[harmonicity > -100])) if np.any(harmonicity > -100) else nan
    formant = sound.to_formant_burg(time_step=0.01, max_number_of_formants=5, maximum_formant=FORMANT_CEILING_HZ)
    times = pitch.xs()[f0 > 0]
    tracks = np.array([[formant.get_value_at_time(i, t) for t in times] for i in range(1, 5)])  # (4, V)
    medians = tuple(float(np.nanmedian(row)) if np.any(np.isfinite(row)) else nan for row in tracks)
    dispersion = (medians[3] - medians[0]) / 3.0 if all(math.isfinite(m) for m in medians) else nan
    return VoiceStats(
        duration_s=len(x) / sample_rate, voiced_fraction=float(len(voiced)) / len(f0),
        f0_median_hz=p50, f0_p10_hz=p10, f0_p90_hz=p90, f0_range_semitones=12.0 * math.log2(p90 / p10),
        jitter=jitter if math.isfinite(jitter) else nan, hnr_db=hnr, formants_hz=medians,  # type: ignore[arg-type]
        formant_dispersion_hz=dispersion,
    )
