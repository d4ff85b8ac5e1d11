"""Where the ffmpeg binary comes from.

We prefer the binary shipped by imageio-ffmpeg: it is pinned with the environment, always has libx264
and AAC, and its stderr format is what `probe` parses. `IMAGEIO_FFMPEG_EXE` overrides it (imageio-ffmpeg
honours that variable); `ffmpeg` on PATH is the fallback when imageio-ffmpeg is not installed.
There is no ffprobe in imageio-ffmpeg, so nothing here needs one.
"""

from __future__ import annotations

import functools
import os
import shutil

from imagineid.media.errors import FFmpegNotFoundError


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (looked up once per process)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        try:
            return imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:  # imageio-ffmpeg found no binary for this platform
            pass
    found = shutil.which("ffmpeg")
    if found is None:
        raise FFmpegNotFoundError("ffmpeg", "")
    return found


def file_url(path: str | os.PathLike[str]) -> str:
    """`file:` URL for ffmpeg (inputs and outputs), so names with ':' or a leading '-' are never read as
    protocols / options."""
    return "file:" + os.path.abspath(os.fspath(path))


# Global flags for every run: no banner, never read the terminal, only errors on stderr.
QUIET = ("-hide_banner", "-nostdin", "-v", "error")

# Inputs are untrusted files. ffmpeg reads only the named file (file: protocol) with a demuxer for a
# video or audio container: never a playlist (hls), a concat list, an image sequence or a network URL,
# any of which would make it open other files than the one it was given, whatever the file's name.
SAFE_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,asf,mxf,dv,nut,ivf,ogg,"
    "wav,w64,mp3,flac,aac,aiff,caf,amr,h264,hevc,m4v"
)
UNTRUSTED_INPUT = {"protocol_whitelist": "file", "format_whitelist": SAFE_DEMUXERS}  # ffmpeg.input(**...)
DECODE_CPU_LIMIT_S = 1800  # a decoding ffmpeg is stopped after this much CPU time: one hung file never blocks a run
LIMITS = ("-timelimit", str(DECODE_CPU_LIMIT_S))
# ...and killed when it gives no output for this long while the reader waits for it (wall clock: a
# decoder blocked on a hung mount or a named pipe uses no CPU). Time the reader spends on the frames it
# already has does not count, so slow per-frame work never trips it.
DECODE_STALL_S = 300.0


def untrusted_input_args() -> list[str]:
    """UNTRUSTED_INPUT as command-line options, to put before `-i`."""
    return [arg for key, value in UNTRUSTED_INPUT.items() for arg in (f"-{key}", value)]
