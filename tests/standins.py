"""Stand-in pretrained files in each official format, with small random weights (tests only).

Nothing here is real FLAME / DECA / FAN / SD / wav2vec2 data: shapes and key layouts follow the official
files so the loaders run their real code paths; sizes are cut down where the format allows.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from imagineid.face.mesh_render import CANONICAL_FACE

N_EXPRESSION_MOUTH = 3  # stand-in expression components 0..2 move only the lower face
NOSE_BOTTOM = 33


class _FakeChumpy:
    """Registers a `chumpy.ch.Ch` class while a pickle is written, so the file names chumpy like FLAME's."""

    def __enter__(self) -> type:
        module = types.ModuleType("chumpy.ch")

        class Ch:  # the pickled state is the instance __dict__, as chumpy's __getstate__ gives it
            pass

        Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
        module.Ch = Ch
        self._saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), module
        return Ch

    def __exit__(self, *exc) -> None:
        for key, value in self._saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def _grid_mesh(nx: int = 13, ny: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """A slightly curved face-sized sheet (metres, y up): vertices (V, 3), triangles (F, 3)."""
    xs, ys = np.linspace(-0.09, 0.09, nx), np.linspace(-0.11, 0.09, ny)
    gx, gy = np.meshgrid(xs, ys)
    verts = np.stack([gx, gy, 0.05 - 2.0 * gx**2], axis=-1).reshape(-1, 3)
    faces = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a, b, c, d = j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1
            faces += [(a, b, d), (a, d, c)]
    return verts.astype(np.float64), np.array(faces, np.uint32)


def _embed(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face index and barycentric coordinates of each 2D point (x, y) on the sheet."""
    idx, bary = [], []
    for p in points:
        for f, tri in enumerate(faces):
            a, b, c = verts[tri][:, :2]
            m = np.array([b - a, c - a]).T
            u, v = np.linalg.solve(m, p - a)
            if u >= -1e-9 and v >= -1e-9 and u + v <= 1 + 1e-9:
                idx.append(f)
                bary.append((1 - u - v, u, v))
                break
        else:
            raise AssertionError(f"landmark {p} is off the stand-in mesh")
    return np.array(idx, np.int64), np.array(bary, np.float64)


def landmark_points() -> np.ndarray:
    """The 68 canonical landmarks placed on the sheet (x, y up), face width 0.12 m."""
    face = CANONICAL_FACE.astype(np.float64) * 0.12
    return np.stack([face[:, 0], -face[:, 1]], axis=1)


def write_flame(folder: Path, seed: int = 0) -> Path:
    """`generic_model.pkl` (Python-2 style protocol 2, chumpy shapedirs, sparse J_regressor) and DECA's
    `landmark_embedding.npy` into `folder`; returns the model path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    verts, faces = _grid_mesh()
    v = len(verts)
    lm_faces, lm_bary = _embed(landmark_points(), verts, faces)
    nose_y = (verts[faces[lm_faces[NOSE_BOTTOM]]] * lm_bary[NOSE_BOTTOM][:, None]).sum(0)[1]
    lower = verts[:, 1] < nose_y - 0.005
    shapedirs = rng.normal(0, 1e-3, (v, 3, 400))
    shapedirs[~lower, :, 300 : 300 + N_EXPRESSION_MOUTH] = 0.0  # mouth-only expression components
    posedirs = rng.normal(0, 1e-4, (v, 3, 36))
    regressor = np.zeros((5, v))
    regressor[0] = 1.0 / v  # root: centroid
    regressor[1, np.argsort(verts[:, 1])[:13]] = 1 / 13  # neck: bottom row
    regressor[2, np.argsort(np.abs(verts[:, 1] - (nose_y - 0.04)))[:13]] = 1 / 13  # jaw: below the mouth
    for k, eye in ((3, 36), (4, 45)):
        near = np.argsort(np.linalg.norm(verts[:, :2] - landmark_points()[eye], axis=1))[:4]
        regressor[k, near] = 0.25
    weights = np.zeros((v, 5))
    weights[:, 0] = 1.0
    weights[lower, 0], weights[lower, 2] = 0.3, 0.7  # the lower face follows the jaw
    with _FakeChumpy() as ch:
        dirs = ch()
        dirs.__dict__.update(
            {
                "x": shapedirs,
                "_dirty_vars": set(),
                "_itr": None,
                "_make_dense": False,
                "_make_sparse": False,
                "_depends_on_deps": {},
            }
        )
        model = {
            "f": faces,
            "v_template": verts,
            "shapedirs": dirs,
            "posedirs": posedirs,
            "J_regressor": sp.csc_matrix(regressor),
            "weights": weights,
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.uint32),
            "J": regressor @ verts,
            "bs_style": "lbs",
            "bs_type": "lrotmin",
        }
        path = folder / "generic_model.pkl"
        path.write_bytes(pickle.dumps(model, protocol=2))
    embedding = {
        "static_lmk_faces_idx": lm_faces[17:],
        "static_lmk_bary_coords": lm_bary[17:],
        "dynamic_lmk_faces_idx": torch.as_tensor(np.tile(lm_faces[:17], (79, 1))),
        "dynamic_lmk_bary_coords": torch.as_tensor(np.tile(lm_bary[:17], (79, 1, 1))),
        "full_lmk_faces_idx": lm_faces[None],
        "full_lmk_bary_coords": lm_bary[None],
    }
    np.save(folder / "landmark_embedding.npy", embedding, allow_pickle=True)
    return path


def write_deca(path: Path, seed: int = 0) -> Path:
    """`deca_model.tar` with DECA's key layout (E_flame / E_detail / D_detail) and a small bottleneck ResNet."""
    from imagineid.face.deca import DecaEncoder

    torch.manual_seed(seed)
    encoder = DecaEncoder(blocks=(1, 1, 1, 1), width=8, hidden=32)
    with torch.no_grad():  # a camera scale near DECA's typical ~8, so projections land inside the crop
        encoder.layers[2].bias[206] = 8.0  # cam scale: shape 100 + tex 50 + exp 50 + pose 6
    detail = torch.nn.Linear(4, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"E_flame": encoder.state_dict(), "E_detail": detail.state_dict(), "D_detail": detail.state_dict()}, path
    )
    return path


def malicious_pickle(path: Path) -> Path:
    """A pickle whose loading would run `os.system` (the attack a restricted unpickler must refuse)."""
    import os

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'PWNED'}",))

    path.write_bytes(pickle.dumps({"v_template": Exploit()}, protocol=2))
    return path


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet (the 256 base symbols of its BPE vocabulary)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_clip_tokenizer(folder: Path) -> int:
    """A real CLIP BPE vocabulary (vocab.json, merges.txt; > 1000 tokens) built from the prompt words;
    returns its size."""
    from imagineid.models.word_tokenizer import WORDS

    symbols = _bytes_to_unicode()
    vocab, merges = symbols + [s + "</w>" for s in symbols], []
    known = set(vocab)
    for word in dict.fromkeys(w for w in WORDS if w.isalpha()):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: every prefix becomes a token
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
            if (token := parts[0] + parts[1]) not in known:
                vocab.append(token)
                known.add(token)
            parts = [parts[0] + parts[1]] + parts[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "vocab.json", {t: i for i, t in enumerate(vocab)})
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    write_json(
        folder / "tokenizer_config.json",
        {
            "model_max_length": 77,
            "do_lower_case": True,
            "tokenizer_class": "CLIPTokenizer",
            "pad_token": "<|endoftext|>",
        },
    )
    write_json(
        folder / "special_tokens_map.json",
        {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
    )
    return len(vocab)


def write_sd15(folder: Path, sample_size: int = 8, seed: int = 0) -> Path:
    """A Stable Diffusion 1.5 folder in the diffusers layout with SD 1.5's block structure and tiny widths:
    4-level VAE (factor 8) and UNet (3 cross-attention down blocks + 1 plain), `sample_size` latents."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab_size = write_clip_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    ).save_pretrained(folder / "text_encoder")
    torch.manual_seed(seed)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size * 8,
        scaling_factor=0.18215,
    ).save_pretrained(folder / "vae")
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).save_pretrained(folder / "unet")
    PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(folder / "scheduler")
    write_json(
        folder / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.6.0",
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    return folder


def cli(*args: str):
    """Run `imagineid ARGS` in this process (typer's CliRunner): `.exit_code`, `.stdout`, `.stderr`."""
    from typer.testing import CliRunner

    from imagineid.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def write_speech_model(folder: Path, kind: str = "wav2vec2", seed: int = 0) -> Path:
    """A tiny random Wav2Vec2Model / HubertModel saved with save_pretrained (+ its feature-extractor config)."""
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    small = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config(**small)) if kind == "wav2vec2" else HubertModel(HubertConfig(**small))
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=kind == "wav2vec2").save_pretrained(folder)
    return folder
