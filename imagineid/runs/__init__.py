"""RUN/: a training run's folder (docs/architecture.md), written by training and read by listening and
generation. `folder` knows its layout (stage folders, done markers, checkpoints, the metrics log);
`assets` the morphable model and face pose a run carries so it works without its dataset."""

from imagineid.runs.folder import RunDir

__all__ = ["RunDir"]
