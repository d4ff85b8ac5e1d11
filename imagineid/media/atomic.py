"""Write-then-rename, so a crash or a failing input never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """`.NAME.<random>.<tag>.SUFFIX` next to `path`: same file system (rename is atomic), same suffix
    (ffmpeg picks the format from it), hidden, and unique so two writers never collide."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.{tag}{path.suffix}")


_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.[a-z]+(\.[A-Za-z0-9]+)?$")


def is_temp_sibling(path: Path) -> bool:
    """True for names `temp_sibling` makes (a killed writer's leftovers), not for a final file that is
    merely hidden: `.intro__seed0.mp4`, the video of an audio named `.intro.wav`, is kept."""
    return bool(_TEMP.match(path.name))


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
