"""Turn a failed (or suspicious) ffmpeg run into the right typed error.

ffmpeg reports every problem as text on stderr; the same words ("moov atom not found", "Invalid data
found") mean *not media at all* for a text file and *cut short* for a real mp4. We tell them apart by
looking at the file itself (does it start like an MP4?), not by trusting the words alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from imagineid.media.errors import MediaError, TruncatedMediaError, UnreadableMediaError
from imagineid.media.isobmff import check_boxes

# stderr fragments that mean the data stops or breaks partway through a real media file
_TRUNCATION_MARKERS = (
    "partial file",
    "moov atom not found",
    "end of file",
    "error submitting packet to decoder",
    "error while decoding",
    "invalid nal unit size",
    "truncat",
    "corrupt",
    "packet too small",
    "input buffer exhausted",
    "invalid data found",
)
_CONTEXT = re.compile(r"^(\[[^\]]*\]\s*)+")


def check_readable(path: str | os.PathLike[str]) -> None:
    """Fail fast, before ffmpeg, on what the file system already knows (missing, a folder, no permission)."""
    p = Path(path)
    if not p.exists():
        raise UnreadableMediaError(p, "file not found")
    if p.is_dir():
        raise UnreadableMediaError(p, "it is a directory")
    if not os.access(p, os.R_OK):
        raise UnreadableMediaError(p, "permission denied")
    if p.stat().st_size == 0:
        raise UnreadableMediaError(p, "the file is empty")


def check_container(path: str | os.PathLike[str]) -> int | None:
    """Raise TruncatedMediaError for a cut-short MP4/MOV; return its exact video sample count if known."""
    boxes = check_boxes(path)
    if boxes.problem is not None:
        raise TruncatedMediaError(path, boxes.problem)
    return boxes.video_samples


def last_error_line(stderr: str) -> str:
    """The most telling ffmpeg line: the last non-empty one that is not a progress line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith("frame=")]
    if not lines:
        return "no message from ffmpeg"
    return _CONTEXT.sub("", lines[-1])[:300]  # drop '[dec:h264 @ 0x55d...]' prefixes: noise, and unstable


def has_decode_errors(stderr: str) -> bool:
    """True when stderr says the data broke partway (ffmpeg may still exit 0 for a half file)."""
    low = stderr.lower()
    return any(marker in low for marker in _TRUNCATION_MARKERS)


def classify(path: str | os.PathLike[str], stderr: str) -> MediaError:
    """Map one ffmpeg failure on `path` to Unreadable / Truncated / generic MediaError."""
    low = stderr.lower()
    detail = last_error_line(stderr)
    if "no such file or directory" in low:
        return UnreadableMediaError(path, "file not found")
    if "permission denied" in low:
        return UnreadableMediaError(path, "permission denied")
    looks_mp4 = os.path.isfile(path) and check_boxes(path).is_isobmff
    if "moov atom not found" in low:
        if looks_mp4:
            return TruncatedMediaError(path, "moov atom not found: the mp4 index is missing")
        return UnreadableMediaError(path, "ffmpeg does not recognise its contents as audio or video")
    if "error opening input" in low:
        if looks_mp4:
            return TruncatedMediaError(path, detail)
        return UnreadableMediaError(path, "ffmpeg does not recognise its contents as audio or video")
    if has_decode_errors(stderr):
        return TruncatedMediaError(path, detail)
    return MediaError(path, detail)
