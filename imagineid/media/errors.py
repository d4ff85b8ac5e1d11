"""Typed media errors, so a batch job can record *why* one file was rejected and go on.

Each subclass has its own `kind` (lands in `failures/*.parquet`, column `error_type`) and a one-line
message that names the file and says what is wrong with it.
"""

from __future__ import annotations

import os

from imagineid.errors import ImagineIDError


def _one_line(text: str) -> str:
    """ffmpeg detail can span lines; a failure table wants one."""
    return " ".join(text.split())


class MediaError(ImagineIDError):
    """Base class: something is wrong with a media file, or ffmpeg failed on it."""

    kind = "media_error"

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        self.path = os.fspath(path)
        self.detail = _one_line(detail)
        super().__init__(f"{self.path}: {self._what()}{f' ({self.detail})' if self.detail else ''}")

    def _what(self) -> str:
        return "ffmpeg failed on this media file"


class FFmpegNotFoundError(MediaError):
    """No ffmpeg binary: nothing in `imagineid.media` can work."""

    kind = "ffmpeg_missing"

    def _what(self) -> str:
        return "no ffmpeg binary found; install imageio-ffmpeg or put ffmpeg on PATH"


class UnreadableMediaError(MediaError):
    """Missing, not permitted, a folder, or not media at all (e.g. a text file named .mp4)."""

    kind = "media_unreadable"

    def _what(self) -> str:
        return "not a readable media file"


class TruncatedMediaError(MediaError):
    """Real media that is cut short or corrupt: the container index is missing or decoding fails partway."""

    kind = "media_truncated"

    def _what(self) -> str:
        return "media file is truncated or corrupt"


class NoVideoStreamError(MediaError):
    """Readable media without a video stream, where frames were asked for."""

    kind = "no_video_stream"

    def _what(self) -> str:
        return "has no video stream"


class NoAudioStreamError(MediaError):
    """Readable media without an audio stream, where samples were asked for."""

    kind = "no_audio_stream"

    def _what(self) -> str:
        return "has no audio stream"


class StalledMediaError(MediaError):
    """ffmpeg produced nothing for too long while output was awaited: a hung file system, a named pipe, a
    device. Its CPU-time limit cannot catch it (a blocked ffmpeg uses no CPU), so a wall-clock watchdog does."""

    kind = "media_stalled"

    def _what(self) -> str:
        return "decoding stalled and was stopped"
