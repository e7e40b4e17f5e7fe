"""Score a picture against a shapes caption by measuring it: no learned judge.

Shapes are found as the saturated pixels (every background is grey, every named colour is
saturated), split into connected components. Per shape:
  colour    the named colour nearest in hue to the component's mean hue
  shape     by geometry: fill ratio of the bounding box (circle pi/4, square 1, triangle 1/2)
  position  the centroid's offset from the centre (one shape), or the direction from the second
            shape to the first (two shapes: above / below / to the left of / to the right of)
"""

from __future__ import annotations

import colorsys
import functools

import numpy as np
from scipy import ndimage

from ..data.shapes import COLORS, SIZE, Scene, parse_caption

SATURATION_MIN = 0.4  # grey backgrounds sit near 0, the named colours above 0.75
VALUE_MIN = 0.3
MIN_PIXELS = 20  # smaller blobs are speckle, not a shape
CENTER_RADIUS = 8.0  # centroid within this many pixels of the middle (both axes) = "in the center"
# fill ratio thresholds between triangle (0.5), circle (0.785) and square (1.0)
TRIANGLE_BELOW = 0.65
SQUARE_ABOVE = 0.89


@functools.lru_cache(maxsize=1)
def _named_hues() -> dict[str, float]:
    return {name: colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))[0] for name, rgb in COLORS.items()}


def _hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = image.astype(np.float32) / 255.0
    value = rgb.max(axis=2)
    chroma = value - rgb.min(axis=2)
    saturation = np.where(value > 0, chroma / np.maximum(value, 1e-6), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(value == r, ((g - b) / safe) % 6.0, np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return hue / 6.0, saturation, value


def _hue_name(hues: np.ndarray) -> str:
    angles = hues * 2 * np.pi
    mean = np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()) / (2 * np.pi) % 1.0

    def distance(name: str) -> float:
        d = abs(mean - _named_hues()[name])
        return min(d, 1.0 - d)

    return min(_named_hues(), key=distance)


def classify_shape(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = mask.sum() / box
    if fill < TRIANGLE_BELOW:
        return "triangle"
    return "square" if fill > SQUARE_ABOVE else "circle"


def find_shapes(image: np.ndarray) -> list[dict]:
    """Every saturated blob, largest first: colour, shape, centroid (x, y), pixels."""
    hue, saturation, value = _hsv(image)
    mask = (saturation > SATURATION_MIN) & (value > VALUE_MIN)
    labels, count = ndimage.label(mask)
    found = []
    for index in range(1, count + 1):
        component = labels == index
        pixels = int(component.sum())
        if pixels < MIN_PIXELS:
            continue
        ys, xs = np.nonzero(component)
        found.append({"color": _hue_name(hue[component]), "shape": classify_shape(component),
                      "x": float(xs.mean()), "y": float(ys.mean()), "pixels": pixels})
    return sorted(found, key=lambda s: -s["pixels"])


def _position(shape: dict) -> str:
    dx, dy = shape["x"] - (SIZE - 1) / 2, shape["y"] - (SIZE - 1) / 2
    if abs(dx) < CENTER_RADIUS and abs(dy) < CENTER_RADIUS:
        return "in the center"
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def _relation(first: dict, second: dict) -> str:
    dx, dy = first["x"] - second["x"], first["y"] - second["y"]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


Reading = tuple[str, str | None]  # (what the caption names, what the scorer read; None: no blob for it)


def _paired(found: list[dict], wanted: tuple) -> list[dict | None]:
    """The blob the scorer pairs with each of the caption's shapes (None: none left for it).
    One shape: the largest blob. Two shapes and two or more blobs: the two largest, paired the way
    that agrees best with the caption. Two shapes, one blob: the shape of the blob's colour (the
    only one its verdicts can credit), else the first."""
    if len(wanted) == 1:
        return [found[0] if found else None]
    if not found:
        return [None, None]
    if len(found) == 1:
        second = found[0]["color"] == wanted[1].color and found[0]["color"] != wanted[0].color
        return [None, found[0]] if second else [found[0], None]
    a, b = found[0], found[1]

    def matches(first: dict, second: dict) -> int:
        return sum([first["color"] == wanted[0].color, second["color"] == wanted[1].color,
                    first["shape"] == wanted[0].shape, second["shape"] == wanted[1].shape])

    return [a, b] if matches(a, b) >= matches(b, a) else [b, a]


def read_scene(image: np.ndarray, scene: Scene) -> tuple[dict[str, list[bool]], dict[str, list[Reading]]]:
    """score_scene's verdicts, and what they were read from: attribute -> (named, read) per shape
    of the caption, for the colours and shapes (the scorers' confusion)."""
    found = find_shapes(image)
    wanted = scene.objects
    paired = _paired(found, wanted)
    readings = {"color": [(w.color, b["color"] if b else None) for w, b in zip(wanted, paired)],
                "shape": [(w.shape, b["shape"] if b else None) for w, b in zip(wanted, paired)]}
    if len(wanted) == 1:
        if not found:
            return {"color": [False], "shape": [False], "position": [False]}, readings
        shape = found[0]
        return ({"color": [shape["color"] == wanted[0].color], "shape": [shape["shape"] == wanted[0].shape],
                 "position": [_position(shape) == scene.position]}, readings)
    if len(found) < 2:
        got = found[:1]
        colors = [any(s["color"] == w.color for s in got) for w in wanted]
        shapes = [any(s["shape"] == w.shape and s["color"] == w.color for s in got) for w in wanted]
        return {"color": colors, "shape": shapes, "relation": [False]}, readings
    first, second = paired
    return ({"color": [first["color"] == wanted[0].color, second["color"] == wanted[1].color],
             "shape": [first["shape"] == wanted[0].shape, second["shape"] == wanted[1].shape],
             "relation": [_relation(first, second) == scene.position]}, readings)


def score_scene(image: np.ndarray, scene: Scene) -> dict[str, list[bool]]:
    """attribute -> one verdict per attribute instance (two shapes: two colours, two shapes)."""
    return read_scene(image, scene)[0]


def score_shapes(image: np.ndarray, caption: str) -> dict[str, list[bool]]:
    return score_scene(image, parse_caption(caption))


def read_shapes(image: np.ndarray, caption: str) -> tuple[dict[str, list[bool]], dict[str, list[Reading]]]:
    return read_scene(image, parse_caption(caption))
