"""The CLIPTokenizer of a Stable Diffusion 1.5 folder, plus the textual-inversion pseudo-words
(docs/architecture.md §4).

The frame generator splices identity / emotion embeddings into a prompt at reserved tokens `<id0>..`,
`<emo0>..` (see `prompt_encoding.py`). SD 1.5's vocabulary has no such tokens, so, as diffusers'
textual inversion does, they are added to the tokenizer and the frozen text encoder gets as many new
embedding rows (`add_pseudo_words`); their values never matter, the adapter's embeddings replace them.
The class is called like `WordTokenizer`: padded to `model_max_length` (77), truncated, torch tensors.

    tokenizer = PseudoWordCLIPTokenizer.from_pretrained("sd15/tokenizer", local_files_only=True)
    text_encoder = add_pseudo_words(tokenizer, text_encoder)  # adds <id0..3>, <emo0..3>, resizes embeddings
    ids = tokenizer(["a photo of a <id0> <id1> person with a <emo0> expression"])["input_ids"]  # (1, 77)
"""

from __future__ import annotations

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from imagineid.models.word_tokenizer import PseudoWords, pseudo_tokens

NUM_PSEUDO_TOKENS = 4  # per kind, as the WordTokenizer reserves


class PseudoWordCLIPTokenizer(PseudoWords, CLIPTokenizer):
    """CLIPTokenizer with `identity_tokens` / `emotion_tokens` and WordTokenizer-style call defaults."""

    @property
    def num_pseudo_tokens(self) -> int:
        """How many `<idK>` the tokenizer holds (added by `add_pseudo_words`)."""
        added = self.get_added_vocab()
        return sum(1 for token in pseudo_tokens("id", 64) if token in added)

    def __call__(self, text, padding="max_length", truncation=True, return_tensors="pt", max_length=None, **kwargs):
        """`{"input_ids": (B, L), "attention_mask": (B, L)}` with L = `model_max_length` unless given."""
        return super().__call__(
            text,
            padding=padding,
            truncation=truncation,
            return_tensors=return_tensors,
            max_length=max_length or self.model_max_length,
            **kwargs,
        )


def add_pseudo_words(
    tokenizer: PseudoWordCLIPTokenizer, text_encoder: CLIPTextModel, num: int = NUM_PSEUDO_TOKENS
) -> CLIPTextModel:
    """Add `<id0..num-1>` and `<emo0..num-1>` (when missing) and give the text encoder their embedding rows.

    The encoder's existing weights are untouched; the new rows start at the mean word embedding.
    """
    tokenizer.add_tokens(
        [t for t in pseudo_tokens("id", num) + pseudo_tokens("emo", num) if t not in tokenizer.get_added_vocab()]
    )
    old = text_encoder.get_input_embeddings().weight
    if len(tokenizer) > old.shape[0]:
        mean = old.detach().mean(dim=0)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            text_encoder.get_input_embeddings().weight[old.shape[0] :] = mean
    return text_encoder
