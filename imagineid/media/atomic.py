"""Write-then-rename, so a crash or a failing input never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """`.NAME.<random>.<tag>.SUFFIX` next to `path`: same file system (rename is atomic), same suffix
    (ffmpeg picks the format from it), hidden, and unique so two writers never collide."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.{tag}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path`, on any error it is removed."""
    final = Path(path)
    if not final.parent.is_dir():
        raise FileNotFoundError(f"{final}: output folder {final.parent} does not exist")
    tmp = temp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
