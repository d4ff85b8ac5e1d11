"""imagineid: FaceChain-ImagineID (CVPR 2024) as a batch pipeline.

Talking-face videos imagined from audio alone. The library holds all logic and imports nothing from
Prefect; `tasks/` wrap it and `flows/` compose it. See README.md and docs/architecture.md.
"""

import os as _os

# Nothing may download weights: every Hugging Face loader works offline, whoever imports the library
# (the Makefile sets the same; a user's explicit setting wins).
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    _os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
