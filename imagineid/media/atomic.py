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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden temp folder beside `path` to fill; on success it takes `path`'s place (an older
    folder there is moved aside first, then deleted), on any error it is removed. Readers see the old
    folder or the new one, never a torn mix; a crash between the two renames leaves the old one aside
    under a hidden name, not deleted."""
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        old = final.with_name(f".{final.name}.{secrets.token_hex(4)}.old")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
