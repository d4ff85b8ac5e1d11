"""Content identity of a file: the sha256 that DATA's clip ids and GEN's records are keyed by."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes, read in `chunk`-byte blocks (a video is never held in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
