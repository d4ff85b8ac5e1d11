"""The retry policy of every task: retry transient failures with exponential backoff, fail fast otherwise.

    @task(**RETRY_TRANSIENT)                  # I/O, a lost Ray worker or node
    @task(tags=[GPU_TAG], **RETRY_TRANSIENT)  # also holds a slot of the `gpu` concurrency limit

Transient: I/O errors that a second try can pass (EIO, a stale NFS handle, a reset connection, a timeout)
and Ray infrastructure losses (a worker or node died, an object was lost). Not transient: bad input and
bugs (ImagineIDError, ValueError, FileNotFoundError, ...): retrying them only delays the failure.
Ray's own `max_retries` handles a lost worker inside a fan-out first; this policy is the second line,
for a task whose Ray driver call itself failed. Tasks wrapped with it must be idempotent (ours are:
preprocessing skips done clips, training and generation resume).
"""

from __future__ import annotations

import errno

from prefect.tasks import exponential_backoff

RETRIES = 3  # attempts after the first
BACKOFF_SECONDS = 10.0  # first delay; then 20, 40 s, each ±50 % jitter
GPU_TAG = "gpu"  # `make deploy` creates a task concurrency limit on this tag (GPU_SLOTS)

TRANSIENT_ERRNOS = {
    errno.EIO,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.ESTALE,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ENOLCK,
}
# ray.exceptions names (matched by name so this module does not import Ray)
TRANSIENT_RAY_ERRORS = {
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "ObjectLostError",
    "OwnerDiedError",
    "ObjectFetchTimedOutError",
    "ObjectReconstructionFailedError",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "OutOfMemoryError",
    "RpcError",
    "RaySystemError",
}


def is_transient(error: BaseException) -> bool:
    """Whether a retry of the same work can succeed (see the module docstring)."""
    if any(cls.__name__ in TRANSIENT_RAY_ERRORS and cls.__module__.startswith("ray") for cls in type(error).__mro__):
        return True
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
        return True
    cause = getattr(error, "cause", None)  # ray.exceptions.RayTaskError wraps what the remote task raised
    return isinstance(cause, BaseException) and cause is not error and is_transient(cause)


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only transient failures."""
    error = getattr(state, "data", None)  # the task engine puts the raised exception here
    return isinstance(error, BaseException) and is_transient(error)


RETRY_TRANSIENT = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=BACKOFF_SECONDS),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}
