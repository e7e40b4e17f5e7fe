"""CLIP BPE tokenizer, offline: transformers' CLIPTokenizer built from the vocabulary that ships
inside the open-clip-torch wheel (no hub access).

Output is SD's convention: <|startoftext|> prompt tokens <|endoftext|>, padded with <|endoftext|>
to 77 ids. Longer prompts are truncated (keeping the closing <|endoftext|>) with a warning.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import warnings
from pathlib import Path

import numpy as np

CONTEXT_LENGTH = 77
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_MERGES = 49152 - 256 - 2  # the merges CLIP uses from that file (the rest are unused)


class PromptTruncatedWarning(UserWarning):
    pass


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table (the first 256 vocabulary entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def vocabulary_file() -> Path:
    # find_spec locates the package without importing it (open_clip imports torchvision and timm).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed: it carries the CLIP BPE vocabulary")
    path = Path(list(spec.submodule_search_locations)[0]) / _VOCAB_FILE
    if not path.is_file():
        raise RuntimeError(f"CLIP vocabulary not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _hf_tokenizer():
    from transformers import CLIPTokenizer

    lines = gzip.open(vocabulary_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: index for index, token in enumerate(vocab)}, merges=merges)


class Tokenizer:
    """prompt(s) -> int64 ids (B, 77)."""

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        self.context_length = context_length
        self._tok = _hf_tokenizer()
        self.bos_id = self._tok.convert_tokens_to_ids("<|startoftext|>")
        self.eos_id = self._tok.convert_tokens_to_ids("<|endoftext|>")

    def encode(self, prompt: str) -> list[int]:
        ids = self._tok(prompt, add_special_tokens=False)["input_ids"]
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
