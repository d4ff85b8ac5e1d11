"""A small word-level tokenizer for the tiny LDM profile (docs/architecture.md §4: "tokenizer" row).

The paper-scale profile uses the CLIPTokenizer of the Stable Diffusion 1.5 folder; offline we ship this one
with the code. Its vocabulary covers the frame-generator prompts ("a photo of a <id0> person with a <emo0>
expression") and generic face-description words, plus K reserved pseudo-word tokens `<id0>..<idK-1>` and
`<emo0>..<emoK-1>` whose embeddings the textual-inversion adapter replaces (see `prompt_encoding.py`).

The call mirrors the bits of `CLIPTokenizer` we use:

    tok = WordTokenizer()
    ids = tok(["a photo of a <id0> person with a <emo0> expression"], max_length=16)["input_ids"]  # (1, 16)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (
    PAD,
    UNK,
    BOS,
    EOS,
)  # ids 0..3; eos is not 2 (transformers' CLIP treats eos id 2 as legacy)

# Prompt words, then generic face-description words. Order fixes the ids: append, never reorder.
_WORD_BLOCK = """
a an the photo picture portrait image video frame close-up closeup of person man woman boy girl child kid
adult teenager young old older elderly middle aged age with without and or in on at is are who looks looking
talking speaking singing face head expression emotion mood feeling
neutral happy happiness smiling smile laughing sad sadness crying angry anger furious surprised surprise
shocked fearful fear scared afraid disgusted disgust contempt calm serious tired bored excited
frontal front side profile view facing camera
high quality detailed realistic photorealistic sharp natural studio lighting light dark bright soft
background plain indoor outdoor blurred
hair short long curly straight bald blond blonde brown black white gray grey red
eyes eye eyebrows brows nose mouth lips teeth jaw chin cheeks forehead skin beard mustache moustache
glasses wearing shirt
open closed wide slightly round square oval thin thick strong narrow
male female feminine masculine deep high-pitched voice
"""
WORDS = _WORD_BLOCK.split() + [",", ".", "-", "!", "?", "'"]

_TOKEN_RE = re.compile(r"<[a-z]+\d*>|[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]")


def pseudo_tokens(kind: str, num: int) -> list[str]:
    """`<id0>..<id{num-1}>` for kind="id", `<emo0>..` for kind="emo"."""
    return [f"<{kind}{k}>" for k in range(num)]


def default_vocab(num_pseudo_tokens: int = 4) -> dict[str, int]:
    """Specials, then the reserved pseudo-words, then the word list."""
    tokens = list(SPECIAL_TOKENS) + pseudo_tokens("id", num_pseudo_tokens) + pseudo_tokens("emo", num_pseudo_tokens)
    tokens += [w for w in dict.fromkeys(WORDS) if w not in tokens]
    return {t: i for i, t in enumerate(tokens)}


class PseudoWords:
    """`identity_tokens` / `emotion_tokens` of a tokenizer with `num_pseudo_tokens` of each kind (the
    textual-inversion adapter's placeholders; shared by this tokenizer and the SD 1.5 one)."""

    num_pseudo_tokens: int

    @property
    def identity_tokens(self) -> list[str]:
        return pseudo_tokens("id", self.num_pseudo_tokens)

    @property
    def emotion_tokens(self) -> list[str]:
        return pseudo_tokens("emo", self.num_pseudo_tokens)


class WordTokenizer(PseudoWords):
    """Lower-cases, splits on whitespace and punctuation, maps unknown words to `<unk>`."""

    tokenizer_class = "WordTokenizer"

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        num_pseudo_tokens: int = 4,
        model_max_length: int = 16,
    ):
        self.vocab = dict(vocab) if vocab is not None else default_vocab(num_pseudo_tokens)
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        if sorted(self.vocab.values()) != list(range(len(self.vocab))):
            raise ValueError(f"vocabulary ids must be exactly 0..{len(self.vocab) - 1}")
        self.num_pseudo_tokens = num_pseudo_tokens
        self.model_max_length = model_max_length
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}

    # -- ids -------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_token_id(self) -> int:
        return self.vocab[PAD]

    @property
    def unk_token_id(self) -> int:
        return self.vocab[UNK]

    @property
    def bos_token_id(self) -> int:
        return self.vocab[BOS]

    @property
    def eos_token_id(self) -> int:
        return self.vocab[EOS]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.ids_to_tokens[ids]
        return [self.ids_to_tokens[int(i)] for i in ids]

    # -- text ------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return _TOKEN_RE.findall(text.lower())

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        tokens = self.convert_ids_to_tokens([int(i) for i in ids])
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in (PAD, BOS, EOS)]
        return " ".join(tokens)

    def __call__(
        self,
        texts: str | list[str],
        max_length: int | None = None,
        padding: str = "max_length",
        truncation: bool = True,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        """`{"input_ids": (B, L) long, "attention_mask": (B, L) long}`: `<bos> words <eos> <pad>...`, L = max_length.

        `padding` / `truncation` / `return_tensors` exist so callers can treat this and CLIPTokenizer alike;
        only the CLIP-for-SD settings (pad to max_length, truncate, torch tensors) are supported.
        """
        if padding != "max_length" or not truncation or return_tensors != "pt":
            raise ValueError(
                f"WordTokenizer supports padding='max_length', truncation=True, return_tensors='pt' only; "
                f"got padding={padding!r}, truncation={truncation!r}, return_tensors={return_tensors!r}"
            )
        if isinstance(texts, str):
            texts = [texts]
        length = max_length or self.model_max_length
        if length < 2:
            raise ValueError(f"max_length must be >= 2 (room for <bos> and <eos>), got {length}")
        input_ids = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(texts), length), dtype=torch.long)  # (B, L)
        for b, text in enumerate(texts):
            ids = [
                self.bos_token_id,
                *self.convert_tokens_to_ids(self.tokenize(text))[: length - 2],
                self.eos_token_id,
            ]
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention_mask[b, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # -- files -----------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        """Writes `vocab.json` and `tokenizer_config.json` (which names the class, for `load_components`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, indent=1, ensure_ascii=False))
        config = {
            "tokenizer_class": self.tokenizer_class,
            "num_pseudo_tokens": self.num_pseudo_tokens,
            "model_max_length": self.model_max_length,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> WordTokenizer:
        folder = Path(folder)
        vocab_file = folder / "vocab.json"
        if not vocab_file.is_file():
            raise FileNotFoundError(f"no WordTokenizer vocabulary at {vocab_file}")
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        return cls(
            vocab=json.loads(vocab_file.read_text()),
            num_pseudo_tokens=config.get("num_pseudo_tokens", 4),
            model_max_length=config.get("model_max_length", 16),
        )

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, num_pseudo_tokens={self.num_pseudo_tokens})"
