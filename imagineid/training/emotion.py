"""Stage 3, emotion: audio + frozen identity and content features → full expression + emotion embedding.

Losses: full-expression regression + emotion cross-entropy + supervised contrastive on the embedding.
"""

from __future__ import annotations

import numpy as np
import torch

from imagineid.data.labels import EMOTIONS
from imagineid.models import (
    ContentEncoderDecoder,
    EmotionEncoderDecoder,
    IdentityEncoder,
)
from imagineid.training.augment import augment_mel
from imagineid.training.context import StageContext
from imagineid.training.identity import labelled_ce
from imagineid.training.loop import freeze, seed_everything
from imagineid.training.losses import masked_mse, supervised_contrastive
from imagineid.training.metrics import accuracy, plot_embeddings, silhouette

STAGE = "emotion"


def train_emotion(ctx: StageContext, progress: bool = True) -> dict:
    cfg = ctx.config.stage(STAGE)
    seed_everything(ctx.config.seed + 2)
    identity = freeze(IdentityEncoder.from_pretrained(ctx.run.stage("identity"), use_safetensors=True).to(ctx.device))
    content = freeze(
        ContentEncoderDecoder.from_pretrained(ctx.run.stage("content"), use_safetensors=True).to(ctx.device)
    )
    hidden = ctx.config.hidden
    identity_dim = hidden + (identity.config.n_prosody if identity.config.n_voice else 0)  # features (+ prosody)
    model = EmotionEncoderDecoder(
        identity_dim=identity_dim,
        content_dim=hidden,
        n_expression=ctx.n_expression,
        hidden=hidden,
        dropout=0.3 if cfg.dropout is None else cfg.dropout,
    ).to(ctx.device)

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            ident = identity(batch["mel"], voice=batch.get("voice"))
            cont = content(batch["mel"], ident.shape, batch["envelope"]).features  # (B, W, hidden)
        # loudness is an emotion cue: the utterance's level goes back in, and no gain shift
        mel = batch["mel"] + batch["level"][:, None, :]
        out = model(augment_mel(mel, gain=0.0) if cfg.augment else mel, ident.for_emotion(), cont)
        expression = masked_mse(out.expression.float(), batch["expression"], batch["valid"])
        emotion = labelled_ce(out.emotion_logits, batch["emotion"])
        known = batch["emotion"] >= 0
        contrast = (
            supervised_contrastive(out.embedding.float()[known], batch["emotion"][known])
            if known.any()
            else out.embedding.sum() * 0.0
        )
        loss = expression + emotion + 0.5 * contrast
        return loss, {"loss": loss.item(), "expression_mse": expression.item(), "emotion_ce": emotion.item()}

    train_logs = ctx.fit(STAGE, model, ctx.loader(cfg), step, cfg, progress)
    if not ctx.replica.is_main:  # rank 0 saves and validates; the others only trained beside it
        return {}
    model.save_pretrained(ctx.run.stage(STAGE))
    return {**{f"train_{k}": v for k, v in train_logs.items()}, **validate_emotion(identity, content, model, ctx)}


@torch.no_grad()
def validate_emotion(
    identity: IdentityEncoder, content: ContentEncoderDecoder, model: EmotionEncoderDecoder, ctx: StageContext
) -> dict:
    model.eval()
    logits, embeddings = [], []
    for sample in ctx.val_clips():
        mel = ctx.mel(sample)
        ident = identity(mel, voice=ctx.voice(sample))
        out = model(
            mel + ctx.level(sample), ident.for_emotion(), content(mel, ident.shape, ctx.envelope(sample)).features
        )
        logits.append(out.emotion_logits[0].cpu().numpy())
        embeddings.append(out.embedding[0].cpu().numpy())
    labels = np.array([c.emotion for c in ctx.val_clips()])
    emb = np.stack(embeddings)
    known = labels >= 0
    plot = plot_embeddings(
        emb[known],
        labels[known],
        EMOTIONS,
        ctx.run.stage(STAGE) / "emotion_embeddings.png",
        "emotion embeddings, held-out speakers (PCA)",
    )
    return {
        "emotion_accuracy": accuracy(np.stack(logits), labels),
        "emotion_silhouette": silhouette(emb[known], labels[known]) if known.any() else float("nan"),
        "emotion_plot": str(plot.relative_to(ctx.run.root)),
    }
