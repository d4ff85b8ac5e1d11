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


HEAD_AXES = (0.078, 0.11, 0.10)  # ellipsoid semi-axes x, y, z (metres): a head about 16 × 22 × 20 cm
NOSE_HEIGHT = 0.02  # the nose ridge stands this far out of the ellipsoid (it is what occludes at yaw)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, C¹ in between: windows that switch a field off exactly, yet smoothly."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _head_mesh(n_lat: int = 40, n_lon: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A closed ellipsoid head (metres, y up, face toward +z) with a nose ridge: vertices (V, 3), faces (F, 3).

    Latitude rings between poles on the y axis (crown, neck), faces wound counter-clockwise seen from
    outside, so normals from (b − a) × (c − a) point outward as FLAME's do.
    """
    a, b, c = HEAD_AXES
    theta = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]  # polar angle from the crown
    phi = np.linspace(-np.pi, np.pi, n_lon, endpoint=False)  # azimuth, 0 = straight ahead (+z)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([a * np.sin(t) * np.sin(p), b * np.cos(t), c * np.sin(t) * np.cos(p)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, b, 0.0]], ring, [[0.0, -b, 0.0]]])
    x, y, z = verts.T
    nose = np.exp(-(x**2) / (2 * 0.011**2) - (y - 0.006) ** 2 / (2 * 0.016**2)) * (z > 0)
    verts[:, 2] += NOSE_HEIGHT * nose
    top, bottom = 0, len(verts) - 1
    idx = lambda i, j: 1 + i * n_lon + j % n_lon
    faces = [(top, idx(0, j + 1), idx(0, j)) for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            q00, q01, q10, q11 = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [(q00, q01, q11), (q00, q11, q10)]
    faces += [(bottom, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)) for j in range(n_lon)]
    faces = np.array(faces, np.int64)
    n = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    if np.mean(np.einsum("fc,fc->f", n, verts[faces].mean(1))) < 0:  # make the winding outward
        faces = faces[:, [0, 2, 1]]
    return verts, faces.astype(np.uint32)


def _embed(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face index and barycentric coordinates of each 2D point (x, y) on the face side of the mesh.

    Only triangles facing +z with every corner in front (z > 0) are candidates: there the surface is a
    height field over (x, y), so each point lies in exactly one of them.
    """
    tri = verts[faces]  # (F, 3, 3)
    n_z = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    front = np.flatnonzero((n_z > 0) & (tri[:, :, 2] > 0).all(axis=1))
    a, b, c = (tri[front, k, :2] for k in range(3))  # (Fc, 2)
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    idx, bary = [], []
    for p in points:
        d = p - a
        u = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
        v = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
        inside = np.flatnonzero((u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9))
        if not len(inside):
            raise AssertionError(f"landmark {p} is off the stand-in mesh")
        k = inside[0]
        idx.append(front[k])
        bary.append((1 - u[k] - v[k], u[k], v[k]))
    return np.array(idx, np.int64), np.array(bary, np.float64)


def _similarity_fields(verts: np.ndarray) -> np.ndarray:
    """Orthonormal (3V, 7) basis of the displacement fields a camera or head pose can mimic: translations,
    infinitesimal rotations and uniform scaling about the centroid."""
    d = verts - verts.mean(axis=0)
    fields = [np.tile(np.eye(3)[k], (len(verts), 1)) for k in range(3)]
    fields += [np.cross(np.eye(3)[k], d) for k in range(3)] + [d]
    q, _ = np.linalg.qr(np.stack([f.reshape(-1) for f in fields], axis=1))
    return q


def _polynomial_fields(verts: np.ndarray, degree: int) -> np.ndarray:
    """Every monomial of the normalised coordinates up to `degree`, as an x, y and z displacement: (3V, M)."""
    u = (verts - verts.mean(axis=0)) / np.asarray(HEAD_AXES)
    powers = [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)]
    mono = np.stack([u[:, 0] ** i * u[:, 1] ** j * u[:, 2] ** k for i, j, k in powers], axis=1)  # (V, P)
    fields = np.zeros((len(verts), 3, len(powers), 3))
    for axis in range(3):
        fields[:, axis, :, axis] = mono
    return fields.reshape(3 * len(verts), -1)


def _head_bases(verts: np.ndarray, nose_y: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth `shapedirs` (V, 3, 400): 300 identity then 100 expression components, PCA-like (the k-th
    component's RMS displacement falls with k) so coefficients are unit-variance like FLAME's.

    Identity: global degree-4 polynomial fields with the similarity fields projected out (a camera or a
    head turn cannot mimic them, so a fit can recover them). Expression: fields windowed to the face —
    components 0..N_EXPRESSION_MOUTH−1 exactly zero above the nose; 3 and 4 share one brow field, so
    each alone moves the upper face but their difference is mouth-only; the rest move the whole face.
    """
    v = len(verts)
    x, y, z = verts.T
    sim = _similarity_fields(verts)
    poly = _polynomial_fields(verts, 4)
    poly -= sim @ (sim.T @ poly)
    q = np.linalg.svd(poly, full_matrices=False)[0]  # (3V, r) orthonormal smooth fields
    q = q[:, : min(q.shape[1], 95)]
    mix = np.linalg.qr(rng.normal(size=(q.shape[1], q.shape[1])))[0]
    identity = q @ mix  # (3V, r): orthonormal, every one mixing all degrees
    rms = 0.004 * (1.0 + np.arange(300)) ** -0.6  # metres at coefficient 1
    shape = np.zeros((3 * v, 300))
    for k in range(300):
        col = identity[:, k] if k < identity.shape[1] else identity @ rng.normal(size=identity.shape[1])
        shape[:, k] = col / np.sqrt(np.mean(col**2) * 3) * rms[k]
    front = _smoothstep(z / 0.04)  # (V,) the face side only
    lower = _smoothstep((nose_y - 0.005 - y) / 0.02) * front  # exactly 0 at and above nose_y − 5 mm
    upper = _smoothstep((y - nose_y) / 0.02) * front
    local = _polynomial_fields(verts, 2)  # (3V, 30) low-order content for the windows
    window = lambda w: local * np.repeat(w, 3)[:, None]
    expr = np.zeros((3 * v, 100))
    brow = window(upper) @ rng.normal(size=local.shape[1])
    for k in range(100):
        if k < N_EXPRESSION_MOUTH + 2:
            col = window(lower) @ rng.normal(size=local.shape[1])
            if k >= N_EXPRESSION_MOUTH:  # 3, 4: the same upper-face leak on two different mouth motions
                col = col / np.abs(col).max() + 0.8 * brow / np.abs(brow).max()
        else:
            col = window(front) @ rng.normal(size=local.shape[1]) + 0.5 * window(upper) @ rng.normal(
                size=local.shape[1]
            )
        expr[:, k] = col / np.abs(col).max() * 0.006 * (1.0 + k) ** -0.3  # peak motion at coefficient 1
    return np.concatenate([shape, expr], axis=1).reshape(v, 3, 400)


def landmark_points() -> np.ndarray:
    """The 68 canonical landmarks placed on the sheet (x, y up), face width 0.12 m."""
    face = CANONICAL_FACE.astype(np.float64) * 0.12
    return np.stack([face[:, 0], -face[:, 1]], axis=1)


def write_flame(folder: Path, seed: int = 0) -> Path:
    """`generic_model.pkl` (Python-2 style protocol 2, chumpy shapedirs, sparse J_regressor) and DECA's
    `landmark_embedding.npy` into `folder`; returns the model path.

    The geometry is a smooth closed head (`_head_mesh`), smooth bases (`_head_bases`), a jaw joint at
    the sides of the head, lower-face skinning weights that ramp smoothly from the upper lip to the chin,
    and the 68 canonical landmarks embedded on the face side: fits and renders can be checked against
    known parameters on it, and its mouth-only components are known exactly.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    verts, faces = _head_mesh()
    v = len(verts)
    x, y, z = verts.T
    lm_faces, lm_bary = _embed(landmark_points(), verts, faces)
    nose_y = (verts[faces[lm_faces[NOSE_BOTTOM]]] * lm_bary[NOSE_BOTTOM][:, None]).sum(0)[1]
    shapedirs = _head_bases(verts, nose_y, rng)
    regressor = np.zeros((5, v))
    regressor[0] = 1.0 / v  # root: centroid
    regressor[1, np.argsort(y)[:13]] = 1 / 13  # neck: around the bottom pole
    for side in (-1.0, 1.0):  # jaw: halfway between two points at the sides of the head, just below the nose
        regressor[2, np.argmin(np.linalg.norm(verts - [side * HEAD_AXES[0], nose_y - 0.005, 0.0], axis=1))] = 0.5
    for k, eye in ((3, 36), (4, 45)):
        near = np.argsort(np.linalg.norm(verts[:, :2] - landmark_points()[eye], axis=1) + 10 * (z < 0))[:4]
        regressor[k, near] = 0.25
    front = _smoothstep(z / 0.04)
    jaw = _smoothstep((-0.028 - y) / 0.012) * front  # 0 at the upper lip, 1 from the lower lip down
    neck = _smoothstep((-0.075 - y) / 0.02) * (1.0 - jaw)
    weights = np.zeros((v, 5))
    weights[:, 2], weights[:, 1] = jaw, neck
    weights[:, 0] = 1.0 - jaw - neck
    posedirs = np.zeros((v, 3, 36))
    posedirs[:, :, 9:18] = 1e-3 * jaw[:, None, None] * rng.normal(size=(1, 3, 9))  # jaw correctives only
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
