"""Real handwritten digits: scikit-learn's digits set (1797 8x8 scans, ships with sklearn,
offline), upscaled to 64x64 RGB (white ink on black) with the caption "a handwritten digit seven".

The train / held-out split is by sample, seeded: held-out images are handwriting the model and
the scorer's classifier never saw.
"""

from __future__ import annotations

import functools

import numpy as np

SIZE = 64
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HELD_OUT_FRACTION = 0.2
CAPTION_PREFIX = "a handwritten digit "


class DigitCaptionError(ValueError):
    pass


def caption(digit: int) -> str:
    return CAPTION_PREFIX + DIGIT_WORDS[digit]


def parse_caption(text: str) -> int:
    """The digit a caption names ("a handwritten digit seven" -> 7)."""
    words = " ".join(text.lower().split())
    if words.startswith(CAPTION_PREFIX) and words[len(CAPTION_PREFIX):] in DIGIT_WORDS:
        return DIGIT_WORDS.index(words[len(CAPTION_PREFIX):])
    raise DigitCaptionError(f"not a digits caption: {text!r} (e.g. 'a handwritten digit seven')")


def is_digit_caption(text: str) -> bool:
    try:
        parse_caption(text)
    except DigitCaptionError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)  # (1797, 8, 8) in [0, 1]


def split_indices(split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) into the 1797 samples."""
    count = len(_raw()[1])
    order = np.random.default_rng(split_seed).permutation(count)
    held = int(round(count * HELD_OUT_FRACTION))
    return np.sort(order[held:]), np.sort(order[:held])


def raw_digits(held_out: bool = False, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 scans in [0, 1] and labels of one split (the scorer's classifier trains on these)."""
    images, labels = _raw()
    index = split_indices(split_seed)[1 if held_out else 0]
    return images[index], labels[index]


def upscale(scans: np.ndarray) -> np.ndarray:
    """(N, 8, 8) in [0, 1] -> (N, 64, 64, 3) uint8: bilinear-ish smooth strokes, not blocks."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(scans[:, None].astype(np.float32))
    big = F.interpolate(tensor, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    grey = np.round(big[:, 0].numpy() * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3)


def digits_dataset(held_out: bool = False, split_seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Every image of one split, (N, 64, 64, 3) uint8, with captions."""
    scans, labels = raw_digits(held_out, split_seed)
    return upscale(scans), [caption(int(d)) for d in labels]
