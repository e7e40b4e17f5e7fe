"""The prompt sets quality is measured on: deterministic, mixed one-shape, two-shape and digits.

`prompt_set` is what `md-export quality` measures: "held-out" is the fixed, balanced file that
ships with the package (held_out.py); "train" draws from the training split. `quality_prompts`
is the older seeded draw (a few held-out prompts), kept for the benchmarks whose recorded
numbers were measured on it."""

from __future__ import annotations

import numpy as np

from ..data.digits import DIGIT_WORDS, caption as digit_caption
from ..data.shapes import split_scenes
from .held_out import held_out_prompts

PROMPT_SETS = ("held-out", "train")
DEFAULT_TRAIN_PROMPTS = 20  # "train" without a count: today's default of --num-prompts
DIGITS_SHARE = 0.2  # a fifth of the prompts are digits, the rest split evenly between one and two shapes


def quality_prompts(which: str = "held-out", count: int = 20, seed: int = 0, split_seed: int = 0) -> list[str]:
    """`count` prompts. held-out: shape captions training never rendered (combinations never seen)
    plus digit captions (scored against unseen handwriting by the classifier); train: captions
    from the training split."""
    if which not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {which!r}; known: {', '.join(PROMPT_SETS)}")
    if count < 1:
        raise ValueError(f"need at least one prompt, got {count}")
    train, held = split_scenes(split_seed)
    scenes = held if which == "held-out" else train
    rng = np.random.default_rng(seed)
    singles = [s.caption() for s in scenes if len(s.objects) == 1]
    doubles = [s.caption() for s in scenes if len(s.objects) == 2]
    digits = int(round(count * DIGITS_SHARE))
    n_single = (count - digits + 1) // 2
    n_double = count - digits - n_single
    chosen = [singles[i] for i in rng.permutation(len(singles))[:n_single]]
    chosen += [doubles[i] for i in rng.permutation(len(doubles))[:n_double]]
    chosen += [digit_caption(int(d)) for d in rng.permutation(len(DIGIT_WORDS))[:digits]]
    return chosen


def prompt_set(which: str = "held-out", count: int | None = None) -> list[str]:
    """held-out: the first `count` prompts of the shipped held-out file (None: all of them);
    train: `count` training-split prompts (None: DEFAULT_TRAIN_PROMPTS)."""
    if which not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {which!r}; known: {', '.join(PROMPT_SETS)}")
    if which == "train":
        return quality_prompts("train", DEFAULT_TRAIN_PROMPTS if count is None else count)
    prompts = held_out_prompts()
    if count is None:
        return prompts
    if not 1 <= count <= len(prompts):
        raise ValueError(f"the held-out set has {len(prompts)} prompts: ask for 1 to {len(prompts)}, got {count}")
    return prompts[:count]
