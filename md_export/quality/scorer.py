"""One entry point for any caption of the micro model's data: digits or shapes."""

from __future__ import annotations

import numpy as np

from ..data.digits import is_digit_caption
from ..errors import BadArgumentError
from .digits_scorer import read_digit
from .shapes_scorer import read_shapes
from ..data.shapes import CaptionError

Verdicts = dict[str, list[bool]]
# attribute -> (what the caption names, what the scorer read) per verdict of that attribute, for
# the attributes read by a classifier: colour, shape (read None: no shape found for it), digit
Readings = dict[str, list[tuple]]


def score_and_read(image: np.ndarray, caption: str) -> tuple[Verdicts, Readings]:
    """score_image's verdicts, and what the scorers read (for their confusion matrices)."""
    if image.shape != (64, 64, 3):
        raise BadArgumentError(f"the fidelity scorer measures 64x64 RGB pictures, got {image.shape}")
    if is_digit_caption(caption):
        return read_digit(image, caption)
    try:
        return read_shapes(image, caption)
    except CaptionError as exc:
        raise BadArgumentError(str(exc)) from None


def score_image(image: np.ndarray, caption: str) -> Verdicts:
    """attribute -> verdicts, for a (64, 64, 3) uint8 picture."""
    return score_and_read(image, caption)[0]


def fidelity(verdicts: dict[str, list[bool]]) -> float:
    values = [v for vs in verdicts.values() for v in vs]
    return sum(values) / len(values) if values else 0.0
