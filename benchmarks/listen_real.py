"""What a trained run hears in recorded-speaker voices: Debian's flite voices (awb, rms, slt, kal).

    python benchmarks/listen_real.py [RUN]            # RUN defaults to work/demo/run (what `make demo` trains)

Prints JSON: per voice the heard gender / age / emotion (mean probabilities over its sentences), the
measured F0, the mouth opening of the conditioning mesh (the predicted coefficients, as `generate` uses
them) against the speech envelope (best r within ±2 frames), and the accuracy over the voices; plus the
cost of listening per second of audio against the mel-only path of earlier runs, measured in this run.

These voices are evaluation material only: nothing in training reads them. They need Debian's `flite`
(`apt-get install flite`); without it the benchmark says so and exits 2.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# awb: Scottish English man, rms: US English man, slt: US English woman, kal: US English man (diphone, 8 kHz)
VOICES = {"awb": ("male", "adult"), "rms": ("male", "adult"), "slt": ("female", "adult"), "kal": ("male", "adult")}
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We were away a year ago, and the summer seemed to last for ever.",
    "Open the window, because the morning air is cool and fresh today.",
)
MAX_LAG = 2  # frames: the acceptance allows the best lag within ±2 frames (±80 ms)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speak(voice: str, text: str, out: Path) -> Path:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True)
    return out


def main(run: Path) -> dict:
    import torch

    from imagineid.audio.features import SAMPLE_RATE, frame_rms, log_mel
    from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS
    from imagineid.evaluation.video_metrics import lagged_correlation
    from imagineid.generation.conditions import Planner
    from imagineid.listening import Utterance
    from imagineid.media import load_audio

    torch.set_num_threads(2)
    planner = Planner.load(run, size=64)
    listener = planner.listener
    per_voice, timing = {}, {"audio_s": 0.0, "listen_s": 0.0, "mel_only_s": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for voice, (gender, age) in VOICES.items():
            probs = {"gender": [], "age": [], "emotion": []}
            f0, mouth_r = [], []
            for i, text in enumerate(SENTENCES):
                path = speak(voice, text, Path(tmp) / f"{voice}_{i}.wav")
                # today's path: decode + log-mel + the three stages on the mel
                t0 = time.perf_counter()
                samples = load_audio(path, SAMPLE_RATE)
                mel = log_mel(samples)
                listener.hear(
                    Utterance(
                        mel[: 4 * (len(mel) // 4)],
                        np.zeros(listener.identity.config.n_voice, np.float32) if listener.uses_voice else None,
                        None,
                    )
                )
                t1 = time.perf_counter()
                samples = load_audio(path, SAMPLE_RATE)
                utt = listener.prepare(samples)
                heard = listener.hear(utt)
                t2 = time.perf_counter()
                timing["mel_only_s"] += t1 - t0
                timing["listen_s"] += t2 - t1
                timing["audio_s"] += len(samples) / SAMPLE_RATE
                for key in probs:
                    if heard[key] is not None:
                        probs[key].append(
                            [heard[key][k] for k in {"gender": GENDERS, "age": AGE_GROUPS, "emotion": EMOTIONS}[key]]
                        )
                f0.append((heard["measured"] or {}).get("f0_median_hz") or float("nan"))
                plan = planner.plan(utt)
                envelope = frame_rms(samples, plan.n_frames)
                mouth_r.append(lagged_correlation(plan.mouth_opening, envelope, MAX_LAG)[1])
            mean = {k: np.mean(v, axis=0) for k, v in probs.items() if v}
            heard_gender = GENDERS[int(np.argmax(mean["gender"]))]
            heard_age = AGE_GROUPS[int(np.argmax(mean["age"]))]
            per_voice[voice] = {
                "true_gender": gender,
                "true_age": age,
                "heard_gender": heard_gender,
                "p_gender": dict(zip(GENDERS, np.round(mean["gender"], 3).tolist())),
                "heard_age": heard_age,
                "p_age": dict(zip(AGE_GROUPS, np.round(mean["age"], 3).tolist())),
                "heard_emotion": EMOTIONS[int(np.argmax(mean["emotion"]))] if "emotion" in mean else None,
                "f0_median_hz": round(float(np.nanmedian(f0)), 1),
                "mouth_envelope_r": round(float(np.nanmean(mouth_r)), 3),
                "mouth_envelope_r_per_sentence": [round(float(r), 3) for r in mouth_r],
                "gender_correct": heard_gender == gender,
                "age_correct": heard_age == age,
            }
    n = len(per_voice)
    rs = [v["mouth_envelope_r"] for v in per_voice.values()]
    return {
        "benchmark": "listen_real",
        "run": str(run),
        "host": cpu_name(),
        "cores": 2,
        "voices": per_voice,
        "gender_correct": f"{sum(v['gender_correct'] for v in per_voice.values())} of {n}",
        "age_correct": f"{sum(v['age_correct'] for v in per_voice.values())} of {n}",
        "mouth_envelope_r_mean": round(float(np.mean(rs)), 3),
        "mouth_envelope_r_min": round(float(np.min(rs)), 3),
        "listen_s_per_audio_s": round(timing["listen_s"] / timing["audio_s"], 4),
        "mel_only_s_per_audio_s": round(timing["mel_only_s"] / timing["audio_s"], 4),
        "listen_cost_ratio": round(timing["listen_s"] / timing["mel_only_s"], 2),
    }


if __name__ == "__main__":
    if shutil.which("flite") is None:
        print(json.dumps({"benchmark": "listen_real", "skipped": "flite is not installed: apt-get install flite"}))
        sys.exit(2)
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("work/demo/run")
    if not (run_dir / "emotion" / "done.json").exists():
        print(
            json.dumps(
                {
                    "benchmark": "listen_real",
                    "skipped": f"{run_dir} has no trained emotion stage (run `make demo`, or pass a run folder)",
                }
            )
        )
        sys.exit(2)
    print(json.dumps(main(run_dir), indent=1))
