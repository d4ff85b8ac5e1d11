"""Diffusion pipelines: `ImagineIDPipeline` (frame generation with the three adapters)."""
