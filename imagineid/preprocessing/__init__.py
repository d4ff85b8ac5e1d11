"""Videos → landmarks, morphable-model coefficients, masks, crops and audio features (docs/architecture.md §3).

    from imagineid.preprocessing import PreprocessConfig, preprocess
    summary = preprocess(["work/s/videos"], "work/d", PreprocessConfig())

Three passes: `extract` (per clip, in parallel: decode, track, align, crop, log-mel → staging),
`fit` (the morphable model over the staged landmarks, or the dataset's existing one),
`finalize` (per clip: project, masks, Parquet shards; the clips/ shard is written last).
"""

from imagineid.preprocessing.config import PreprocessConfig
from imagineid.preprocessing.run import PreprocessSummary, preprocess

__all__ = ["PreprocessConfig", "PreprocessSummary", "preprocess"]
