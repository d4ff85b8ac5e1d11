"""A running ffmpeg with its stderr drained on a thread, so a chatty ffmpeg can never block its pipes."""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any

from imagineid.media.diagnose import classify, has_decode_errors

_STDERR_KEEP = 64 * 1024  # bytes of stderr tail kept for error messages


class FFmpegProcess:
    """Wraps `ffmpeg-python`'s `run_async` Popen: `stdin`/`stdout` pipes, `stderr_text()`, `close()`."""

    def __init__(self, stream: Any, exe: str, *, pipe_stdin: bool = False, pipe_stdout: bool = False) -> None:
        self.popen: subprocess.Popen[bytes] = stream.run_async(
            cmd=exe, pipe_stdin=pipe_stdin, pipe_stdout=pipe_stdout, pipe_stderr=True
        )
        self._tail = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

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


def run_decode(stream: Any, exe: str, path: str | os.PathLike[str], *, pipe_stdout: bool = False) -> tuple[bytes, str]:
    """Run a decoding ffmpeg to the end; returns (stdout, stderr) or raises the classified media error.

    Decode errors count even when ffmpeg exits 0: a corrupt file must not pass as a short one.
    """
    proc = FFmpegProcess(stream, exe, pipe_stdout=pipe_stdout)
    try:
        out = proc.popen.stdout.read() if pipe_stdout and proc.popen.stdout is not None else b""
        code = proc.wait()
    finally:
        proc.close()
    stderr = proc.stderr_text()
    if code != 0 or has_decode_errors(stderr):
        raise classify(path, stderr)
    return out, stderr
