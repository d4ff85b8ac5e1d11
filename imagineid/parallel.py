"""Fan-out of independent work items: serial in-process, or Ray (local by default, or a cluster).

Why one helper: preprocessing, training and generation all map a function over items; they share
the Ray start-up rules of DESIGN §5 (dashboard off, capped object store, `RAY_ADDRESS` joins a cluster).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

OBJECT_STORE_BYTES = 512 * 1024**2  # results are small references; never hold big arrays in Ray


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Start (or join) Ray once per process; a local instance is sized to `num_cpus`."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
        )


def _apply(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int | None = None, desc: str = "work",
    progress: bool = True, ray_address: str | None = None, on_done: Callable[[int, int], None] | None = None,
) -> list[R]:
    """`[fn(x) for x in items]`, in parallel on Ray when `workers` > 1; results keep the input order.

    `fn` must handle its own per-item errors (return a status), so one bad item never loses the others.
    `on_done(done, total)` reports progress (e.g. to a Prefect progress artifact).
    """
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if (workers <= 1 and not ray_address) or len(items) <= 1:
        results = []
        for x in tqdm(items, desc=desc, unit="item", disable=not progress):
            results.append(fn(x))
            if on_done:
                on_done(len(results), len(items))
        return results
    import ray

    init_ray(workers, ray_address)
    remote = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(_apply)
    fn_ref = ray.put(fn)  # partials and closures travel once, not once per item
    refs = [remote.remote(fn_ref, x) for x in items]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc, unit="item", disable=not progress) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                results[index[ref]] = ray.get(ref)
                bar.update(1)
                if on_done:
                    on_done(bar.n, len(refs))
    return results
