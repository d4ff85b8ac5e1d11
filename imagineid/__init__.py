"""imagineid: FaceChain-ImagineID (CVPR 2024) as a batch pipeline.

Talking-face videos imagined from audio alone. The library holds all logic and imports nothing from
Prefect; `tasks/` wrap it and `flows/` compose it. See README.md and docs/architecture.md.
"""

__version__ = "0.1.0"
