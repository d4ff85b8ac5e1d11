"""The listening models (progressive audio disentangler, docs/architecture.md §1) and their losses, on tiny problems.

.venv/bin/python -m pytest tests/test_disentangler_models.py -q -s   # -s prints the step times
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imagineid.face import landmarks68
from imagineid.face.morphable import PCAMorphableModel
from imagineid.models import (
    ContentEncoderDecoder,
    ContentOutput,
    EmotionEncoderDecoder,
    EmotionOutput,
    IdentityEncoder,
    IdentityOutput,
)
from imagineid.synth.corpus import SynthConfig, plan_clip, sample_speaker
from imagineid.training.losses import (
    MorphableLandmarks,
    landmark_loss,
    mouth_opening,
    supervised_contrastive,
    temporal_smoothness,
)

B = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: on a busy 2-core machine, two intra-op threads contend and run ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = {"hidden": 32}  # small widths keep the optimisation tests quick


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "identity": IdentityEncoder(),
        "content": ContentEncoderDecoder(),
        "emotion": EmotionEncoderDecoder(),
    }


def _inputs(name: str, t: int, b: int = B) -> tuple:
    g = torch.Generator().manual_seed(t)
    mel = torch.randn(b, 4 * t, 80, generator=g)
    if name == "identity":
        return (mel,)
    if name == "content":
        return mel, torch.randn(b, 10, generator=g)
    return mel, torch.randn(b, 128, generator=g), torch.randn(b, t, 128, generator=g)


@pytest.mark.parametrize("t", [1, 7, 50])
def test_output_shapes_and_unit_embeddings(t):
    models = _models()
    for m in models.values():
        m.eval()
    with torch.no_grad():
        ident = models["identity"](*_inputs("identity", t))
        content = models["content"](*_inputs("content", t))
        emotion = models["emotion"](*_inputs("emotion", t))
    assert isinstance(ident, IdentityOutput) and isinstance(content, ContentOutput)
    assert isinstance(emotion, EmotionOutput)
    assert ident.embedding.shape == (B, 64) and ident.features.shape == (B, 128)
    assert ident.shape.shape == (B, 10) and ident.gender_logits.shape == (B, 2) and ident.age_logits.shape == (B, 3)
    assert content.features.shape == (B, t, 128) and content.mouth.shape == (B, t, 6)
    assert emotion.embedding.shape == (B, 32) and emotion.emotion_logits.shape == (B, 4)
    assert emotion.expression.shape == (B, t, 12)
    for emb in (ident.embedding, emotion.embedding):
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(B))


def test_identity_mask_ignores_padding():
    torch.manual_seed(0)
    model = IdentityEncoder().eval()
    mel = torch.randn(2, 40, 80)
    padded = torch.cat([mel, torch.randn(2, 24, 80) * 5], dim=1)  # junk after frame 40
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :40] = True
    with torch.no_grad():
        a = model(mel).embedding
        b = model(padded, mask).embedding
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise():
    models = _models()
    with pytest.raises(ValueError, match="multiple of mel_per_frame"):
        models["content"](torch.randn(1, 10, 80), torch.randn(1, 10))
    with pytest.raises(ValueError, match="content must be"):
        models["emotion"](torch.randn(1, 8, 80), torch.randn(1, 128), torch.randn(1, 3, 128))
    with pytest.raises(ValueError, match="mel must be"):
        models["identity"](torch.randn(1, 8, 40))


def _public(config) -> dict:
    """A config without diffusers' bookkeeping keys (`_name_or_path`, `_diffusers_version`, ...)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_save_load_round_trip(tmp_path):
    for name, model in _models().items():
        model.eval()
        model.save_pretrained(tmp_path / name)
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").is_file()
        loaded = type(model).from_pretrained(tmp_path / name).eval()
        assert _public(loaded.config) == _public(model.config)
        x = _inputs(name, 7)
        with torch.no_grad():
            a, b = model(*x), loaded(*x)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def _tones(n: int, high: bool, g: torch.Generator) -> torch.Tensor:
    """(n, 64, 80) normalised 'log-mel' with energy in a low or a high band and random loudness."""
    mel = torch.randn(n, 64, 80, generator=g) * 0.5
    band = slice(50, 60) if high else slice(10, 20)
    mel[:, :, band] += 2.0 + torch.rand(n, 1, 1, generator=g)
    return mel


def _fit(model, loss_fn, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], float(np.mean(losses[-3:]))


def test_identity_encoder_learns_pitch_band():
    torch.manual_seed(0)
    model = IdentityEncoder(**SMALL).train()
    g = torch.Generator().manual_seed(1)
    mel = torch.cat([_tones(16, False, g), _tones(16, True, g)])
    labels = torch.cat([torch.zeros(16), torch.ones(16)]).long()

    def losses(out):
        return F.cross_entropy(out.gender_logits, labels), supervised_contrastive(out.embedding, labels)

    with torch.no_grad():
        ce0, con0 = losses(model.eval()(mel))
    model.train()
    _fit(model, lambda: sum(losses(model(mel))), 25)
    with torch.no_grad():
        out = model.eval()(mel)
        ce, con = losses(out)
    assert ce < 0.3 * ce0 and con < con0 - 0.3  # SupCon's floor here is log(15) ≈ 2.7, not 0
    assert (out.gender_logits.argmax(-1) == labels).all()


def test_content_model_learns_frame_energy():
    torch.manual_seed(0)
    model = ContentEncoderDecoder(**SMALL).train()
    g = torch.Generator().manual_seed(2)
    t = 16
    energy = torch.rand(8, t, generator=g) * 2 - 1  # (B, T)
    mel = torch.randn(8, 4 * t, 80, generator=g) * 0.3 + energy.repeat_interleave(4, dim=1)[..., None]
    target = energy[..., None].expand(8, t, 6)  # mouth = frame energy
    shape = torch.randn(8, 10, generator=g)

    def loss():
        return F.mse_loss(model(mel, shape).mouth, target)

    first, last = _fit(model, loss, 40)
    assert last < 0.3 * first


def test_content_model_moves_the_mouth_with_the_envelope_when_the_spectrum_says_nothing():
    """With n_envelope, the envelope beside the mel is a usable cue on its own: here the mel is noise
    and only the envelope carries the target. Without an envelope such a model refuses to run."""
    torch.manual_seed(0)
    model = ContentEncoderDecoder(**SMALL, n_envelope=2).train()
    g = torch.Generator().manual_seed(4)
    t = 16
    energy = torch.rand(8, t, generator=g)  # (B, T)
    envelope = torch.stack([energy, energy.clamp_min(1e-4).log()], -1).repeat_interleave(4, dim=1)  # (B, 4T, 2)
    mel = torch.randn(8, 4 * t, 80, generator=g) * 0.3
    shape = torch.randn(8, 10, generator=g)
    target = energy[..., None].expand(8, t, 6)

    first, last = _fit(model, lambda: F.mse_loss(model(mel, shape, envelope).mouth, target), 40)
    assert last < 0.3 * first
    with pytest.raises(ValueError, match="envelope must be"):
        model(mel, shape)


def test_emotion_model_learns_loudness():
    torch.manual_seed(0)
    model = EmotionEncoderDecoder(hidden=32, identity_dim=8, content_dim=8).train()
    g = torch.Generator().manual_seed(3)
    t, n = 8, 16
    labels = torch.arange(n) % 2
    # per-utterance loudness is the emotion cue: only absolute levels separate the classes
    mel = torch.randn(n, 4 * t, 80, generator=g) * 0.5 + (labels.float() * 1.5 - 0.75)[:, None, None]
    ident, content = torch.randn(n, 8, generator=g), torch.randn(n, t, 8, generator=g)
    target = (labels.float()[:, None, None] * 2 - 1).expand(n, t, 12)

    def loss():
        out = model(mel, ident, content)
        return F.cross_entropy(out.emotion_logits, labels) + F.mse_loss(out.expression, target)

    first, last = _fit(model, loss, 30)
    assert last < 0.3 * first


def test_supervised_contrastive():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(16) % 4
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    clustered = F.normalize(centres[labels] + 0.05 * torch.randn(16, 16, generator=g), dim=-1)
    random = F.normalize(torch.randn(16, 16, generator=g), dim=-1)
    assert supervised_contrastive(clustered, labels) < supervised_contrastive(random, labels) - 0.5
    # no positives anywhere → 0, still differentiable
    emb = random[:4].clone().requires_grad_(True)
    zero = supervised_contrastive(emb, torch.arange(4))
    assert zero.item() == 0.0
    zero.backward()
    # a row without a positive is ignored
    lab = torch.tensor([0, 0, 1, 1, 2])
    full = supervised_contrastive(random[:5], lab)
    assert torch.isfinite(full)


def test_temporal_smoothness():
    target = torch.cumsum(torch.ones(2, 5, 3), dim=1)
    assert temporal_smoothness(target + 4.0, target).item() == pytest.approx(0.0)  # an offset is smooth
    assert temporal_smoothness(torch.zeros(2, 5, 3), target).item() == pytest.approx(1.0)
    assert temporal_smoothness(torch.zeros(2, 1, 3), torch.ones(2, 1, 3)).item() == 0.0


@pytest.fixture(scope="module")
def morphable() -> tuple[PCAMorphableModel, list[np.ndarray]]:
    cfg = SynthConfig(speakers=4, clips_per_speaker=2, seconds=2, seed=3)
    plans = [
        plan_clip(cfg, sample_speaker(cfg.seed, i), i, c)
        for i in range(cfg.speakers)
        for c in range(cfg.clips_per_speaker)
    ]
    model = PCAMorphableModel.fit([p.landmarks for p in plans], groups=[p.speaker.speaker_id for p in plans])
    return model, [p.landmarks for p in plans]


def test_morphable_landmarks_match_numpy(morphable):
    model, clips = morphable
    lm = MorphableLandmarks(model)
    rng = np.random.default_rng(0)
    shape = rng.standard_normal((2, model.n_shape)).astype(np.float32)
    expr = rng.standard_normal((2, 5, model.n_expression)).astype(np.float32)
    mouth = rng.standard_normal((2, 5, model.n_mouth)).astype(np.float32)
    cases = [{}, {"mouth": mouth}, {"expression": expr}, {"expression": expr, "mouth": mouth}]
    for kw in cases:
        got = lm(torch.from_numpy(shape), **{k: torch.from_numpy(v) for k, v in kw.items()}).numpy()
        assert got.shape == (2, 5 if kw else 1, 68, 2)
        for b in range(2):
            want = model.reconstruct(shape[b], **{k: v[b] for k, v in kw.items()})
            assert np.abs(got[b] - want).max() < 1e-4, kw
    # projected coefficients of a real clip reconstruct the same points both ways
    coeffs = model.project(clips[0])
    got = lm(torch.from_numpy(coeffs.shape)[None], mouth=torch.from_numpy(coeffs.mouth)[None])[0].numpy()
    assert np.abs(got - model.reconstruct(coeffs.shape, mouth=coeffs.mouth)).max() < 1e-4


def test_mouth_opening_and_landmark_loss(morphable):
    _, clips = morphable
    pts = torch.from_numpy(clips[0].astype(np.float32))  # (T, 68, 2)
    np.testing.assert_allclose(mouth_opening(pts).numpy(), landmarks68.mouth_opening(clips[0]), atol=1e-6)
    closed = pts.clone()
    closed[:, [65, 66, 67], 1] = closed[:, [63, 62, 61], 1] - 1.0  # lips past each other
    assert (mouth_opening(closed) == 0).all() and (mouth_opening(closed, clip=False) < 0).all()

    assert landmark_loss(pts, pts).item() == 0.0
    shifted = pts.clone()
    shifted[:, 48:68] += torch.tensor([3.0, 4.0])
    assert landmark_loss(shifted, pts, mouth_only=True).item() == pytest.approx(5.0)
    assert landmark_loss(shifted, pts).item() == pytest.approx(5.0 * 20 / 68)
    weights = torch.zeros(68)
    weights[48:] = 1.0
    assert landmark_loss(shifted, pts, weights=weights).item() == pytest.approx(5.0)
    pred = pts.clone().requires_grad_(True)
    landmark_loss(pred, pts).backward()
    assert torch.isfinite(pred.grad).all()  # zero distance has a finite gradient


def test_training_step_time():
    """One forward + backward + Adam step at B=32, T=32 (mel 128 × 80) per model, on CPU."""
    models = _models()
    times = {}
    for name, model in models.items():
        model.train()
        x = _inputs(name, 32, b=32)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        runs = []
        for _ in range(6):
            start = time.perf_counter()
            opt.zero_grad()
            out = model(*x)
            loss = sum(v.float().pow(2).mean() for v in out.values())
            loss.backward()
            opt.step()
            runs.append(time.perf_counter() - start)
        times[name] = 1000 * float(np.median(runs[2:]))
    print("step ms (B=32, T=32):", {k: round(v, 1) for k, v in times.items()})
    assert all(v < 1000 for v in times.values())
