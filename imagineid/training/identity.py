"""Stage 1, identity: utterance audio → identity embedding, 3DMM shape, gender and age heads.

Losses: shape regression + supervised contrastive across speakers + attribute cross-entropy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imagineid.audio.voice_features import STATS, VOICE_DIM
from imagineid.audio.voice_stats import F0_STATS, PHYSICAL_STATS
from imagineid.data.labels import AGE_GROUPS
from imagineid.models import IdentityEncoder
from imagineid.training.augment import augment_mel
from imagineid.training.context import StageContext
from imagineid.training.loop import seed_everything
from imagineid.training.losses import supervised_contrastive
from imagineid.training.metrics import accuracy, precision_at_k, r2_score

STAGE = "identity"
CHILD = AGE_GROUPS.index("child")


def labelled_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over rows whose label is known (≥ 0); 0 when none is (datasets without labels)."""
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=-1)


def shape_weights(ctx: StageContext) -> np.ndarray:
    """Per-component weights ∝ the geometric variance each shape coefficient carries (mean 1).

    Coefficients are unit-variance, so a plain MSE would weigh a component that moves the face by a
    hair like the one that makes a child's face; these weights measure error in landmark space instead.
    """
    var = ctx.morphable.arrays["shape_std"].astype(np.float32) ** 2
    return var / max(float(var.mean()), 1e-12)


def train_identity(ctx: StageContext, progress: bool = True) -> dict:
    cfg = ctx.config.stage(STAGE)
    seed_everything(ctx.config.seed)
    model = IdentityEncoder(
        n_shape=ctx.n_shape,
        hidden=ctx.config.hidden,
        n_voice=VOICE_DIM if ctx.bank is not None else 0,
        gender_features=[STATS.start + i for i in F0_STATS],
        age_features=[STATS.start + i for i in PHYSICAL_STATS],
        n_prosody=STATS.stop - STATS.start,
        **({} if cfg.dropout is None else {"dropout": cfg.dropout}),
    ).to(ctx.device)
    if ctx.bank is not None:
        mean, std = ctx.bank.voice_stats(ctx.split["train"])
        model.set_voice_stats(torch.from_numpy(mean).to(ctx.device), torch.from_numpy(std).to(ctx.device))
    weight = torch.from_numpy(shape_weights(ctx)).to(ctx.device)  # (n_shape,)

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        mel = augment_mel(batch["mel"]) if cfg.augment else batch["mel"]  # (B, 4W, 80)
        out = model(mel, voice=batch.get("voice"))  # voice (B, VOICE_DIM)
        shape = (((out.shape.float() - batch["shape"]) ** 2) * weight).mean()
        contrast = supervised_contrastive(out.embedding.float(), batch["speaker"])
        # a child's gender is not in its voice before puberty: children teach age, not gender
        gender = batch["gender"].masked_fill(batch["age"] == CHILD, -1)
        attributes = labelled_ce(out.gender_logits, gender) + labelled_ce(out.age_logits, batch["age"])
        loss = shape + 0.5 * contrast + attributes
        return loss, {"loss": loss.item(), "shape_mse": shape.item(), "contrastive": contrast.item()}

    train_logs = ctx.fit(STAGE, model, ctx.loader(cfg), step, cfg, progress)
    if not ctx.replica.is_main:  # rank 0 saves and validates; the others only trained beside it
        return {}
    model.save_pretrained(ctx.run.stage(STAGE))
    return {**{f"train_{k}": v for k, v in train_logs.items()}, **validate_identity(model, ctx)}


@torch.no_grad()
def identity_outputs(model: IdentityEncoder, ctx: StageContext) -> dict[str, np.ndarray]:
    """Full-clip outputs for every validation clip, stacked."""
    model.eval()
    rows = [model(ctx.mel(sample), voice=ctx.voice(sample)) for sample in ctx.val_clips()]
    return {
        "embedding": torch.cat([r.embedding for r in rows]).cpu().numpy(),
        "shape": torch.cat([r.shape for r in rows]).cpu().numpy(),
        "gender_logits": torch.cat([r.gender_logits for r in rows]).cpu().numpy(),
        "age_logits": torch.cat([r.age_logits for r in rows]).cpu().numpy(),
    }


def validate_identity(model: IdentityEncoder, ctx: StageContext) -> dict:
    out = identity_outputs(model, ctx)
    clips = ctx.val_clips()
    std = ctx.morphable.arrays["shape_std"].astype(np.float32)
    gender = np.array([c.gender for c in clips])
    grown = np.array([c.age != CHILD for c in clips])  # gender is scored where a voice carries it
    return {
        "gender_accuracy": accuracy(out["gender_logits"][grown], gender[grown]) if grown.any() else float("nan"),
        "gender_accuracy_children": accuracy(out["gender_logits"][~grown], gender[~grown])
        if (~grown).any()
        else float("nan"),
        "age_accuracy": accuracy(out["age_logits"], np.array([c.age for c in clips])),
        # R² of the face geometry: coefficients scaled by their std, i.e. variance in landmark space.
        # (Undefined with a single held-out speaker: all its clips share one shape.)
        "shape_r2": r2_score(out["shape"] * std, np.stack([c.shape for c in clips]) * std)
        if len({c.speaker_id for c in clips}) > 1
        else float("nan"),
        "retrieval_p5_same_gender": precision_at_k(out["embedding"], gender, k=5),
        "val_clips": len(clips),
    }
