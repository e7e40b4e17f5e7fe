"""CLIP BPE tokenizer, offline: transformers' CLIPTokenizer over the CLIP vocabulary that ships
with this package (`tokenizer_data/vocab.json` + `merges.txt`, MIT, see its LICENSE), after the
original CLIP text clean-up.

    prompt ─> ftfy.fix_text ─> html.unescape (twice) ─> whitespace folded ─> lower case
           ─> byte-level BPE (transformers, tokenizers backend) ─> <|startoftext|> ids <|endoftext|>

The clean-up is OpenAI's (and open_clip's): transformers' tokenizers-backed CLIPTokenizer skips
it, so without it "&amp;", curly quotes, mojibake ("donâ€™t") and full-width letters ("ＡＢＣ":
9 ids instead of 1) tokenize differently from the text encoder's training data.

Output is SD's convention: <|startoftext|> prompt tokens <|endoftext|>, padded with <|endoftext|>
to 77 ids. Longer prompts are truncated (keeping the closing <|endoftext|>) with a warning.
"""

from __future__ import annotations

import functools
import html
import re
import warnings
from pathlib import Path

import numpy as np

CONTEXT_LENGTH = 77
DATA = Path(__file__).resolve().parent / "tokenizer_data"


class PromptTruncatedWarning(UserWarning):
    pass


def clean_text(text: str) -> str:
    """CLIP's basic_clean + whitespace_clean + lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


@functools.lru_cache(maxsize=1)
def _hf_tokenizer():
    from transformers import CLIPTokenizer

    import json

    vocab = json.loads((DATA / "vocab.json").read_text(encoding="utf-8"))
    lines = (DATA / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    return CLIPTokenizer(vocab=vocab, merges=merges)


class Tokenizer:
    """prompt(s) -> int64 ids (B, 77)."""

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        self.context_length = context_length
        self._tok = _hf_tokenizer()
        self.bos_id = self._tok.convert_tokens_to_ids("<|startoftext|>")
        self.eos_id = self._tok.convert_tokens_to_ids("<|endoftext|>")

    def encode(self, prompt: str) -> list[int]:
        ids = self._tok(clean_text(prompt), add_special_tokens=False)["input_ids"]
        room = self.context_length - 2
        if len(ids) > room:
            warnings.warn(
                f"prompt has {len(ids)} tokens; CLIP sees {room}, the rest is cut: {prompt[:60]!r}...",
                PromptTruncatedWarning,
                stacklevel=2,
            )
            ids = ids[:room]
        ids = [self.bos_id] + ids + [self.eos_id]
        return ids + [self.eos_id] * (self.context_length - len(ids))

    def __call__(self, prompts: str | list[str]) -> np.ndarray:
        if isinstance(prompts, str):
            prompts = [prompts]
        return np.asarray([self.encode(p) for p in prompts], dtype=np.int64)
