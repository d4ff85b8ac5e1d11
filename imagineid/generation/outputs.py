"""The generate output folder (docs/architecture.md §6) and its bookkeeping.

    GEN/videos/<audio-stem>__seed<k>.mp4   finished videos only (written under a hidden temp name, renamed)
    GEN/records/<key>.json                 one record per finished or failed video, written atomically
    GEN/index.parquet                      all records as one table (rebuilt from records/ after each run)

A record names the audio, its sha256 and the stem its videos carry: a changed audio file is generated
again, and a new file whose stem is already taken gets a hashed stem instead of renaming older outputs.
Records, not the index, are the source of truth: a run killed at any point leaves whole videos and whole
records, and the next run rebuilds the index, skips what is finished and redoes the rest. One run at a
time writes to a GEN folder (an advisory lock; the OS drops it when a process dies).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from imagineid.data.parquet_io import write_json_atomic, write_table_atomic
from imagineid.errors import ImagineIDError
from imagineid.media.atomic import is_temp_sibling

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("audio", pa.string()),
        ("seed", pa.int32()),
        ("video", pa.string()),
        ("frames", pa.int32()),
        ("seconds", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("identity_audio", pa.string()),
        ("emotion_audio", pa.string()),
        ("predicted_gender", pa.string()),
        ("predicted_emotion", pa.string()),
        ("first_frame_attempts", pa.int32()),
        ("precision", pa.string()),
        ("mesh_mouth_opening", pa.list_(pa.float32())),
        ("audio_sha256", pa.string()),
        ("worker", pa.string()),  # host:pid of the process that made it
    ]
)


def video_stems(paths: list[Path], owners: dict[str, str] | None = None) -> dict[Path, str]:
    """Audio path → output stem, stable across runs: the file stem, unless another audio already owns it
    in this folder (`owners`: stem → audio path, from the records) or shares it in this run without an
    owner; then the stem plus a short hash of the path. Adding a file never renames older outputs."""
    owners = owners or {}
    counts = Counter(p.stem for p in paths)

    def stem(p: Path) -> str:
        owner = owners.get(p.stem)
        if owner == str(p.resolve()) or (owner is None and counts[p.stem] == 1):
            return p.stem
        return f"{p.stem}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"

    return {p: stem(p) for p in paths}


def video_key(stem: str, seed: int, identity: str | None = None, emotion: str | None = None) -> str:
    """`<stem>__seed<k>`; factor-swapped videos name their other sources: `<stem>__id-<A>__emo-<C>__seed<k>`."""
    parts = [stem] + ([f"id-{identity}"] if identity else []) + ([f"emo-{emotion}"] if emotion else [])
    return "__".join(parts + [f"seed{seed}"])


@dataclass
class GenFolder:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.videos = self.root / "videos"
        self.records = self.root / "records"
        self._lock: int | None = None

    def video(self, key: str) -> Path:
        return self.videos / f"{key}.mp4"

    def open(self) -> GenFolder:
        """Create the folders, take the lock, remove temp files a killed run left behind."""
        self.videos.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".generate.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ImagineIDError(
                f"another `imagineid generate` is writing to {self.root}; wait for it or use another --out"
            ) from None
        self._lock = fd
        for stale in [p for p in self.videos.glob(".*") if is_temp_sibling(p)] + list(self.records.glob(".tmp-*")):
            stale.unlink(missing_ok=True)
        return self

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def __enter__(self) -> GenFolder:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    def claim(self, provenance: dict) -> None:
        """Refuse to add videos from another model or settings to a folder that has some (they would be
        skipped as "finished" and the index would mix two generators); record it for a new folder."""
        path = self.root / "provenance.json"
        if path.exists():
            before = json.loads(path.read_text())
            changed = sorted(k for k in set(before) | set(provenance) if before.get(k) != provenance.get(k))
            if changed:
                raise ImagineIDError(
                    f"{self.root} holds videos from another generator or settings ({', '.join(changed)} differ: "
                    f"{ {k: before.get(k) for k in changed} } → { {k: provenance.get(k) for k in changed} }); "
                    "use a new --out, or move the old folder away"
                )
        else:
            write_json_atomic(path, provenance)

    def is_finished(self, key: str, audio_sha256: str | None = None) -> bool:
        """A finished video of this key, made from audio with this sha256 (records from before audio
        hashes were kept count as made from it)."""
        path = self.records / f"{key}.json"
        if not path.exists() or not self.video(key).exists():
            return False
        record = json.loads(path.read_text())
        made_from = record.get("audio_sha256")
        return record.get("status") == "ok" and (audio_sha256 is None or made_from in (None, audio_sha256))

    def stem_owners(self) -> dict[str, str]:
        """Output stem → the audio path whose videos carry it, from the records (keeps names stable)."""
        owners: dict[str, str] = {}
        for path in self.records.glob("*.json"):
            record = json.loads(path.read_text())
            stem = record.get("stem") or Path(record.get("audio") or "").stem
            if stem and record.get("key", "").startswith(f"{stem}__"):
                owners.setdefault(stem, record.get("audio"))
        return owners

    def record(self, record: dict) -> None:
        write_json_atomic(self.records / f"{record['key']}.json", record)

    def write_index(self) -> Path:
        rows = [json.loads(p.read_text()) for p in sorted(self.records.glob("*.json"))]
        table = pa.Table.from_pylist([{f: r.get(f) for f in INDEX_SCHEMA.names} for r in rows], schema=INDEX_SCHEMA)
        return write_table_atomic(table, self.root / "index.parquet")
