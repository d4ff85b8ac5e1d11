"""Audio → talking-face videos: conditions from the disentangler, a continuous-batching scheduler over
the ImagineID pipeline, and the `generate` job (docs/architecture.md §1 autoregressive inference, §5, §6)."""
