"""`train --profile sd15 --base-model STANDIN --stages adapters` and a one-frame generation, on a stand-in
Stable Diffusion 1.5 folder (diffusers layout, SD 1.5 block structure, tiny widths)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import copy_videos
from safetensors.torch import load_file
from standins import cli, write_sd15

from imagineid.errors import MissingWeightsError
from imagineid.models.clip_tokenizer import PseudoWordCLIPTokenizer
from imagineid.models.ldm import image_size, load_sd15


def imagineid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imagineid.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return write_sd15(tmp_path_factory.mktemp("sd15") / "stable-diffusion-v1-5")


@pytest.fixture(scope="module")
def data(small_corpus, tmp_path_factory):
    """Two clips of two speakers (one for training, one held out), PCA coefficients."""
    from imagineid.preprocessing import PreprocessConfig, preprocess

    videos = sorted((small_corpus / "videos").glob("*.mp4"))
    folder = tmp_path_factory.mktemp("sd15data")
    chosen = [videos[0].name, videos[-1].name]  # first and last speaker
    copy_videos(small_corpus, folder / "src", chosen)
    preprocess([folder / "src"], folder / "data", PreprocessConfig(), workers=1, progress=False)
    return folder / "data"


def test_load_sd15_uses_the_folder_tokenizer_plus_pseudo_words(sd15) -> None:
    base = load_sd15(sd15)
    tok = base.tokenizer
    assert isinstance(tok, PseudoWordCLIPTokenizer) and len(tok) > 1000 and tok.model_max_length == 77
    assert tok.identity_tokens == ["<id0>", "<id1>", "<id2>", "<id3>"] and tok.emotion_tokens[0] == "<emo0>"
    ids = tok(["a photo of a <id0> person"])["input_ids"]
    assert ids.shape == (1, 77) and tok.convert_tokens_to_ids("<id0>") in ids[0].tolist()
    assert tok.tokenize("photo person") == ["photo</w>", "person</w>"]  # real BPE merges, not characters
    rows = base.text_encoder.get_input_embeddings().weight
    original = load_file(str(sd15 / "text_encoder" / "model.safetensors"))
    table = next(v for k, v in original.items() if k.endswith("token_embedding.weight"))
    assert rows.shape[0] == len(tok) == table.shape[0] + 8 and torch.equal(rows[: table.shape[0]], table)
    assert image_size(base) == 64  # UNet sample size 8 × VAE factor 8 (512 for the real SD 1.5)


def test_train_sd15_adapters_then_generate_one_frame(sd15, data, tmp_path) -> None:
    from imagineid.pipelines.pipeline_imagineid import ImagineIDPipeline

    run = tmp_path / "run"
    result = imagineid(
        "train",
        str(data),
        "--out",
        str(run),
        "--profile",
        "sd15",
        "--base-model",
        str(sd15),
        "--stages",
        "identity,content,emotion,ldm,adapters",
        "--max-steps",
        "1",
        "--no-ray",
        "--voice-variants",
        "1",
    )  # the adapters learn from what the disentangler hears
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ldm not trained" in result.stdout and "adapters trained" in result.stdout
    assert not (run / "ldm").exists() and (run / "adapters" / "done.json").exists()
    # The base stays frozen: the saved pipeline's UNet is byte-identical to the folder's.
    saved, original = (
        load_file(str(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")),
        load_file(str(sd15 / "unet" / "diffusion_pytorch_model.safetensors")),
    )
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)

    pipe = ImagineIDPipeline.from_pretrained(run / "pipeline")
    assert isinstance(pipe.tokenizer, PseudoWordCLIPTokenizer)
    size = pipe.unet.config.sample_size * 8
    ti = pipe.textual_inversion.config
    generator = torch.Generator().manual_seed(0)
    frame = pipe(
        torch.zeros(1, 3, size, size),
        torch.zeros(1, ti.identity_dim),
        torch.zeros(1, ti.emotion_dim),
        num_inference_steps=2,
        generator=generator,
    )
    assert frame.shape == (1, 3, 64, 64) and torch.isfinite(frame).all()


def test_sd15_missing_files_are_one_line(sd15, tmp_path) -> None:
    def one_line(*extra: str) -> str:
        result = cli(
            "train", tmp_path / "data", "--out", tmp_path / "run", "--profile", "sd15", "--stages", "adapters", *extra
        )
        lines = result.stderr.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1, result.stderr
        assert "docs/pretrained.md § Stable Diffusion 1.5" in lines[0]
        return lines[0]

    assert "--base-model" in one_line()
    assert "no-sd-here" in one_line("--base-model", str(tmp_path / "no-sd-here"))
    partial = tmp_path / "partial"
    for part in ("text_encoder", "tokenizer", "scheduler", "vae"):
        shutil.copytree(sd15 / part, partial / part)
    (partial / "unet").mkdir()
    (partial / "unet" / "config.json").write_text((sd15 / "unet" / "config.json").read_text())
    assert "unet/diffusion_pytorch_model.safetensors" in one_line("--base-model", str(partial))
    with pytest.raises(MissingWeightsError, match="partial"):
        load_sd15(partial)
