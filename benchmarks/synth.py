"""Synthetic-corpus throughput at the default size (6 speakers × 4 clips × 3 s, 256 px); prints JSON.

.venv/bin/python benchmarks/synth.py
"""

from __future__ import annotations

import json
import resource
import tempfile
from pathlib import Path

from imagineid.synth.corpus import SynthConfig, synthesize_corpus


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        summary = synthesize_corpus(Path(tmp) / "s", SynthConfig(), progress=False)
    print(
        json.dumps(
            {
                "benchmark": "synth",
                "clips": summary.n_clips,
                "frames": summary.n_frames,
                "seconds": round(summary.seconds, 2),
                "frames_per_s": round(summary.n_frames / summary.seconds, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
