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
from scipy.signal import resample_poly

from imagineid.audio.features import SAMPLE_RATE

PITCH_FLOOR_HZ = 75.0  # Praat's standard floor: a bass voice; lower floors need longer (slower) windows
PITCH_CEILING_HZ = 700.0
FORMANT_CEILING_HZ = 5500.0  # Praat's usual ceiling for a mixed set of adult and child voices
REFERENCE_F0_HZ = 150.0  # log-scale reference for the model inputs (between men and women)
VOICE_STATS_DIM = 12
# Which measurements mean the same on any recording (indices into VoiceStats.vector()). F0 level is set
# by the larynx and separates adult men from women on every recording; formants follow vocal-tract size
# (a child's is short) but their measurement also follows the channel, so they inform age, not gender,
# and only F1-F3: F4 (and the dispersion built on it) lies above a telephone or 8 kHz recording's band.
# Intonation range, voiced fraction, jitter and HNR also follow the synthesiser, the channel and the
# codec: inputs for the identity embedding only.
F0_STATS = (0, 1, 2)  # median, 10th and 90th percentile of log F0
PHYSICAL_STATS = (0, 1, 2, 7, 8, 9)  # F0 level plus F1-F3


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
            "formants_hz": [None if math.isnan(f) else round(f, 1) for f in self.formants_hz]
        }

    def vector(self) -> np.ndarray:
        """(VOICE_STATS_DIM,) float32: log-frequencies, range, voicing, quality; 0 where unmeasured."""

        def log2(hz: float, ref: float) -> float:
            return math.log2(hz / ref) if hz > 0 and math.isfinite(hz) else 0.0

        f = self.formants_hz
        values = [
            log2(self.f0_median_hz, REFERENCE_F0_HZ),
            log2(self.f0_p10_hz, REFERENCE_F0_HZ),
            log2(self.f0_p90_hz, REFERENCE_F0_HZ),
            self.f0_range_semitones / 12.0,
            self.voiced_fraction,
            math.log10(max(self.jitter, 1e-4)) + 2.0 if math.isfinite(self.jitter) else 0.0,
            self.hnr_db / 20.0 if math.isfinite(self.hnr_db) else 0.0,
            log2(f[0], 500.0),
            log2(f[1], 1500.0),
            log2(f[2], 2500.0),
            log2(f[3], 3500.0),
            log2(self.formant_dispersion_hz, 1000.0),
        ]
        return np.nan_to_num(np.asarray(values, np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def voice_stats(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> VoiceStats:
    """Measure one utterance. One autocorrelation pitch pass over a range wide enough for a bass voice
    and a child; frames more than an octave from the median are dropped as octave errors before the
    statistics. The harmonics-to-noise ratio comes from the same pass (the autocorrelation peak r:
    HNR = 10·log10(r / (1 - r)), Praat's own definition), so voice quality costs no second analysis."""
    import parselmouth
    from parselmouth.praat import call

    x = np.asarray(samples, np.float64)
    sound = parselmouth.Sound(x, sampling_frequency=sample_rate)
    pitch = sound.to_pitch_ac(time_step=0.01, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    frames = pitch.selected_array
    f0, strength = frames["frequency"], frames["strength"]
    voiced = f0 > 0
    if voiced.sum() >= 5:
        median = float(np.median(f0[voiced]))
        voiced &= (f0 > median / 2) & (f0 < median * 2)
    nan = float("nan")
    duration, fraction = len(x) / sample_rate, float(voiced.sum()) / max(len(f0), 1)
    if voiced.sum() < 5:
        return VoiceStats(duration, fraction, nan, nan, nan, nan, nan, nan, (nan, nan, nan, nan), nan)
    p10, p50, p90 = (float(v) for v in np.percentile(f0[voiced], [10, 50, 90]))
    points = call([sound, pitch], "To PointProcess (cc)")
    jitter = float(call(points, "Get jitter (local)", 0, 0, 1 / PITCH_CEILING_HZ, 1 / PITCH_FLOOR_HZ, 1.3))
    r = np.clip(strength[voiced], 1e-4, 1 - 1e-4)
    hnr = float(np.mean(10 * np.log10(r / (1 - r))))
    # Burg's method runs at twice the ceiling; resampling here (polyphase) is cheaper than Praat's own
    rate = int(2 * FORMANT_CEILING_HZ)
    g = math.gcd(rate, sample_rate)
    low = parselmouth.Sound(resample_poly(x, rate // g, sample_rate // g), sampling_frequency=rate)
    formant = low.to_formant_burg(time_step=0.02, max_number_of_formants=5, maximum_formant=FORMANT_CEILING_HZ)
    times = pitch.xs()[voiced][::2]  # every other voiced 10 ms frame: the formant grid is 20 ms
    tracks = np.array([[formant.get_value_at_time(i, t) for t in times] for i in range(1, 5)])  # (4, V)
    medians = tuple(float(np.nanmedian(row)) if np.any(np.isfinite(row)) else nan for row in tracks)
    dispersion = (medians[3] - medians[0]) / 3.0 if all(math.isfinite(m) for m in medians) else nan
    return VoiceStats(
        duration_s=duration,
        voiced_fraction=fraction,
        f0_median_hz=p50,
        f0_p10_hz=p10,
        f0_p90_hz=p90,
        f0_range_semitones=12.0 * math.log2(p90 / p10),
        jitter=jitter if math.isfinite(jitter) else nan,
        hnr_db=hnr,
        formants_hz=medians,  # type: ignore[arg-type]
        formant_dispersion_hz=dispersion,
    )
