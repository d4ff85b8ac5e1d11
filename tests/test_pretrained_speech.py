"""Optional wav2vec2 / HuBERT features from a local transformers folder, aligned to the log-mel grid."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import copy_videos
from standins import cli, write_speech_model

from imagineid.audio.features import mel_for_frames
from imagineid.audio.speech_model import SpeechEncoder, align
from imagineid.errors import MalformedWeightsError, MissingWeightsError


@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory):
    return write_speech_model(tmp_path_factory.mktemp("speech") / "wav2vec2")


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_features_on_the_mel_grid(kind, tmp_path) -> None:
    encoder = SpeechEncoder.load(write_speech_model(tmp_path / kind, kind))
    assert encoder.normalize == (kind == "wav2vec2")  # from preprocessor_config.json's do_normalize
    wave = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    frames = encoder.encode(wave)
    assert frames.shape == ((len(wave) - 400) // 320 + 1, 32)  # 50 Hz
    rows = encoder.features_for_frames(wave, n_frames=50)
    assert rows.shape == mel_for_frames(wave, 50).shape[:1] + (32,) == (200, 32)  # same rows as the log-mel
    per_frame = encoder.features_for_frames(wave, n_frames=50, per_frame=True)
    assert per_frame.shape == (50, 32) and np.allclose(per_frame[3], rows[12:16].mean(axis=0), atol=1e-6)


def test_align_interpolates_at_frame_centres() -> None:
    frames = np.arange(10, dtype=np.float32)[:, None]  # value = encoder frame index, centred on 0.0125 + 0.02 i s
    rows = align(frames, 20)[:, 0]
    assert rows[0] == 0 and np.isclose(rows[5], (0.05 - 0.0125) / 0.02) and rows[-1] <= 9


def test_long_audio_is_chunked_to_the_same_length(wav2vec2) -> None:
    encoder = SpeechEncoder.load(wav2vec2)
    wave = np.random.default_rng(1).normal(0, 0.1, 16000 * 3)
    whole, chunked = encoder.encode(wave), encoder.encode(wave, chunk_s=1.0, context_s=0.5)
    assert whole.shape == chunked.shape and np.isfinite(chunked).all()


def test_missing_and_foreign_folders(wav2vec2, tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match=r"config\.json.*docs/pretrained.md § wav2vec2 / HuBERT"):
        SpeechEncoder.load(tmp_path / "nothing")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((wav2vec2 / "config.json").read_text())
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        SpeechEncoder.load(tmp_path / "noweights")
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(MalformedWeightsError, match="not a wav2vec2-style"):
        SpeechEncoder.load(tmp_path / "bert")


def test_preprocess_speech_model_adds_aligned_features(small_corpus, wav2vec2, tmp_path) -> None:
    video = copy_videos(small_corpus, tmp_path / "src")[0]
    data = tmp_path / "data"
    result = cli("preprocess", video, "--out", data, "--workers", "1", "--speech-model", wav2vec2)
    assert result.exit_code == 0, result.stderr
    audio = pq.read_table(data / "audio").to_pylist()[0]
    assert len(audio["speech"]) == len(audio["log_mel"]) == audio["n_mel"] and len(audio["speech"][0]) == 32
    missing = cli("preprocess", video, "--out", tmp_path / "d2", "--speech-model", tmp_path / "absent")
    lines = missing.stderr.strip().splitlines()
    assert missing.exit_code != 0 and len(lines) == 1 and "docs/pretrained.md § wav2vec2 / HuBERT" in lines[0]
