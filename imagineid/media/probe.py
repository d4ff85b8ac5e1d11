"""What is in a media file: `probe` (cheap, no decoding) and `count_frames` (exact, decodes).

There is no ffprobe in imageio-ffmpeg, so `probe` runs `ffmpeg -hide_banner -i PATH` (no output, so
ffmpeg exits 1 after printing the input description) and parses the `Duration:` and
`Stream #0:N ...: Video: / Audio:` lines. `n_frames` is exact for MP4/MOV (sample count of the video
track's `stsz` box, `n_frames_exact=True`), else estimated as round(duration x fps).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import ffmpeg

from imagineid.media.diagnose import (
    check_container,
    check_readable,
    classify,
)
from imagineid.media.errors import MediaError, NoVideoStreamError, UnreadableMediaError
from imagineid.media.ffmpeg_bin import (
    LIMITS,
    QUIET,
    UNTRUSTED_INPUT,
    ffmpeg_exe,
    file_url,
    untrusted_input_args,
)
from imagineid.media.process import run_decode

_PROBE_TIMEOUT_S = 60
_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #0:(\d+)\S*?: (Video|Audio): (.*)$", re.MULTILINE)
_SIZE = re.compile(r"(?<![\w.])([1-9]\d*)x([1-9]\d*)(?![\w.])")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_HZ = re.compile(r"(\d+) Hz")
_CHANNELS = re.compile(r"Hz, ([^,]+)")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
_LAYOUTS = {"mono": 1, "stereo": 2, "quad": 4, "hexagonal": 6, "octagonal": 8, "downmix": 2}


@dataclass(frozen=True)
class MediaInfo:
    """One media file as `ffmpeg -i` describes it; video/audio fields are None without that stream."""

    path: str
    duration_s: float | None  # container duration (the longer stream); None when ffmpeg cannot tell
    has_video: bool
    fps: float | None  # average frame rate, falling back to the tbr guess
    width: int | None  # as displayed: rotation metadata of 90/270 degrees swaps the coded size
    height: int | None
    n_frames: int | None  # exact for MP4/MOV, else round(duration_s * fps); see n_frames_exact
    has_audio: bool
    audio_rate: int | None  # Hz
    audio_channels: int | None
    video_codec: str | None
    audio_codec: str | None
    n_frames_exact: bool = False
    video_index: int | None = None  # ffmpeg stream index (`-map 0:N`) of the first real video stream
    audio_index: int | None = None


def _channels(desc: str) -> int | None:
    """'mono' -> 1, '5.1(side)' -> 6, '3 channels' -> 3."""
    m = _CHANNELS.search(desc)
    if not m:
        return None
    layout = m.group(1).strip()
    if layout in _LAYOUTS:
        return _LAYOUTS[layout]
    if (n := re.match(r"(\d+) channels", layout)) is not None:
        return int(n.group(1))
    if (n := re.match(r"(\d+)\.(\d+)", layout)) is not None:
        return int(n.group(1)) + int(n.group(2))
    return None


def _video_fields(desc: str, after: str) -> tuple[float | None, int | None, int | None]:
    """(fps, width, height) from one `Video:` line plus the side data printed after it."""
    rates = {kind: float(v) * (1000 if k else 1) for v, k, kind in _RATE.findall(desc)}
    fps = rates.get("fps", rates.get("tbr"))
    size = _SIZE.search(desc)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (None, None)
    rot = _ROTATION.search(after)
    if rot and width is not None and round(abs(float(rot.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg auto-rotates on decode
    return fps, width, height


def parse_ffmpeg_info(path: str, stderr: str, exact_frames: int | None = None) -> MediaInfo:
    """Build a MediaInfo from `ffmpeg -i` stderr; `exact_frames` (from the mp4 index) wins over estimates."""
    dur = _DURATION.search(stderr)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None
    video: dict[str, object] = {}
    audio: dict[str, object] = {}
    streams = list(_STREAM.finditer(stderr))
    for i, m in enumerate(streams):
        index, kind, desc = int(m.group(1)), m.group(2), m.group(3)
        after = stderr[m.end() : streams[i + 1].start() if i + 1 < len(streams) else len(stderr)]
        if kind == "Video" and not video and "(attached pic)" not in desc:
            fps, width, height = _video_fields(desc, after)
            video = {"index": index, "codec": desc.split()[0].rstrip(","), "fps": fps, "w": width, "h": height}
        elif kind == "Audio" and not audio:
            rate = _HZ.search(desc)
            audio = {
                "index": index,
                "codec": desc.split()[0].rstrip(","),
                "rate": int(rate.group(1)) if rate else None,
                "ch": _channels(desc),
            }
    fps = video.get("fps")
    n_frames, exact = None, False
    if video and exact_frames:
        n_frames, exact = exact_frames, True
    elif video and duration and fps:
        n_frames = round(duration * float(fps))  # type: ignore[arg-type]
    return MediaInfo(
        path=path,
        duration_s=duration,
        has_video=bool(video),
        fps=fps,  # type: ignore[arg-type]
        width=video.get("w"),
        height=video.get("h"),
        n_frames=n_frames,  # type: ignore[arg-type]
        has_audio=bool(audio),
        audio_rate=audio.get("rate"),
        audio_channels=audio.get("ch"),  # type: ignore[arg-type]
        video_codec=video.get("codec"),
        audio_codec=audio.get("codec"),  # type: ignore[arg-type]
        n_frames_exact=exact,
        video_index=video.get("index"),
        audio_index=audio.get("index"),  # type: ignore[arg-type]
    )


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe `path` without decoding it; raises Unreadable/TruncatedMediaError for bad files."""
    path = os.fspath(path)
    check_readable(path)
    exact = check_container(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *untrusted_input_args(), "-i", file_url(path)]
    try:
        run = subprocess.run(cmd, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise MediaError(path, f"ffmpeg took over {_PROBE_TIMEOUT_S} s just to open it") from err
    stderr = run.stderr.decode("utf-8", errors="replace")
    if "Input #0" not in stderr:  # ffmpeg could not open it at all
        raise classify(path, stderr)
    info = parse_ffmpeg_info(path, stderr, exact)
    if not info.has_video and not info.has_audio:
        raise UnreadableMediaError(path, "it has neither a video nor an audio stream")
    return info


def count_frames(path: str | os.PathLike[str]) -> int:
    """Exact number of video frames, by decoding everything (`-f null`); slow on long videos, but true."""
    path = os.fspath(path)
    info = probe(path)
    if info.video_index is None:
        raise NoVideoStreamError(path, f"streams: audio {info.audio_codec}")
    stream = ffmpeg.output(ffmpeg.input(file_url(path), **UNTRUSTED_INPUT)[str(info.video_index)], "-", format="null")
    _, stderr = run_decode(stream.global_args(*QUIET, *LIMITS, "-stats"), ffmpeg_exe(), path)
    counts = re.findall(r"frame=\s*(\d+)", stderr)
    if not counts:
        raise MediaError(path, "ffmpeg printed no frame count")
    return int(counts[-1])
