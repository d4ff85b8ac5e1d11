"""M-LMD / F-LMD: mouth and whole-face landmark distance between generated and ground-truth frames.

As the field reports them (Chen et al. 2019 onward): the mean Euclidean distance between corresponding
68-point landmarks of frame t of the generated video and frame t of the ground truth, in pixels of one
common frame size (both videos are measured at `DLIB_SIZE` px here), with no alignment, so pose and
placement errors count. M-LMD uses the 20 mouth points (48-67), F-LMD all 68. Frames where either side
has no face are left out; the count of frames compared is reported beside the distances.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imagineid.face import landmarks68 as lm

MOUTH = slice(lm.OUTER_LIP.start, lm.INNER_LIP.stop)  # points 48..67


def landmark_distances(
    generated: Sequence[np.ndarray | None], truth: Sequence[np.ndarray | None]
) -> dict[str, float | int]:
    """{"m_lmd", "f_lmd", "lmd_frames"} over the frame pairs (t, t) where both have 68 landmarks."""
    pairs = [(g, t) for g, t in zip(generated, truth) if g is not None and t is not None]
    if not pairs:
        return {"m_lmd": float("nan"), "f_lmd": float("nan"), "lmd_frames": 0}
    g, t = (np.stack(x).astype(np.float64) for x in zip(*pairs))  # (K, 68, 2) each
    dist = np.linalg.norm(g - t, axis=-1)  # (K, 68)
    return {"m_lmd": float(dist[:, MOUTH].mean()), "f_lmd": float(dist.mean()), "lmd_frames": len(pairs)}
