"""Stage 2, content: audio window around each frame + the frozen stage-1 shape → mouth-only coefficients.

Inputs: the normalised mel and its amplitude envelope (`audio.features.mel_envelope`); in training a
share of the utterances have their spectrum flattened (`training.augment.flatten_spectrum`), so the stage
moves the mouth with the loudness contour real voices share, not only with the synthetic voices' spectra.

Losses: mouth-coefficient regression + a landmark-space loss through the morphable model (the mouth
points the coefficients produce) + temporal smoothness.
"""

from __future__ import annotations

import numpy as np
import torch

from imagineid.audio.features import ENVELOPE_CHANNELS
from imagineid.face import landmarks68 as lm
from imagineid.models import ContentEncoderDecoder, IdentityEncoder
from imagineid.training.augment import flatten_spectrum
from imagineid.training.context import StageContext
from imagineid.training.loop import freeze, seed_everything
from imagineid.training.losses import (
    MorphableLandmarks,
    masked_mse,
    temporal_smoothness,
)
from imagineid.training.metrics import pearson

STAGE = "content"
MOUTH_POINTS = slice(48, 68)


def train_content(ctx: StageContext, progress: bool = True) -> dict:
    cfg = ctx.config.stage(STAGE)
    seed_everything(ctx.config.seed + 1)
    identity = freeze(IdentityEncoder.from_pretrained(ctx.run.stage("identity"), use_safetensors=True).to(ctx.device))
    model = ContentEncoderDecoder(
        n_shape=ctx.n_shape,
        n_mouth=ctx.n_mouth,
        hidden=ctx.config.hidden,
        n_envelope=ENVELOPE_CHANNELS,
        **({} if cfg.dropout is None else {"dropout": cfg.dropout}),
    ).to(ctx.device)
    morph = MorphableLandmarks(ctx.morphable).to(ctx.device)

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            shape = identity(batch["mel"], voice=batch.get("voice")).shape  # (B, n_shape), frozen stage 1
        mel = flatten_spectrum(batch["mel"]) if cfg.augment else batch["mel"]
        out = model(mel, shape, batch["envelope"])  # mouth (B, W, n_mouth)
        valid = batch["valid"]  # (B, W)
        coeff = masked_mse(out.mouth.float(), batch["mouth"], valid)
        pred_pts = morph(batch["shape"], mouth=out.mouth.float())[:, :, MOUTH_POINTS]  # (B, W, 20, 2)
        true_pts = morph(batch["shape"], mouth=batch["mouth"])[:, :, MOUTH_POINTS]
        landmarks = masked_mse(pred_pts.flatten(2), true_pts.flatten(2), valid) * 100.0
        smooth = temporal_smoothness(out.mouth.float(), batch["mouth"])
        loss = coeff + landmarks + 0.5 * smooth
        return loss, {"loss": loss.item(), "mouth_mse": coeff.item(), "landmark": landmarks.item()}

    train_logs = ctx.fit(STAGE, model, ctx.loader(cfg), step, cfg, progress)
    if not ctx.replica.is_main:  # rank 0 saves and validates; the others only trained beside it
        return {}
    model.save_pretrained(ctx.run.stage(STAGE))
    return {**{f"train_{k}": v for k, v in train_logs.items()}, **validate_content(identity, model, ctx)}


@torch.no_grad()
def validate_content(identity: IdentityEncoder, model: ContentEncoderDecoder, ctx: StageContext) -> dict:
    """Mouth opening of the landmarks the predicted coefficients make vs the dataset's landmarks."""
    model.eval()
    predicted, truth = [], []
    for sample in ctx.val_clips():
        mel = ctx.mel(sample)
        shape = identity(mel, voice=ctx.voice(sample)).shape
        mouth = model(mel, shape, ctx.envelope(sample)).mouth[0].cpu().numpy()  # (T, n_mouth)
        points = ctx.morphable.reconstruct(sample.shape, mouth=mouth)  # (T, 68, 2)
        predicted.append(lm.mouth_opening(points))
        truth.append(sample.opening)
    return {"mouth_opening_correlation": pearson(np.concatenate(predicted), np.concatenate(truth))}
