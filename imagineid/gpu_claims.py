"""Host-wide GPU claims, so that the local Ray of one run never hands out a card another run is using.

Why: a local Ray instance sees every GPU of the machine and gives its tasks `CUDA_VISIBLE_DEVICES` from
that set, so two runs on one host (a nightly generation and a training started by hand) would both put
work on GPU 0. Each run that starts a local Ray first claims its cards through one lock file per GPU
in a folder every run on the host shares. `flock` locks end with the process, however it ends, so a
killed run never leaves a card claimed. A run joined to a cluster (`--ray-address`) claims nothing:
the cluster's scheduler owns its GPUs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from imagineid.errors import ImagineIDError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "IMAGINEID_GPU_LOCK_DIR"  # default: <tmp>/imagineid-gpus, shared by every user of the host
WAIT_ENV = "IMAGINEID_GPU_WAIT_S"
GPU_WAIT_S = 1800.0  # how long a run waits for a free GPU before it gives up
POLL_S = 5.0


class GpuBusyError(ImagineIDError):
    """Every GPU of this host stayed claimed by other runs for the whole wait."""

    kind = "gpus_busy"


@dataclass
class GpuClaim:
    """The GPU ids (as in `CUDA_VISIBLE_DEVICES`) this process holds; held until it exits or releases."""

    ids: list[str] = field(default_factory=list)
    _files: dict[str, int] = field(default_factory=dict, repr=False)

    def release(self) -> None:
        for fd in self._files.values():
            os.close(fd)  # closing the file drops its flock
        self._files.clear()
        self.ids.clear()


def lock_dir() -> Path:
    folder = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "imagineid-gpus")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            folder.chmod(0o1777)  # every user's runs claim here; each may remove only its own files
        except OSError:
            pass
    return folder


def host_gpu_ids() -> list[str]:
    """The GPUs this process may use: `CUDA_VISIBLE_DEVICES` when set, else every card torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _try_lock(gpu: str) -> int | None:
    path = lock_dir() / f"gpu-{gpu.replace('/', '_')}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # another user's file: flock works on a read-only descriptor
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv)[:200]}\n".encode())
    except OSError:
        pass  # read-only: the claim holds, only the holder's name is not written
    return fd


def holders() -> dict[str, str]:
    """GPU id → what the lock file says of the run that holds (or last held) it."""
    out = {}
    for path in sorted(lock_dir().glob("gpu-*.lock")):
        try:
            out[path.stem.removeprefix("gpu-")] = path.read_text().strip() or "?"
        except OSError:
            continue
    return out


def claim_gpus(wanted: int | None, wait_s: float | None = None, held: GpuClaim | None = None) -> GpuClaim:
    """Claim up to `wanted` free GPUs of this host (None: every free one). Waits up to `wait_s` (default
    `$IMAGINEID_GPU_WAIT_S`, else 30 min) while every card is claimed by other runs, then raises
    GpuBusyError naming them. `held` adds to a claim this process already has.

    A run that gets fewer cards than it asked for goes on with those (and says so): a generation on 2 of
    4 GPUs is better than one that waits all night for the other run to finish.
    """
    claim = held or GpuClaim()
    if wanted == 0:
        return claim  # before host_gpu_ids: a CPU-only run never imports torch for this
    ids = host_gpu_ids()
    if not ids:
        return claim
    target = len(ids) if wanted is None else min(int(wanted), len(ids))
    wait_s = float(os.environ.get(WAIT_ENV, GPU_WAIT_S)) if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        for gpu in ids:
            if len(claim.ids) >= target:
                break
            if gpu in claim.ids:
                continue
            fd = _try_lock(gpu)
            if fd is not None:
                claim.ids.append(gpu)
                claim._files[gpu] = fd
        if claim.ids:
            if len(claim.ids) < target:
                log.warning("using %d of %d GPUs: other runs hold the rest", len(claim.ids), target)
            return claim
        busy = ", ".join(f"GPU {g}: {who}" for g, who in holders().items() if g in ids)
        if time.monotonic() >= deadline:
            raise GpuBusyError(
                f"every GPU of this host stayed claimed by other runs for {wait_s:g} s ({busy}); wait for them, "
                f"set CUDA_VISIBLE_DEVICES, or join a cluster with --ray-address (docs/operations.md § GPUs)"
            )
        if not told:
            log.warning("every GPU is claimed by another run (%s); waiting up to %g s", busy, wait_s)
            told = True
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
