"""Continuous batching for autoregressive frame generation (docs/architecture.md §5).

B slots. Each tick runs the *current* frame of every active clip through one pipeline call, so all
denoising steps of the tick share one UNet batch: a clip's first frame in variable mode (no reference:
the seed imagines the person) next to other clips' later frames in invariant mode (reference and
background = that clip's frame 1, neighbour = its previous frame with the mouth masked). When a clip
writes its last frame, its slot goes to a queued clip at once, so the batch stays full until the queue
runs dry. Of the next B queued clips the longest starts first: as the queue runs dry, the clips left
running then end close together instead of one long late clip running on in a nearly empty batch
(fewer ticks, fuller batches: `benchmarks/generate.py`). B = 1 is the plain per-clip loop, in queue order.

Each clip draws its initial noise once from its own seeded generator and reuses it for every frame:
results do not depend on which clips share a batch, and a still noise pattern keeps texture from
flickering between frames. Frame 1 decides the whole video (later frames copy its appearance), so an
optional `accept_first(frame) -> bool` (e.g. "a face detector finds a face") can reject it: the clip
then draws its next noise from the same generator and stays at frame 1 for another tick, at most
`first_frame_retries` times; still deterministic per seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from imagineid.generation.conditions import ClipPlan
from imagineid.models.spatial_condition_adapter import mask_mouth
from imagineid.pipelines.pipeline_imagineid import DEFAULT_STRENGTH, ImagineIDPipeline
from imagineid.precision import autocast
from imagineid.precision import resolve as resolve_precision


class FrameSink(Protocol):
    def write(self, frame: np.ndarray) -> None: ...
    def close(self) -> int: ...
    def abort(self) -> None: ...


@dataclass
class Job:
    """One video to generate: its conditions, its seed and where its frames go."""

    key: str
    seed: int
    plan: ClipPlan
    open_sink: Callable[[], FrameSink]
    info: dict = field(default_factory=dict)


@dataclass
class _Slot:
    job: Job
    sink: FrameSink
    noise: torch.Tensor  # (1, 4, h, w)
    prompt: torch.Tensor  # (1, L, D)
    generator: torch.Generator | None = None  # the clip's own noise source
    t: int = 0
    attempts: int = 0  # frame-1 candidates tried
    first: torch.Tensor | None = None  # (3, S, S) frame 1, in [-1, 1]
    first_latent: torch.Tensor | None = None  # (1, 4, h, w) frame 1 encoded, where later frames start
    previous: torch.Tensor | None = None  # (3, S, S)
    previous_mouth: torch.Tensor | None = None  # (1, S, S) bool


@dataclass
class JobResult:
    job: Job
    frames: int
    error: str | None = None
    first_frame_attempts: int = 1


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    return ((frames.permute(0, 2, 3, 1).float().cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


class ContinuousBatcher:
    """Runs jobs through the pipeline B clips at a time; yields a `JobResult` as each clip finishes."""

    def __init__(
        self,
        pipe: ImagineIDPipeline,
        batch_size: int = 8,
        steps: int = 20,
        guidance: float = 2.0,
        accept_first: Callable[[np.ndarray], bool] | None = None,
        first_frame_retries: int = 0,
        strength: float = DEFAULT_STRENGTH,
        precision: str = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.pipe, self.batch_size, self.steps, self.guidance = pipe, batch_size, steps, guidance
        self.strength = strength
        self.accept_first, self.first_frame_retries = accept_first, first_frame_retries
        self.device = pipe.unet.device
        self.precision = resolve_precision(precision, self.device, batch_size)  # "auto" → the fastest here
        self.frames_done = 0  # frames generated (all clips)
        self.ticks = 0  # pipeline calls: one per frame of the longest chain of clips through a slot

    def _start(self, job: Job) -> _Slot:
        generator = torch.Generator().manual_seed(job.seed)
        noise = torch.randn(self.pipe.latent_shape(1, job.plan.size), generator=generator)
        identity = torch.from_numpy(job.plan.identity)[None].to(self.device)
        emotion = torch.from_numpy(job.plan.emotion)[None].to(self.device)
        with torch.no_grad():
            prompt = self.pipe.prompt_embeddings(identity, emotion)  # (1, L, D)
        return _Slot(job=job, sink=job.open_sink(), noise=noise, prompt=prompt, generator=generator)

    def _tick(self, slots: list[_Slot]) -> torch.Tensor:
        """The current frame of every slot in one pipeline call → (B, 3, S, S)."""
        meshes, blends, mouths = zip(*(s.job.plan.frame(s.t) for s in slots))
        dev = self.device
        mesh = torch.from_numpy(np.stack(meshes)).permute(0, 3, 1, 2).float().to(dev) / 127.5 - 1.0  # (B, 3, S, S)
        blend = torch.from_numpy(np.stack(blends))[:, None].to(dev)  # (B, 1, S, S)
        zeros = torch.zeros_like(mesh[0])
        reference = torch.stack([s.first if s.first is not None else zeros for s in slots])  # (B, 3, S, S)
        neighbour = torch.stack(
            [
                mask_mouth(s.previous[None], s.previous_mouth[None].float())[0] if s.previous is not None else zeros
                for s in slots
            ]
        )
        variable = torch.tensor([s.t == 0 for s in slots], device=dev)
        fresh = [s for s in slots if s.t > 0 and s.first_latent is None]
        if fresh:  # frame 1 was accepted last tick: encode it once for all the clip's later frames
            with torch.no_grad():
                encoded = self.pipe.encode_latents(torch.stack([s.first for s in fresh]))  # (n, 4, h, w)
            for s, latent in zip(fresh, encoded):
                s.first_latent = latent[None]
        # (B, 4, h, w) where invariant items start; variable items ignore theirs (their noise fills the row)
        init = torch.cat([s.noise if s.first_latent is None else s.first_latent for s in slots])
        with autocast(self.precision, self.device):
            frames = self.pipe(
                mesh=mesh,
                identity=torch.from_numpy(np.stack([s.job.plan.identity for s in slots])).to(dev),
                reference=reference,
                neighbour=neighbour,
                blend_mask=blend,
                variable=variable,
                prompt_embeds=torch.cat([s.prompt for s in slots]),
                latents=torch.cat([s.noise for s in slots]),
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                strength=self.strength,
                init_latents=init,
            ).float()
        for slot, frame, mouth in zip(slots, frames, mouths):
            if slot.t == 0:
                slot.attempts += 1
                slot.first = frame
            slot.previous = frame
            slot.previous_mouth = torch.from_numpy(mouth)[None].to(dev)
        return frames

    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        queue = iter(jobs)
        ready: list[Job] = []  # the next `batch_size` jobs of the queue, planned, not started
        slots: list[_Slot] = []
        while True:
            # 1. Fill free slots, longest clip of the look-ahead first (a clip that cannot start is
            #    reported, not fatal)
            while len(slots) < self.batch_size:
                ready += itertools.islice(queue, self.batch_size - len(ready))
                if not ready:
                    break
                job = ready.pop(max(range(len(ready)), key=lambda k: ready[k].plan.n_frames))
                try:
                    slots.append(self._start(job))
                except Exception as err:  # noqa: BLE001 - one bad clip must not stop the batch
                    yield JobResult(job, 0, f"{type(err).__name__}: {err}")
            if not slots:
                return
            # 2. One frame of every active clip
            images = to_uint8(self._tick(slots))
            still: list[_Slot] = []
            for slot, image in zip(slots, images):
                result = self._advance(slot, image)
                if result is None:
                    still.append(slot)
                else:
                    yield result
            self.frames_done += len(slots)
            self.ticks += 1
            # 3. Finished clips free their slots
            slots = still

    def _advance(self, slot: _Slot, image: np.ndarray) -> JobResult | None:
        """Write the frame; → a result when the clip is finished (or its writer failed)."""
        if (
            slot.t == 0
            and self.accept_first is not None
            and slot.attempts <= self.first_frame_retries
            and not self.accept_first(image)
        ):
            slot.noise = torch.randn(slot.noise.shape, generator=slot.generator)  # next candidate, same tick count
            return None
        try:
            slot.sink.write(image)
            slot.t += 1
            if slot.t < slot.job.plan.n_frames:
                return None
            return JobResult(slot.job, slot.sink.close(), first_frame_attempts=slot.attempts)
        except Exception as err:  # noqa: BLE001 - a failing writer loses this clip only
            slot.sink.abort()
            return JobResult(slot.job, slot.t, f"{type(err).__name__}: {err}")
