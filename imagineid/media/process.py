"""A running ffmpeg with its stderr drained on a thread, so a chatty ffmpeg can never block its pipes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

from imagineid.media.diagnose import classify, has_decode_errors
from imagineid.media.errors import StalledMediaError
from imagineid.media.ffmpeg_bin import DECODE_STALL_S

_STDERR_KEEP = 64 * 1024  # bytes of stderr tail kept for error messages


class FFmpegProcess:
    """Wraps `ffmpeg-python`'s `run_async` Popen: `stdin`/`stdout` pipes, `stderr_text()`, `close()`.

    With `stall_s`, reads of stdout through `read` / `readinto` are watched: ffmpeg is killed when one
    read waits longer than that for its data, and `stalled` says so.
    """

    def __init__(
        self,
        stream: Any,
        exe: str,
        *,
        pipe_stdin: bool = False,
        pipe_stdout: bool = False,
        stall_s: float | None = None,
    ) -> None:
        self.popen: subprocess.Popen[bytes] = stream.run_async(
            cmd=exe, pipe_stdin=pipe_stdin, pipe_stdout=pipe_stdout, pipe_stderr=True
        )
        self._tail = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.stall_s = stall_s
        self.stalled = False
        self._read_since: float | None = None  # monotonic start of the read in progress
        self._done = threading.Event()
        if stall_s is not None:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.stall_s is not None
        while not self._done.wait(min(1.0, self.stall_s / 4)):
            since = self._read_since
            if since is not None and time.monotonic() - since > self.stall_s and self.popen.poll() is None:
                self.stalled = True
                self.popen.kill()  # the blocked read then returns what it has (EOF)
                return

    def readinto(self, buf: bytearray) -> int:
        """Fill `buf` from stdout (blocks until full or EOF); watched for stalls."""
        assert self.popen.stdout is not None
        self._read_since = time.monotonic()
        try:
            return self.popen.stdout.readinto(buf)  # type: ignore[attr-defined]
        finally:
            self._read_since = None

    def read(self) -> bytes:
        """All of stdout; watched for stalls (the whole read is one wait)."""
        assert self.popen.stdout is not None
        self._read_since = time.monotonic()
        try:
            return self.popen.stdout.read()
        finally:
            self._read_since = None

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for chunk in iter(lambda: self.popen.stderr.read1(4096), b""):  # type: ignore[union-attr]
            self._tail += chunk
            del self._tail[:-_STDERR_KEEP]

    def wait(self) -> int:
        """Wait for ffmpeg to exit by itself and for stderr to be fully read; returns the exit code."""
        code = self.popen.wait()
        self._reader.join()
        return code

    def stderr_text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Kill ffmpeg if it still runs, reap it (no zombie) and close every pipe; safe to call twice."""
        self._done.set()
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self._reader.join()
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:  # stdin of a dead ffmpeg: flushing it fails, nothing to save
                    pass


def stall_error(path: str | os.PathLike[str], proc: FFmpegProcess) -> StalledMediaError:
    return StalledMediaError(path, f"ffmpeg gave no output for {proc.stall_s:g} s")


def run_decode(
    stream: Any, exe: str, path: str | os.PathLike[str], *, pipe_stdout: bool = False, stall_s: float = DECODE_STALL_S
) -> tuple[bytes, str]:
    """Run a decoding ffmpeg to the end; returns (stdout, stderr) or raises the classified media error.

    Decode errors count even when ffmpeg exits 0: a corrupt file must not pass as a short one. With
    stdout piped, a decode that gives nothing for `stall_s` seconds is stopped (StalledMediaError).
    """
    proc = FFmpegProcess(stream, exe, pipe_stdout=pipe_stdout, stall_s=stall_s if pipe_stdout else None)
    try:
        out = proc.read() if pipe_stdout else b""
        code = proc.wait()
    finally:
        proc.close()
    if proc.stalled:
        raise stall_error(path, proc)
    stderr = proc.stderr_text()
    if code != 0 or has_decode_errors(stderr):
        raise classify(path, stderr)
    return out, stderr
