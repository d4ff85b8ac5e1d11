"""Inference precision: what "auto" picks per device, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imagineid import precision
from imagineid.precision import autocast, resolve


def test_auto_picks_fp16_on_gpus_and_bf16_only_for_big_batches_on_cpus_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu, big = torch.device("cpu"), precision.CPU_BF16_MIN_BATCH
    assert resolve("auto", torch.device("cuda"), 1) == "fp16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve("auto", cpu, big) == "bf16" and resolve("auto", cpu, 16) == "bf16"
    assert resolve("auto", cpu, big - 1) == "fp32" and resolve("auto", cpu, 1) == "fp32"  # the per-clip loop
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve("auto", cpu, 16) == "fp32"
    assert resolve("bf16", cpu, 1) == "bf16"  # asked for explicitly: allowed, if slow


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux CPU flags")
def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    expected = "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
    assert precision.cpu_has_native_bf16() is expected


def test_unknown_names_and_fp16_on_a_cpu_are_refused() -> None:
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        resolve("half", torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        resolve("fp16", torch.device("cpu"), 16)


def test_autocast_computes_matmuls_in_the_chosen_type() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("bf16", torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert (a @ b).dtype == torch.float32


def test_training_precision_is_bf16_or_fp16_on_gpus_and_fp32_on_cpus(monkeypatch) -> None:
    from imagineid.precision import train_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train_precision("auto", cpu) == "fp32" and train_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert train_precision("auto", gpu) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert train_precision("auto", gpu) == "fp16"  # older GPUs: fp16 with loss scaling
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        train_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        train_precision("int8", cpu)


def test_a_stage_trains_under_bf16_autocast_with_fp32_weights(trained_run: Path, preprocessed: Path, tmp_path) -> None:
    import json
    import shutil

    from safetensors.numpy import load_file

    from imagineid.training.config import TrainConfig
    from imagineid.training.run import train

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    shutil.rmtree(run / "content")
    config = TrainConfig.from_dict({"precision": "bf16", "content": {"steps": 3, "batch_size": 4}})
    metrics = train(preprocessed, run, "content", config, use_ray=False, progress=False)["content"]
    assert all(v == v for k, v in metrics.items() if k.startswith("train_"))  # finite losses
    weights = load_file(next((run / "content").glob("*.safetensors")))
    assert {str(w.dtype) for w in weights.values()} == {"float32"}  # autocast computes in bf16, stores fp32
    assert json.loads((run / "train_config.json").read_text())["precision"] == "bf16"
