"""Data-parallel replicas of one stage: which worker this is, its share of each batch, averaged gradients.

Ray Train starts the workers and their process group (gloo on CPUs, NCCL on GPUs); this module is what
the shared loop does with it. `batch_size` stays the *global* batch: every worker draws the same batch
from the same seeded stream and keeps its slice, so N workers at batch B train as one worker at batch B
and a run's results do not depend on how many workers it had. Gradients are averaged by one flat
all-reduce after `backward()` rather than by wrapping the model in `DistributedDataParallel`: the stage
step functions call their submodules directly (the adapters stage trains a bundle of three), which a
DDP wrapper's forward hook would not see. The same is true of the replicas' agreement check: after
each step every worker compares a digest of its parameters, so a replica that drifts stops the stage
instead of silently training a different model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from imagineid.errors import ImagineIDError


class ReplicaDivergenceError(ImagineIDError):
    """The workers of a data-parallel stage no longer hold the same parameters."""

    kind = "replicas_diverged"


@dataclass(frozen=True)
class Replica:
    """This process's place among the stage's workers (rank 0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Replica:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, weights and validation figures."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def shard(self, batches: Iterable[dict]) -> Iterator[dict]:
        """This worker's slice of each global batch: rows [rank·B/N, (rank+1)·B/N) of every tensor."""
        for batch in batches:
            if not self.parallel:
                yield batch
                continue
            rows = next(len(v) for v in batch.values() if torch.is_tensor(v))
            if rows % self.world:
                raise ImagineIDError(f"a batch of {rows} cannot be split evenly among {self.world} workers")
            n = rows // self.world
            lo = self.rank * n
            yield {k: v[lo : lo + n] if torch.is_tensor(v) else v for k, v in batch.items()}

    def broadcast(self, params: Sequence[torch.Tensor]) -> None:
        """Rank 0's parameters to every worker (a fresh start and a resume begin identical)."""
        if not self.parallel or not params:
            return
        flat = _flatten_dense_tensors([p.data for p in params])
        dist.broadcast(flat, src=0)
        for p, value in zip(params, _unflatten_dense_tensors(flat, [p.data for p in params])):
            p.data.copy_(value)

    def average_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Each gradient replaced by its mean over the workers (one all-reduce of all of them)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.parallel or not grads:
            return
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for g, value in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(value)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Logged figures averaged over the workers: the loss of the whole global batch."""
        if not self.parallel or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_wire())
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def check_agree(self, params: Sequence[torch.Tensor], step: int) -> None:
        """Raise ReplicaDivergenceError unless every worker holds bit-identical parameters."""
        if not self.parallel:
            return
        with torch.no_grad():  # on the parameters' device: nothing but two numbers leaves it
            flat = torch.cat([p.detach().reshape(-1).double() for p in params])
            weights = torch.arange(len(flat), dtype=torch.float64, device=flat.device).remainder_(9973).add_(1)
            digest = torch.stack([flat.sum(), (flat * weights).sum()]).to(_wire())  # (2,): a changed value shows
        gathered = [torch.zeros_like(digest) for _ in range(self.world)]
        dist.all_gather(gathered, digest)
        if any(not torch.equal(g, gathered[0]) for g in gathered[1:]):
            raise ReplicaDivergenceError(
                f"after step {step} the {self.world} workers hold different parameters "
                f"(digests {[g.tolist() for g in gathered]}); the stage stops rather than train on"
            )


def _wire() -> torch.device:
    """Where collective operands must live: CUDA for NCCL, host memory for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
