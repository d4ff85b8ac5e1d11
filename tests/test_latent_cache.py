"""The adapters stage reads the frozen VAE's latents from RUN/latents/ instead of encoding every step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imagineid.data.store import Store
from imagineid.media import iter_frames
from imagineid.models.ldm import load_components
from imagineid.runs.folder import RunDir
from imagineid.training.latent_cache import LatentCache, sample_latents


def test_the_cache_holds_the_encoders_posterior_of_every_crop_and_is_filled_once(
    trained_run: Path, preprocessed: Path, tmp_path: Path
) -> None:
    vae = load_components(trained_run / "ldm").vae.eval()
    store = Store(preprocessed)
    clip_ids = sorted(store.done_ids("clips"))[:2]
    cache = LatentCache.for_vae(RunDir(tmp_path / "run"), vae, 64)
    cache.ensure(store, clip_ids)
    stamps = {c: cache.path(c).stat().st_mtime_ns for c in clip_ids}
    cache.ensure(store, clip_ids)  # a rerun (or a resumed stage) encodes nothing again
    assert {c: cache.path(c).stat().st_mtime_ns for c in clip_ids} == stamps

    crops = store.read_table("clips", ["clip_id", "crops"]).to_pylist()
    path = store.root / next(r["crops"] for r in crops if r["clip_id"] == clip_ids[0])
    frames = np.stack(list(iter_frames(path, size=64)))  # (T, 64, 64, 3)
    images = torch.from_numpy(frames[5:9]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        dist = vae.encode(images).latent_dist
    posterior = cache.read(clip_ids[0], 5, 4)  # (4, 2, 4, 16, 16) fp16
    assert posterior.shape == (4, 2, *dist.mean.shape[1:]) and posterior.dtype == np.float16
    assert np.abs(posterior[:, 0] - dist.mean.numpy()).max() < 2e-2 * max(1.0, float(dist.mean.abs().max()))
    assert np.allclose(posterior[:, 1], dist.std.numpy(), rtol=2e-2, atol=1e-3)
    z = sample_latents(torch.from_numpy(posterior), scale=2.0)
    assert z.shape == dist.mean.shape and torch.isfinite(z).all()
    assert LatentCache.for_vae(RunDir(tmp_path / "run"), vae, 32).folder != cache.folder  # another size, no mix-up


def test_the_trained_runs_adapters_stage_trained_from_cached_latents(trained_run: Path) -> None:
    split = RunDir(trained_run).split()
    cached = {p.stem for p in (trained_run / "latents").glob("*/*.npy")}
    assert cached == set(split["train"])
