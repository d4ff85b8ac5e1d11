"""Frame generator: ldm + adapters stages, frozen base, pipeline modes and round trip (issue 5)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from imagineid.data.morphable import current_model
from imagineid.data.store import Store
from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline
from imagineid.runs.folder import RunDir
from imagineid.training.adapters import clip_heard_features
from imagineid.training.frame_data import FrameConditionDataset


@pytest.fixture(scope="module")
def trained(preprocessed: Path, trained_run: Path) -> tuple[Path, Path, dict]:
    rd = RunDir(trained_run)
    return preprocessed, trained_run, {stage: rd.done_metrics(stage) for stage in ("ldm", "adapters")}


@pytest.fixture(scope="module")
def batch(trained) -> dict:
    data, _, _ = trained
    store = Store(data)
    _, run, _ = trained
    ids = sorted(store.done_ids("clips"))[:1]
    dataset = FrameConditionDataset(data, ids, current_model(store), 64, heard=clip_heard_features(run, data, ids))
    items = [dataset[i] for i in range(2)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


def test_stages_write_the_base_adapters_and_pipeline(trained) -> None:
    _, run, results = trained
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (run / "ldm" / part).is_dir() and (run / "pipeline" / part).is_dir()
    for adapter in ("textual_inversion", "spatial_adapter", "blending_adapter"):
        assert (run / "adapters" / adapter / "config.json").exists()
    assert {"background_psnr_db", "background_psnr_no_blending_db", "frame_psnr_db"} <= set(results["adapters"])
    assert "vae_psnr_db" in results["ldm"]


def test_base_stays_frozen_while_adapters_train(trained) -> None:
    _, run, _ = trained
    for part in ("unet", "vae", "text_encoder"):
        assert _digest(run / "ldm" / part) == _digest(run / "pipeline" / part), part


def _args(batch: dict, invariant: bool) -> dict:
    args = dict(
        mesh=batch["mesh"], identity=batch["heard_identity"], emotion=batch["heard_emotion"], num_inference_steps=4
    )
    if invariant:
        args.update(reference=batch["reference"], neighbour=batch["neighbour"], blend_mask=batch["blend_mask"])
    return args


def test_round_trip_gives_identical_frames(trained, batch, tmp_path: Path) -> None:
    _, run, _ = trained
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    again = ImagineIDPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "copy"))
    for invariant in (False, True):
        a = pipe(**_args(batch, invariant), generator=torch.Generator().manual_seed(3))
        b = again(**_args(batch, invariant), generator=torch.Generator().manual_seed(3))
        assert a.shape == (2, 3, 64, 64)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_variable_mode_seed_reproduces_and_seeds_differ(trained, batch) -> None:
    _, run, _ = trained
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    one = {k: v[:1] for k, v in batch.items()}
    frames = [pipe(**_args(one, False), generator=torch.Generator().manual_seed(s)) for s in range(4)]
    repeat = pipe(**_args(one, False), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(frames[0], repeat)
    assert all((frames[i] - frames[j]).abs().mean() > 1e-3 for i in range(4) for j in range(i + 1, 4))


def test_invariant_inputs_without_a_reference_are_refused(trained, batch) -> None:
    _, run, _ = trained
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    args = _args(batch, False) | {"neighbour": batch["neighbour"]}
    with pytest.raises(ValueError, match="need a reference"):
        pipe(**args)


def test_generator_check_reports_every_metric_and_ablation(trained) -> None:
    from imagineid.evaluation.generator_check import check

    data, run, _ = trained
    report = check(run, data, clips=1, frames=3, steps=2)
    assert report["frames"] == 3
    for section in (report["invariant"], *report["ablations"].values()):
        assert 0.0 <= section["face_detection_rate"] <= 1.0
        assert section["background_psnr_db"] > 0
    assert set(report["ablations"]) == {"no_textual_inversion", "no_spatial_adapter", "no_blending", "pure_noise_start"}
    assert report["variable"]["same_seed_identical"] is True


def test_strength_starts_invariant_frames_from_the_noised_reference(trained, batch) -> None:
    from imagineid.training.ldm import psnr

    _, run, _ = trained
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    args = _args(batch, True) | {"num_inference_steps": 10, "paste": False}
    face = (batch["blend_mask"] > 0.5).float()
    cached = pipe.encode_latents(batch["reference"])  # (2, 4, 16, 16)
    with torch.no_grad():
        start = pipe.decode(cached, None, None).clamp(-1, 1)  # the reference as this (barely trained) VAE sees it
    close = {
        s: psnr(pipe(**args, strength=s, generator=torch.Generator().manual_seed(0)), start, face) for s in (0.1, 1.0)
    }
    assert close[0.1] > close[1.0] + 3  # one step from a lightly noised reference stays near it
    # A cached latent of the reference is what the pipeline encodes itself.
    torch.testing.assert_close(
        pipe(**args, strength=0.5, generator=torch.Generator().manual_seed(0)),
        pipe(**args, strength=0.5, init_latents=cached, generator=torch.Generator().manual_seed(0)),
    )
    with pytest.raises(ValueError, match="strength"):
        pipe(**args, strength=0.0)


def test_variable_items_are_unchanged_by_late_joining_invariant_items(trained, batch) -> None:
    _, run, _ = trained
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    mixed = pipe(**_args(batch, True), variable=torch.tensor([True, False]), latents=noise, strength=0.5)
    alone = pipe(**_args({k: v[:1] for k, v in batch.items()}, False), latents=noise[:1])
    torch.testing.assert_close(mixed[:1], alone, atol=2e-3, rtol=0)


def test_pipeline_speaks_diffusers_conventions(trained, batch, tmp_path: Path) -> None:
    """A standard model_index.json, torch_dtype honoured, output_type / return_dict, a per-step callback,
    unknown loading options refused, and schedulers the row-subset loop cannot drive refused."""
    import json

    import numpy as np
    from diffusers import DPMSolverMultistepScheduler

    from imagineid.pipelines.pipeline_imagineid import ImagineIDPipelineOutput

    _, run, _ = trained
    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    index = json.loads((pipe.save_pretrained(tmp_path / "copy") / "model_index.json").read_text())
    assert index["_class_name"] == "ImagineIDPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"][0] == "transformers" and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["spatial_adapter"] == ["imagineid.models.spatial_condition_adapter", "SpatialConditionAdapter"]
    assert "_diffusers_version" in index

    half = ImagineIDPipeline.from_pretrained(run / "pipeline", torch_dtype=torch.bfloat16)
    assert {p.dtype for p in half.unet.parameters()} == {torch.bfloat16}
    with pytest.raises(TypeError):
        ImagineIDPipeline.from_pretrained(run / "pipeline", variant="fp16")  # not silently dropped

    seen = []

    def callback(p, i, t, tensors):
        seen.append(i)
        return tensors

    args = _args(batch, invariant=True)
    tensor = pipe(**args, generator=torch.Generator().manual_seed(1), callback_on_step_end=callback)
    assert seen == list(range(pipe.invariant_start(4, 0.8), 4))  # invariant rows skip the first steps
    out = pipe(**args, generator=torch.Generator().manual_seed(1), output_type="np", return_dict=True)
    assert isinstance(out, ImagineIDPipelineOutput) and out.frames.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(out.frames, ((tensor + 1) / 2).permute(0, 2, 3, 1).numpy(), atol=1e-6)
    images = pipe(**args, generator=torch.Generator().manual_seed(1), output_type="pil")
    assert len(images) == 2 and images[0].size == (64, 64)

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler keeps multistep state"):
        pipe(**args)
