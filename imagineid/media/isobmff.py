"""A few cheap reads of the MP4/MOV box structure (ISO BMFF), done without decoding.

Why: ffmpeg opens a cut-short mp4 whose index (`moov`) sits at the front (`+faststart`) without a word,
then decodes half of it and stops. Comparing the declared box sizes with the file size catches that
in microseconds. The same walk reads the exact video sample count from `stsz`, so `probe` can report
an exact frame count for mp4 instead of duration x fps.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# Top-level box types that can open an ISO BMFF / QuickTime file.
_FIRST_BOXES = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"uuid"}
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
_MAX_BOXES = 10_000  # a sane file has a handful of top-level boxes


@dataclass(frozen=True)
class BoxCheck:
    """What the box walk found: is it ISO BMFF, is it complete, exact video sample count if known."""

    is_isobmff: bool
    problem: str | None = None  # why the file is truncated, or None
    video_samples: int | None = None


def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, payload offset, box end) for boxes in [start, end); raises ValueError past `end`."""
    pos = start
    for _ in range(_MAX_BOXES):
        if pos >= end:
            return
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"box header cut at byte {pos}")
        size, kind = struct.unpack(">I4s", head)
        payload = pos + 8
        if size == 1:  # 64-bit size follows
            large = f.read(8)
            if len(large) < 8:
                raise ValueError(f"box header cut at byte {pos}")
            size = struct.unpack(">Q", large)[0]
            payload += 8
        elif size == 0:  # extends to the end
            size = end - pos
        if size < payload - pos:
            raise ValueError(f"box {kind!r} at byte {pos} has impossible size {size}")
        if pos + size > end:
            raise ValueError(f"box '{kind.decode('latin-1')}' needs {pos + size} bytes, file has {end}")
        yield kind, payload, pos + size
        pos += size


def _video_samples(f: BinaryIO, start: int, end: int) -> int | None:
    """Sample count of the first video track under moov (payload start..end), or None."""
    for kind, payload, box_end in _boxes(f, start, end):
        if kind != b"trak":
            continue
        found: dict[bytes, int] = {}
        _collect(f, payload, box_end, found)
        if b"hdlr" in found and b"stsz" in found:
            f.seek(found[b"hdlr"] + 8)  # version/flags (4) + pre_defined (4), then handler type
            if f.read(4) == b"vide":
                f.seek(found[b"stsz"] + 8)  # version/flags (4) + sample_size (4), then sample_count
                return struct.unpack(">I", f.read(4))[0]
    return None


def _collect(f: BinaryIO, start: int, end: int, found: dict[bytes, int]) -> None:
    """Payload offsets of the first hdlr and stsz inside one trak (mdia > hdlr, mdia > minf > stbl > stsz)."""
    for kind, payload, box_end in _boxes(f, start, end):
        if kind in (b"hdlr", b"stsz"):
            found.setdefault(kind, payload)
        elif kind in _CONTAINERS:
            _collect(f, payload, box_end, found)


def check_boxes(path: str | os.PathLike[str]) -> BoxCheck:
    """Walk the top-level boxes of `path`; not ISO BMFF -> `is_isobmff=False`, nothing else checked."""
    end = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] not in _FIRST_BOXES:
            return BoxCheck(is_isobmff=False)
        moov: tuple[int, int] | None = None
        fragmented = False
        try:
            for kind, payload, box_end in _boxes(f, 0, end):
                if kind == b"moov":
                    moov = (payload, box_end)
                fragmented = fragmented or kind == b"moof"
        except ValueError as err:
            return BoxCheck(is_isobmff=True, problem=str(err))
        if moov is None:
            return BoxCheck(is_isobmff=True, problem="no 'moov' index box: the file was cut before it was finished")
        if fragmented:  # samples live in the fragments; stsz in moov says 0
            return BoxCheck(is_isobmff=True)
        try:
            return BoxCheck(is_isobmff=True, video_samples=_video_samples(f, *moov))
        except (ValueError, struct.error) as err:
            return BoxCheck(is_isobmff=True, problem=f"broken 'moov' index: {err}")
