"""Encode frames (+ audio) to H.264/AAC mp4, streaming frames into ffmpeg's stdin; atomic writes.

    write_video("out.mp4", frames, fps=25, audio=wave, sample_rate=16000)  # frames may be a generator

Audio is cut or padded with silence to exactly n_frames / fps before it is muxed, so the audio track
never makes the video longer (AAC priming is hidden by the mp4 edit list). Two ffmpeg passes: frames ->
video-only mp4 (frame count known only at the end), then mux with `-c:v copy` + AAC (cheap).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import ffmpeg
import numpy as np

from imagineid.media.atomic import atomic_path, temp_sibling
from imagineid.media.diagnose import last_error_line
from imagineid.media.errors import MediaError
from imagineid.media.ffmpeg_bin import QUIET, ffmpeg_exe, file_url
from imagineid.media.process import FFmpegProcess

AUDIO_BITRATE = "128k"


def _check_frame(frame: np.ndarray, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    """Frames must be (H, W, 3) uint8 RGB, all one size, with even H and W (yuv420p halves chroma)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame {index}: expected an (H, W, 3) uint8 RGB array, got {desc}")
    if shape is None and (frame.shape[0] % 2 or frame.shape[1] % 2):
        raise ValueError(
            f"frame size {frame.shape[1]}x{frame.shape[0]} (WxH) has an odd side; "
            "H.264 yuv420p needs even width and height: crop or pad the frames"
        )
    if shape is not None and frame.shape != shape:
        raise ValueError(f"frame {index}: shape {frame.shape} differs from frame 0 {shape}")
    return np.ascontiguousarray(frame)


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float mono samples in [-1, 1]; integers would be silently 32768x too loud, so refuse them."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be 1-D float mono samples in [-1, 1], got {audio.dtype} {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or inf samples")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return audio.astype(np.float32, copy=False)


def _raise_on_failure(proc: FFmpegProcess, path: Path, what: str) -> None:
    code = proc.wait()
    if code != 0:
        raise MediaError(path, f"ffmpeg {what} failed (exit {code}): {last_error_line(proc.stderr_text())}")


class _H264Pipe:
    """Pass 1: raw RGB frames pushed one by one into libx264 → a video-only mp4 at `tmp`."""

    def __init__(self, tmp: Path, first: np.ndarray, fps: float, crf: int, final: Path, preset: str) -> None:
        h, w = first.shape[:2]
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
            .output(
                file_url(tmp),
                vcodec="libx264",
                pix_fmt="yuv420p",
                crf=crf,
                preset=preset,
                movflags="+faststart",
                format="mp4",
            )
            .global_args(*QUIET)
            .overwrite_output()
        )
        self.final, self.shape, self.n = final, first.shape, 0
        self.proc = FFmpegProcess(stream, ffmpeg_exe(), pipe_stdin=True)
        self.dead = False

    def write(self, frame: np.ndarray) -> None:
        frame = _check_frame(frame, self.n, self.shape)
        if self.dead:
            return
        try:
            assert self.proc.popen.stdin is not None
            self.proc.popen.stdin.write(frame.data)
            self.n += 1
        except BrokenPipeError:
            self.dead = True  # ffmpeg died; finish() reports why

    def finish(self) -> int:
        try:
            assert self.proc.popen.stdin is not None
            self.proc.popen.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg died with frames still buffered; _raise_on_failure reports why
        try:
            _raise_on_failure(self.proc, self.final, "H.264 encoding")
        finally:
            self.proc.close()
        return self.n

    def abort(self) -> None:
        self.proc.close()


def _mux_audio(
    video: Path, raw_audio: Path, sample_rate: int, n_frames: int, fps: float, out: Path, final: Path
) -> None:
    """Pass 2: copy the video stream, add the parked f32 audio cut/padded to the video duration as AAC."""
    n_samples = round(n_frames * sample_rate / fps)
    audio = np.fromfile(raw_audio, "<f4", count=n_samples)
    raw = temp_sibling(out, "pcm").with_suffix(".f32")
    try:
        np.pad(audio, (0, max(0, n_samples - len(audio)))).tofile(raw)
        del audio
        v = ffmpeg.input(file_url(video))
        a = ffmpeg.input(file_url(raw), format="f32le", ar=sample_rate, ac=1)
        stream = (
            ffmpeg.output(
                v["v:0"],
                a["a:0"],
                file_url(out),
                vcodec="copy",
                acodec="aac",
                audio_bitrate=AUDIO_BITRATE,
                movflags="+faststart",
                format="mp4",
            )
            .global_args(*QUIET)
            .overwrite_output()
        )
        proc = FFmpegProcess(stream, ffmpeg_exe())
        try:
            _raise_on_failure(proc, final, "AAC muxing")
        finally:
            proc.close()
    finally:
        raw.unlink(missing_ok=True)


def _check_settings(fps: float, crf: int) -> None:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51 (libx264), got {crf}")


class VideoStream:
    """Push-style atomic mp4 writer: `write(frame)` as frames arrive, `close()` publishes, `abort()` discards.

    For producers that interleave many videos (the batched generator feeds one frame of each active
    clip per step). Until `close()` returns, only hidden temp files exist, so a crash or a kill never
    leaves a partial mp4 under the final name. The audio is parked in a temp file at once, not in memory.

        with VideoStream("out.mp4", fps=25, audio=wave) as video:
            for frame in frames:
                video.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = 25,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        _check_settings(fps, crf)
        self.final = Path(path)
        if not self.final.parent.is_dir():
            raise FileNotFoundError(f"{self.final}: output folder {self.final.parent} does not exist")
        self.fps, self.crf, self.preset, self.sample_rate = fps, crf, preset, sample_rate
        self.video_only = temp_sibling(self.final, "video")
        self.raw_audio: Path | None = None
        if audio is not None:
            self.raw_audio = temp_sibling(self.final, "pcm").with_suffix(".f32")
            _check_audio(audio, sample_rate).astype("<f4").tofile(self.raw_audio)
        self._pipe: _H264Pipe | None = None

    @property
    def frames_written(self) -> int:
        return 0 if self._pipe is None else self._pipe.n

    def write(self, frame: np.ndarray) -> None:
        if self._pipe is None:
            first = _check_frame(frame, 0, None)
            self._pipe = _H264Pipe(self.video_only, first, self.fps, self.crf, self.final, self.preset)
        self._pipe.write(frame)

    def close(self) -> int:
        """Finish encoding, mux the audio (cut / padded to the video), rename into place → frames written."""
        if self._pipe is None:
            self.abort()
            raise ValueError(f"{self.final}: no frames to write")
        try:
            n = self._pipe.finish()
            with atomic_path(self.final) as tmp:
                if self.raw_audio is None:
                    os.replace(self.video_only, tmp)
                else:
                    _mux_audio(self.video_only, self.raw_audio, self.sample_rate, n, self.fps, tmp, self.final)
            return n
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Discard everything written so far (no file under the final name is touched)."""
        if self._pipe is not None:
            self._pipe.abort()
        self._cleanup()

    def _cleanup(self) -> None:
        self.video_only.unlink(missing_ok=True)
        if self.raw_audio is not None:
            self.raw_audio.unlink(missing_ok=True)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "medium",
) -> int:
    """Write (H, W, 3) uint8 RGB frames (+ optional float mono audio) to an H.264/AAC mp4, atomically.

    Returns the number of frames written. On any error (bad frame, failing generator, ffmpeg failure)
    neither `path` nor a temp file is left behind. `preset` is libx264's speed/size trade-off
    (intermediate stores such as aligned crops use a faster one).
    """
    _check_settings(fps, crf)
    if audio is not None:
        audio = _check_audio(audio, sample_rate)
    with VideoStream(path, fps, audio, sample_rate, crf, preset) as video:
        for frame in frames:
            video.write(frame)
    return video.frames_written


def write_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Write float mono samples in [-1, 1] atomically; the format follows the suffix (.wav: 16-bit PCM)."""
    samples = _check_audio(samples, sample_rate)
    final = Path(path)
    with atomic_path(final) as tmp:
        stream = (
            ffmpeg.input("pipe:", format="f32le", ar=sample_rate, ac=1)
            .output(file_url(tmp))
            .global_args(*QUIET)
            .overwrite_output()
        )
        proc = FFmpegProcess(stream, ffmpeg_exe(), pipe_stdin=True)
        try:
            assert proc.popen.stdin is not None
            try:
                proc.popen.stdin.write(samples.astype("<f4").tobytes())
                proc.popen.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg died; _raise_on_failure reports why
            _raise_on_failure(proc, final, "audio encoding")
        finally:
            proc.close()
