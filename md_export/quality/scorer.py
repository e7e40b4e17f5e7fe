"""One entry point for any caption of the micro model's data: digits or shapes."""

from __future__ import annotations

import numpy as np

from ..data.digits import is_digit_caption
from ..errors import BadArgumentError
from .digits_scorer import score_digit
from .shapes_scorer import score_shapes
from ..data.shapes import CaptionError


def score_image(image: np.ndarray, caption: str) -> dict[str, list[bool]]:
    """attribute -> verdicts, for a (64, 64, 3) uint8 picture."""
    if image.shape != (64, 64, 3):
        raise BadArgumentError(f"the fidelity scorer measures 64x64 RGB pictures, got {image.shape}")
    if is_digit_caption(caption):
        return score_digit(image, caption)
    try:
        return score_shapes(image, caption)
    except CaptionError as exc:
        raise BadArgumentError(str(exc)) from None


def fidelity(verdicts: dict[str, list[bool]]) -> float:
    values = [v for vs in verdicts.values() for v in vs]
    return sum(values) / len(values) if values else 0.0
