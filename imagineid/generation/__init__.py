"""Audio → talking-face videos: conditions from the disentangler, a continuous-batching scheduler over
the ImagineID pipeline, and the `generate` job (DESIGN §1 autoregressive inference, §5, §6)."""
