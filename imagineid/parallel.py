"""Fan-out of independent work items: serial in-process, or Ray (local by default, or a cluster).

Why one helper: preprocessing, training and generation all map a function over items; they share
the Ray start-up rules of docs/architecture.md §5 (dashboard off, capped object store, `RAY_ADDRESS` joins a cluster).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from tqdm import tqdm

from imagineid.errors import ImagineIDError
from imagineid.gpu_claims import GpuClaim, claim_gpus, host_gpu_ids

T = TypeVar("T")
R = TypeVar("R")

OBJECT_STORE_BYTES = 512 * 1024**2  # results are small references; never hold big arrays in Ray


class RayJoinError(ImagineIDError, ConnectionError):
    """The cluster named by --ray-address / RAY_ADDRESS could not be joined (a retry may succeed)."""

    kind = "ray_unreachable"


_local_gpus: GpuClaim | None = None  # the host-wide GPU claim of the local Ray this process started


def init_ray(num_cpus: int | None = None, address: str | None = None, num_gpus: int | None = 0) -> None:
    """Start (or join) Ray once per process; a local instance is sized to the run.

    `address` (else `$RAY_ADDRESS`) joins a running cluster, e.g. one started by `make ray-head`. A
    local instance gets `num_cpus` CPUs and `num_gpus` GPUs (None: every GPU no other run holds),
    claimed host-wide first (`imagineid.gpu_claims`), so two runs on one host never share a card; a
    run that claims none hides every GPU from its workers. A later step of the same process that needs
    GPUs its local Ray lacks restarts it (steps run one after another, so nothing is on it then).
    """
    global _local_gpus
    import ray

    if ray.is_initialized():
        if _local_gpus is None or len(_local_gpus.ids) >= _gpus_wanted(num_gpus):
            return  # a joined cluster, or a local Ray that holds what this host can give
        ray.shutdown()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as err:
            raise RayJoinError(
                f"could not join the Ray cluster at {address}: {str(err).splitlines()[0]}; is it running, and do "
                "RAY_AUTH_MODE=token and the head's auth token reach this process? (docs/operations.md § Ray)"
            ) from err
        return
    claim = claim_gpus(num_gpus, held=_local_gpus)
    # Ray's node takes its GPU ids from CUDA_VISIBLE_DEVICES as its processes start: show it only the claim.
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claim.ids)
    try:  # "local": never attach to a cluster that `ray start` left in /tmp/ray/ray_current_cluster
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            num_gpus=len(claim.ids),
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
        )
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
    _local_gpus = claim


def _gpus_wanted(num_gpus: int | None) -> int:
    """How many GPUs a local Ray should hold for a step asking `num_gpus` (None: at least one)."""
    if num_gpus == 0:
        return 0
    return min(len(host_gpu_ids()), 1 if num_gpus is None else num_gpus)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def remote_traceback(error: BaseException) -> str:
    """A Ray task's error as plain text: the worker's traceback (Ray's text, without its colour codes)."""
    return _ANSI.sub("", str(error)).strip()


class PlacementError(ImagineIDError):
    """A resource request no node of the cluster can hold: Ray would queue it forever."""


def node_gpus() -> list[float]:
    """GPUs of each alive node of the joined cluster (a task's GPUs must all be on one node)."""
    import ray

    return [float(n.get("Resources", {}).get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def cluster_gpus(requested: float) -> float:
    """`requested` GPUs per task when one node of the joined cluster has that many; 0 on a cluster with
    no GPU at all (the task runs on CPUs). A request larger than every node's GPUs is refused at once:
    a task's GPUs must sit on one node, so 2 GPUs on two 1-GPU nodes would wait forever."""
    per_node = node_gpus()
    if requested <= 0 or not any(per_node):
        return 0.0
    if requested > max(per_node):
        raise PlacementError(
            f"{requested:g} GPUs per task, but the largest node has {max(per_node):g} "
            f"(nodes: {', '.join(f'{g:g}' for g in per_node)}); ask for at most {max(per_node):g} per task"
        )
    return requested


def _apply(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int | None = None,
    desc: str = "work",
    progress: bool = True,
    ray_address: str | None = None,
    on_done: Callable[[int, int], None] | None = None,
    on_error: Callable[[T, Exception], R] | None = None,
    max_retries: int = 2,
    max_in_flight: int | None = None,
    peak: list[int] | None = None,
) -> list[R]:
    """`[fn(x) for x in items]`, in parallel on Ray when `workers` > 1; results keep the input order.

    `fn` should handle its own per-item errors (return a status). What it cannot handle, such as its Ray
    worker dying (killed, out of memory) on every one of `1 + max_retries` attempts, becomes
    `on_error(item, error)` when given, so one lost item never loses the others; without `on_error` it raises.
    `on_done(done, total)` reports progress (e.g. to a Prefect progress artifact). At most `max_in_flight`
    tasks (default: twice the cluster's CPUs) are submitted at a time; `peak`, when given, receives the
    number in flight after each completion (for benchmarks and tests).
    """
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if (workers <= 1 and not ray_address) or len(items) <= 1:
        results = []
        for x in tqdm(items, desc=desc, unit="item", disable=not progress):
            try:
                results.append(fn(x))
            except Exception as err:
                if on_error is None:
                    raise
                results.append(on_error(x, err))
            if on_done:
                on_done(len(results), len(items))
        return results
    import ray

    init_ray(workers, ray_address)
    # max_retries re-runs a task whose worker process died; application exceptions are not retried.
    remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_apply)
    fn_ref = ray.put(fn)  # partials and closures travel once, not once per item
    # A bounded window of tasks in flight: the driver holds at most `window` references and each wait
    # looks at no more than that, so a run of 10^5 items costs the driver O(items), not O(items^2).
    window = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", workers)))
    results: list = [None] * len(items)
    index: dict = {}
    queue = iter(range(len(items)))
    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar:

        def submit(n: int) -> None:
            for i in itertools.islice(queue, n):
                index[remote.remote(fn_ref, items[i])] = i

        submit(window)
        while index:
            ready, _ = ray.wait(list(index), num_returns=1)
            for ref in ready:
                i = index.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as err:  # ray.exceptions.RayError: worker lost, or fn raised
                    if on_error is None:
                        raise
                    results[i] = on_error(items[i], err)
                bar.update(1)
                if on_done:
                    on_done(bar.n, len(items))
            submit(window - len(index))
            if peak is not None:
                peak.append(len(index))
    return results
