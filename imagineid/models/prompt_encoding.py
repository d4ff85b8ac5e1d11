"""Prompt encoding with pseudo-word splicing for the textual-inversion adapter (docs/architecture.md §1, §7).

transformers 5's `CLIPTextModel.forward` takes no `inputs_embeds`, so we run its parts by hand, exactly as
`CLIPTextModel.forward` does: token embeddings → (splice the per-sample pseudo-word embeddings) → add position
embeddings → encoder under a causal mask → final layer norm.

    ids = tokenizer(["a photo of a <id0> person with a <emo0> expression"] * B)["input_ids"]  # (B, L)
    states = encode_prompt(text_encoder, ids, {id0: id_embeds, emo0: emo_embeds})  # (B, L, D)
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask


def _text_model(text_encoder: nn.Module) -> nn.Module:
    """The module holding embeddings / encoder / final_layer_norm (transformers ≤ 4 nested it in `.text_model`)."""
    return getattr(text_encoder, "text_model", text_encoder)


def encode_prompt(
    text_encoder: nn.Module,
    input_ids: torch.Tensor,
    replace: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B, L) token ids → (B, L, D) last hidden states; `replace[token_id]` (B, D) or (D,) overrides that token.

    With `replace=None` this equals `text_encoder(input_ids).last_hidden_state`. Gradients flow into the
    replacement embeddings even when the text encoder is frozen.
    """
    model = _text_model(text_encoder)
    embeddings = model.embeddings
    input_ids = input_ids.to(embeddings.token_embedding.weight.device)
    token_embeds = embeddings.token_embedding(input_ids)  # (B, L, D)
    for token_id, value in (replace or {}).items():
        batch, _, dim = token_embeds.shape
        value = value.to(token_embeds)
        if value.dim() == 1:
            value = value.expand(batch, dim)
        if value.shape != (batch, dim):
            raise ValueError(
                f"replacement for token {token_id} must be (B, D) = {(batch, dim)}, got {tuple(value.shape)}"
            )
        where = (input_ids == token_id).unsqueeze(-1)  # (B, L, 1)
        token_embeds = torch.where(where, value[:, None, :], token_embeds)
    hidden = embeddings(inputs_embeds=token_embeds)  # + position embeddings, (B, L, D)
    # 1:1 with CLIPTextModel.forward in transformers 5
    attention_mask = create_causal_mask(
        config=text_encoder.config,
        inputs_embeds=hidden,
        attention_mask=None,
        past_key_values=None,
    )
    hidden = model.encoder(inputs_embeds=hidden, attention_mask=attention_mask, is_causal=True).last_hidden_state
    return model.final_layer_norm(hidden)  # (B, L, D)
