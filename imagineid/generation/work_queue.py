"""The generate job's shared work queue on Ray: workers pull audio files one at a time, so a fast GPU
takes more and a slow one sets nobody's pace; what a lost worker held goes back to the queue.

The queue is an actor on the driver's node (if that node dies the run is lost anyway). It hands out
`Source`s as leases and hears of every record a worker writes; when the driver learns that a worker
died, `requeue` puts back the seeds of its leases that have no record yet. Records and videos are
written atomically under their key, so a video redone after a loss replaces nothing but itself.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace

from imagineid.generation.config import Source


class ClipQueue:
    """Pending sources, leases per worker and finished keys (one instance, as a Ray actor)."""

    def __init__(self, sources: list[Source]) -> None:
        self.pending: deque[Source] = deque(sources)
        self.leases: dict[str, dict[str, Source]] = {}
        self.finished: set[str] = set()
        self.by_worker: Counter[str] = Counter()
        self.tally: Counter[str] = Counter()  # ok / failed videos and frames, over the finished keys
        self.total = len({k for s in sources for k in s.keys})

    def take(self, worker: str) -> Source | None:
        """The next source for `worker` (None: nothing left to hand out)."""
        if not self.pending:
            return None
        source = self.pending.popleft()
        self.leases.setdefault(worker, {})[source.path] = source
        return source

    def done(self, worker: str, key: str, status: str = "ok", frames: int = 0) -> None:
        """`worker` wrote the record of `key` (ok or failed); a lease whose keys are all done is closed."""
        if key not in self.finished:
            self.finished.add(key)
            self.by_worker[worker] += 1
            self.tally["ok" if status == "ok" else "failed"] += 1
            self.tally["frames"] += frames
        held = self.leases.get(worker, {})
        for path, source in list(held.items()):
            if all(k in self.finished for k in source.keys):
                del held[path]

    def took_work(self, worker: str) -> bool:
        """Whether `worker` ever took a source (a worker whose actor never started took none)."""
        return worker in self.leases or self.by_worker[worker] > 0

    def requeue(self, worker: str) -> int:
        """`worker` is gone: its leases' unfinished seeds go to the front of the queue. → videos requeued."""
        requeued = 0
        for source in self.leases.pop(worker, {}).values():
            left = [(s, k) for s, k in zip(source.seeds, source.keys) if k not in self.finished]
            if left:
                self.pending.appendleft(replace(source, seeds=[s for s, _ in left], keys=[k for _, k in left]))
                requeued += len(left)
        return requeued

    def progress(self) -> dict:
        """Finished / total videos, what waits and what is leased, and who finished how many."""
        return {
            "finished": len(self.finished),
            "total": self.total,
            "pending": sum(len(s.keys) for s in self.pending),
            "leased": sum(len(s.keys) for held in self.leases.values() for s in held.values()),
            "by_worker": dict(self.by_worker),
            "ok": self.tally["ok"],
            "failed": self.tally["failed"],
            "frames": self.tally["frames"],
        }
