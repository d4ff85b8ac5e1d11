"""The optimisation loop every stage shares: AdamW + cosine decay, resumable checkpoints, progress.

A stage supplies `step_fn(batch) -> (loss, logs)`; the loop owns device placement, mixed precision
(`precision.train_precision`: bf16 or fp16 autocast on GPUs, a GradScaler for fp16; fp32 on CPUs unless
asked), gradient accumulation, data-parallel replicas, checkpoints and resume.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from imagineid.precision import autocast, train_precision
from imagineid.runs.folder import RunDir
from imagineid.runs.tracking import LOG_EVERY, StageTracker
from imagineid.training.config import StageConfig
from imagineid.training.replicas import Replica


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Earlier stages are frozen: eval mode (no dropout) and no gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _forever(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def _split(batch: dict, parts: int) -> list[dict]:
    """A batch as `parts` equal micro-batches (rows of every tensor)."""
    if parts == 1:
        return [batch]
    rows = next(len(v) for v in batch.values() if torch.is_tensor(v))
    n = rows // parts
    return [{k: v[i * n : (i + 1) * n] if torch.is_tensor(v) else v for k, v in batch.items()} for i in range(parts)]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def fit(
    stage: str,
    model: torch.nn.Module,
    loader: Iterable,
    step_fn: Callable[[dict], tuple[torch.Tensor, dict]],
    config: StageConfig,
    run: RunDir,
    checkpoint_every: int,
    progress: bool = True,
    precision: str = "auto",
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict:
    """Train `model` for `config.steps` steps, resuming from RUN/<stage>/checkpoint.pt if present.

    Under Ray Train (several workers, see `replicas.py`) each worker trains on its slice of every
    global batch with gradients averaged over all of them, and only rank 0 writes; the logged losses
    are those of the whole global batch."""
    replica = Replica.current()
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / max(config.steps, 1)))
    )
    dtype = train_precision(precision, device)  # fp32 | bf16 | fp16 (autocast; the weights stay fp32)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")  # fp16 alone needs loss scaling
    start = 0
    state = run.load_checkpoint(stage)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
        if replica.is_main:
            run.log({"stage": stage, "event": "resumed", "step": start})
    replica.broadcast(params)
    if replica.rank > 0:  # the data stream is shared; dropout and augmentation draw per worker
        torch.manual_seed(torch.initial_seed() + 7919 * replica.rank)
    tracker = StageTracker(run, stage, start_step=start) if replica.is_main else None
    model.train()
    logs: dict = {}
    batches = replica.shard(_forever(loader))
    bar = tqdm(
        range(start, config.steps),
        desc=stage,
        unit="step",
        disable=not progress or not replica.is_main,
        initial=start,
        total=config.steps,
    )
    began = time.perf_counter()
    for step in bar:
        batch = to_device(next(batches), device)
        opt.zero_grad(set_to_none=True)
        parts = []
        for micro in _split(batch, config.accumulate):  # gradients add up over the micro-batches
            with autocast(dtype, device):
                loss, part = step_fn(micro)
            scaler.scale(loss / config.accumulate).backward()
            parts.append(part)
        logs = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
        replica.average_gradients(params)  # before unscaling: every worker shares one fp16 scale
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        replica.check_agree(params, step + 1)
        if (step + 1) % 20 == 0:
            bar.set_postfix(loss=f"{logs.get('loss', loss.item()):.3f}")
        if (step + 1) % LOG_EVERY == 0 or step + 1 == config.steps:
            logs = replica.mean(logs)
            if tracker:
                tracker.scalars(step + 1, {**logs, "lr": sched.get_last_lr()[0]})
        if (step + 1) % checkpoint_every == 0 and step + 1 < config.steps and replica.is_main:
            run.save_checkpoint(
                stage,
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step + 1,
                },
            )
            loss_now = float(logs.get("loss", loss.item()))
            elapsed = round(time.perf_counter() - began, 3)  # seconds since this run of the loop began: throughput
            run.log({"stage": stage, "event": "checkpoint", "step": step + 1, "loss": loss_now, "seconds": elapsed})
            if on_checkpoint:
                on_checkpoint(step + 1)
    if tracker:
        tracker.close()
    if replica.parallel and replica.is_main:
        run.log({"stage": stage, "event": "replicas_agreed", "workers": replica.world, "steps": config.steps - start})
    replica.barrier()
    model.eval()
    return {k: float(v) for k, v in logs.items()}
