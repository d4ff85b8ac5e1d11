"""Prepare the next clips while the current batch denoises.

Starting a clip means decoding its audio: two ffmpeg processes (probe, decode), tens of milliseconds
spent mostly waiting. Done inline, every clip that joins the batch stalls all B slots for that long; in
a background thread it overlaps with the UNet, which releases the GIL in its kernels. Keep torch work
out of the producer: two threads running torch ops fight over the same cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield `items` in order, computing up to `depth` ahead in a daemon thread.

    An exception raised by `items` is re-raised here, at the position it happened. Closing this
    iterator early stops the producer after the item it is working on.
    """
    if depth < 1:
        raise ValueError(f"depth must be ≥ 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            ready.put(_Failure(err))

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=5.0)
