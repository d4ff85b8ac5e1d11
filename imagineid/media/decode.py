"""Decode frames and audio by streaming from an ffmpeg pipe; a video is never held in memory whole.

for frame in iter_frames("clip.mp4", fps=25, size=256):  # (256, 256, 3) uint8, one at a time
    ...
wave = load_audio("clip.mp4")  # float32 mono in [-1, 1] at 16 kHz
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import ffmpeg
import numpy as np

from imagineid.media.diagnose import classify, has_decode_errors
from imagineid.media.errors import (
    NoAudioStreamError,
    NoVideoStreamError,
    TruncatedMediaError,
)
from imagineid.media.ffmpeg_bin import (
    DECODE_STALL_S,
    LIMITS,
    QUIET,
    UNTRUSTED_INPUT,
    ffmpeg_exe,
    file_url,
)
from imagineid.media.probe import MediaInfo, probe
from imagineid.media.process import FFmpegProcess, run_decode, stall_error

_CHANNELS = {"rgb24": 3, "bgr24": 3, "rgba": 4, "gray": 1}


def _out_size(info: MediaInfo, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) of the frames ffmpeg will write."""
    if size is None:
        if info.width is None or info.height is None:
            raise ValueError(f"{info.path}: ffmpeg did not report a frame size; pass size=")
        return info.width, info.height
    w, h = (size, size) if isinstance(size, int) else size
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(w), int(h)


def _streams_desc(info: MediaInfo) -> str:
    parts = [f"video {info.video_codec}"] * info.has_video + [f"audio {info.audio_codec}"] * info.has_audio
    return "streams: " + ", ".join(parts)


def iter_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    pix_fmt: str = "rgb24",
    chunk: int = 8,
    start: int = 0,
    count: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield frames (H, W, C) uint8 (gray: (H, W)) one by one; `fps` resamples, `size` = side or (w, h).

    `start` / `count` decode only frames [start, start + count) of a constant-rate video (ffmpeg seeks
    to the key frame before `start`, so a segment late in a long clip costs no more than an early one).
    Reads `chunk` frames per pipe read, so memory stays at `chunk` frames. A truncated or corrupt file
    raises TruncatedMediaError once the frames that did decode are yielded. Closing the generator early
    kills and reaps ffmpeg.
    """
    if pix_fmt not in _CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(_CHANNELS)}, got {pix_fmt!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = os.fspath(path)
    info = probe(path)
    if info.video_index is None:
        raise NoVideoStreamError(path, _streams_desc(info))
    width, height = _out_size(info, size)
    c = _CHANNELS[pix_fmt]

    if start < 0 or (count is not None and count < 1):
        raise ValueError(f"start must be >= 0 and count >= 1, got start={start}, count={count}")
    seek = {}
    if start:
        rate = fps or info.fps
        if not rate:
            raise ValueError(f"{path}: no frame rate to seek by; decode from the start")
        seek = {"ss": f"{start / rate:.6f}"}
    video = ffmpeg.input(file_url(path), **seek, **UNTRUSTED_INPUT)[str(info.video_index)]
    if fps is not None:
        video = video.filter("fps", fps=fps)
    if size is not None:
        video = video.filter("scale", width, height, flags="area")
    # passthrough: frames keep their own timestamps, none is repeated to fill the gap before a seek point
    frames = {"vframes": count, "fps_mode": "passthrough"} if count is not None else {}
    frames = {**frames, **({"fps_mode": "passthrough"} if start and fps is None else {})}
    stream = ffmpeg.output(video, "pipe:", format="rawvideo", pix_fmt=pix_fmt, **frames).global_args(*QUIET, *LIMITS)
    return _frames(path, stream, (height, width, c), chunk)


def _frames(
    path: str, stream: Any, shape: tuple[int, int, int], chunk: int, stall_s: float = DECODE_STALL_S
) -> Iterator[np.ndarray]:
    """The generator half of iter_frames: arguments are checked at call time, ffmpeg starts on first next()
    (a generator that is never started leaves no process behind). A read that waits `stall_s` seconds for
    frames stops ffmpeg (StalledMediaError); time spent by the consumer between frames does not count."""
    frame_bytes = shape[0] * shape[1] * shape[2]
    out_shape = shape if shape[2] > 1 else shape[:2]
    proc = FFmpegProcess(stream, ffmpeg_exe(), pipe_stdout=True, stall_s=stall_s)
    n_yielded = 0
    try:
        while True:
            buf = bytearray(frame_bytes * chunk)  # fresh per chunk: yielded frames stay valid and writable
            got = proc.readinto(buf)  # blocks until full or EOF
            for i in range(got // frame_bytes):
                yield np.frombuffer(buf, np.uint8, frame_bytes, i * frame_bytes).reshape(out_shape)
                n_yielded += 1
            if got < len(buf):
                break
        code = proc.wait()
        if proc.stalled:
            raise stall_error(path, proc)
        stderr = proc.stderr_text()
        if code != 0 or has_decode_errors(stderr):
            err = classify(path, stderr)
            if n_yielded and not isinstance(err, TruncatedMediaError):
                raise TruncatedMediaError(path, f"failed after {n_yielded} frames: {err.detail}") from err
            raise err
    finally:
        proc.close()


def read_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    pix_fmt: str = "rgb24",
) -> np.ndarray:
    """All frames as one (N, H, W, C) uint8 array: for short clips only (memory is N x H x W x C)."""
    frames = list(iter_frames(path, fps=fps, size=size, pix_fmt=pix_fmt))
    if not frames:
        raise TruncatedMediaError(path, "the video stream decoded to zero frames")
    return np.stack(frames)


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """First audio stream as float32 mono in [-1, 1] at `sample_rate` (ffmpeg downmixes and resamples)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = os.fspath(path)
    info = probe(path)
    if info.audio_index is None:
        raise NoAudioStreamError(path, _streams_desc(info))
    audio = ffmpeg.input(file_url(path), **UNTRUSTED_INPUT)[str(info.audio_index)]
    stream = ffmpeg.output(audio, "pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate)
    raw, _ = run_decode(stream.global_args(*QUIET, *LIMITS), ffmpeg_exe(), path, pipe_stdout=True)
    samples = np.frombuffer(raw, np.float32)
    return np.clip(samples, -1.0, 1.0)  # AAC/MP3 decoders overshoot slightly; the contract is [-1, 1]
