"""Media I/O on ffmpeg-python: probe, decode frames/audio by streaming, encode H.264/AAC mp4 atomically.

    from imagineid.media import probe, iter_frames, load_audio, write_video
    info = probe("clip.mp4")                       # MediaInfo: fps, size, n_frames, audio rate, ...
    for frame in iter_frames("clip.mp4", size=256):  # (256, 256, 3) uint8
        ...
    wave = load_audio("clip.mp4")                  # float32 mono, 16 kHz, [-1, 1]
    write_video("out.mp4", frames, fps=25, audio=wave)

Bad files raise typed errors (`UnreadableMediaError`, `TruncatedMediaError`, `NoVideoStreamError`,
`NoAudioStreamError`, all `MediaError`), each with its own `kind` for failure tables.
"""

from imagineid.media.decode import iter_frames, load_audio, read_frames
from imagineid.media.encode import VideoStream, write_audio, write_video
from imagineid.media.errors import (
    FFmpegNotFoundError,
    MediaError,
    NoAudioStreamError,
    NoVideoStreamError,
    TruncatedMediaError,
    UnreadableMediaError,
)
from imagineid.media.ffmpeg_bin import ffmpeg_exe
from imagineid.media.probe import MediaInfo, count_frames, probe

__all__ = [
    "FFmpegNotFoundError",
    "MediaError",
    "MediaInfo",
    "NoAudioStreamError",
    "NoVideoStreamError",
    "TruncatedMediaError",
    "UnreadableMediaError",
    "VideoStream",
    "count_frames",
    "ffmpeg_exe",
    "iter_frames",
    "load_audio",
    "probe",
    "read_frames",
    "write_audio",
    "write_video",
]
