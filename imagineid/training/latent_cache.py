"""The frozen VAE's latents of every training crop, computed once and kept in RUN/latents/, so that the
adapters stage's steps never run the VAE encoder again (on a GPU at 512 px it is a large share of a step).

    cache = LatentCache.for_vae(run, vae, size)
    cache.ensure(store, clip_ids)            # encodes the clips that have no file yet
    mean, std = cache.read(clip_id, start, count)   # (count, 4, s, s) fp16 each, memory-mapped

Each clip's file holds the posterior's mean and std in fp16, (T, 2, 4, s, s); a step draws
z0 = mean + std · ε as the encoder's own `latent_dist.sample()` does. The folder is named by a digest
of the VAE's weights and the image size, so a different base or size never reads stale latents.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imagineid.data.store import Store
from imagineid.media import iter_frames
from imagineid.runs.folder import RunDir

ENCODE_BATCH = 16  # crops per VAE encoder call while filling the cache


def _vae_digest(vae: torch.nn.Module, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    for name, tensor in sorted(vae.encoder.state_dict().items()) + sorted(vae.quant_conv.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache:
    def __init__(self, folder: Path, vae: torch.nn.Module, size: int) -> None:
        self.folder, self.vae, self.size = Path(folder), vae, size

    @classmethod
    def for_vae(cls, run: RunDir, vae: torch.nn.Module, size: int) -> LatentCache:
        return cls(run.latents / f"{_vae_digest(vae, size)}-{size}px", vae, size)

    def path(self, clip_id: str) -> Path:
        return self.folder / f"{clip_id}.npy"

    @torch.no_grad()
    def ensure(self, store: Store, clip_ids: list[str], progress: bool = False) -> None:
        """Encode every clip of `clip_ids` that has no file yet (atomic writes: a killed fill resumes)."""
        todo = [c for c in clip_ids if not self.path(c).exists()]
        if not todo:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        crops = {r["clip_id"]: r["crops"] for r in store.read_table("clips", ["clip_id", "crops"]).to_pylist()}
        device = next(self.vae.parameters()).device
        dtype = next(self.vae.parameters()).dtype
        for clip_id in tqdm(todo, desc="latent cache", unit="clip", disable=not progress):
            parts, batch = [], []
            for frame in iter_frames(store.root / crops[clip_id], size=self.size):
                batch.append(frame)
                if len(batch) == ENCODE_BATCH:
                    parts.append(self._encode(batch, device, dtype))
                    batch = []
            if batch:
                parts.append(self._encode(batch, device, dtype))
            tmp = self.folder / f".tmp-{uuid.uuid4().hex}.npy"
            np.save(tmp, np.concatenate(parts))  # (T, 2, 4, s, s) fp16
            os.replace(tmp, self.path(clip_id))

    def _encode(self, frames: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> np.ndarray:
        images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, S, S)
        dist = self.vae.encode(images.to(device, dtype)).latent_dist
        return torch.stack([dist.mean, dist.std], 1).to(torch.float16).cpu().numpy()  # (B, 2, 4, s, s)

    def read(self, clip_id: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """(count, 2, 4, s, s) fp16: mean and std of frames [start, start + count), read from a memory map."""
        table = np.load(self.path(clip_id), mmap_mode="r")
        return np.array(table[start : None if count is None else start + count])


def sample_latents(posterior: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 2, 4, s, s) cached mean / std → z0 (B, 4, s, s) · scale, drawn as `latent_dist.sample()` draws."""
    mean, std = posterior[:, 0].float(), posterior[:, 1].float()
    return (mean + std * torch.randn_like(mean)) * scale
