"""Background preparation of the next clips (generation/prefetch.py)."""

from __future__ import annotations

import threading
import time

import pytest

from imagineid.generation.prefetch import prefetched


def test_items_arrive_in_order_and_are_made_in_another_thread() -> None:
    made_in: set[str] = set()

    def items():
        for k in range(20):
            made_in.add(threading.current_thread().name)
            yield k

    assert list(prefetched(items(), depth=3)) == list(range(20))
    assert made_in == {"prefetch"}


def test_the_next_item_is_made_while_the_consumer_holds_the_current_one() -> None:
    second_made = threading.Event()

    def items():
        yield 0
        second_made.set()
        yield 1

    stream = prefetched(items(), depth=2)
    assert next(stream) == 0
    assert second_made.wait(timeout=10)  # a plain generator would only get here on the next `next`
    assert list(stream) == [1]


def test_an_error_is_raised_at_its_position() -> None:
    def failing():
        yield 1
        yield 2
        raise RuntimeError("audio decoder died")

    got = []
    with pytest.raises(RuntimeError, match="audio decoder died"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer() -> None:
    produced = []

    def endless():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    time.sleep(0.3)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 3 + 2 + 1  # taken + queue depth + the one being put
