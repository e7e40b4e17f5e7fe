"""Captioned shapes: procedurally rendered 64x64 scenes of one or two coloured shapes, with the
caption built from the scene ("a red circle above a blue square").

Everything is a pure function of a seed: the same seed gives the same pixels and captions on every
machine. Backgrounds are neutral (grey levels, plain or textured) and every shape colour is
saturated, so a scorer can find the shapes by saturation alone (md_export/quality/shapes.py).

Train / held-out split (`is_held_out`): a caption is held out when a seeded hash of its
combination says so (about 1 in 6); training never renders a held-out caption, so the held-out
prompts are combinations of words the model saw, in arrangements it never saw.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

SIZE = 64
SUPERSAMPLE = 4  # shapes are rendered at 4x and box-filtered down: anti-aliased edges

# Hues far apart (0, 55, 130, 220, 280 degrees) so a colour is named by its hue alone.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (235, 215, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 225),
    "purple": (160, 60, 210),
}
SHAPES = ("circle", "square", "triangle")
# Single-shape positions: caption phrase -> centre (x, y) in pixels.
POSITIONS: dict[str, tuple[float, float]] = {
    "on the left": (17.0, 32.0),
    "on the right": (47.0, 32.0),
    "at the top": (32.0, 17.0),
    "at the bottom": (32.0, 47.0),
    "in the center": (32.0, 32.0),
}
# Two-shape relations: phrase -> (first centre, second centre).
RELATIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "above": ((32.0, 17.0), (32.0, 47.0)),
    "below": ((32.0, 47.0), (32.0, 17.0)),
    "to the left of": ((17.0, 32.0), (47.0, 32.0)),
    "to the right of": ((47.0, 32.0), (17.0, 32.0)),
}
BACKGROUNDS = ("plain", "stripes", "checker", "noise")
HELD_OUT_EVERY = 6  # about one caption combination in six is held out


class CaptionError(ValueError):
    """A caption that is not in the shapes grammar."""


@dataclass(frozen=True)
class ShapeSpec:
    color: str
    shape: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeSpec, ...]  # one or two
    position: str  # a POSITIONS key for one object, a RELATIONS key for two

    def caption(self) -> str:
        first = f"a {self.objects[0].color} {self.objects[0].shape}"
        if len(self.objects) == 1:
            return f"{first} {self.position}"
        return f"{first} {self.position} a {self.objects[1].color} {self.objects[1].shape}"


_OBJECT = r"a (\w+) (\w+)"
_SINGLE = re.compile(rf"^{_OBJECT} ({'|'.join(POSITIONS)})$")
_DOUBLE = re.compile(rf"^{_OBJECT} ({'|'.join(RELATIONS)}) {_OBJECT}$")


def parse_caption(caption: str) -> Scene:
    """The scene a caption describes (the inverse of Scene.caption)."""
    text = " ".join(caption.lower().split())
    single, double = _SINGLE.match(text), _DOUBLE.match(text)
    if single:
        objects, position = [(single[1], single[2])], single[3]
    elif double:
        objects, position = [(double[1], double[2]), (double[4], double[5])], double[3]
    else:
        raise CaptionError(f"not a shapes caption: {caption!r} (e.g. 'a red circle on the left', "
                           "'a red circle above a blue square')")
    for color, shape in objects:
        if color not in COLORS or shape not in SHAPES:
            raise CaptionError(f"unknown colour or shape in {caption!r}; colours: {', '.join(COLORS)}; "
                               f"shapes: {', '.join(SHAPES)}")
    return Scene(tuple(ShapeSpec(c, s) for c, s in objects), position)


def all_scenes() -> list[Scene]:
    """Every caption of the grammar (two-shape scenes use two different colours)."""
    scenes = [Scene((ShapeSpec(c, s),), p) for c in COLORS for s in SHAPES for p in POSITIONS]
    for relation in RELATIONS:
        for c1 in COLORS:
            for s1 in SHAPES:
                for c2 in COLORS:
                    for s2 in SHAPES:
                        if c1 != c2:
                            scenes.append(Scene((ShapeSpec(c1, s1), ShapeSpec(c2, s2)), relation))
    return scenes


def is_held_out(scene: Scene, split_seed: int = 0) -> bool:
    digest = hashlib.sha256(f"{split_seed}:{scene.caption()}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % HELD_OUT_EVERY == 0


def split_scenes(split_seed: int = 0) -> tuple[list[Scene], list[Scene]]:
    """(train scenes, held-out scenes)."""
    train, held = [], []
    for scene in all_scenes():
        (held if is_held_out(scene, split_seed) else train).append(scene)
    return train, held


# ---- rendering ---------------------------------------------------------------------------

def _shape_mask(shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape, (SIZE, SIZE)."""
    n = SIZE * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE
    x, y = coords[None, :], coords[:, None]
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= radius * radius
    elif shape == "square":
        half = radius * 0.85  # a square of the circle's area looks the same size
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    elif shape == "triangle":  # upright, apex at the top; the base is 2*radius*1.1 wide
        top, bottom = cy - radius, cy + radius * 0.8
        width_at_y = (y - top) / (bottom - top) * radius * 1.1
        inside = (y >= top) & (y <= bottom) & (np.abs(dx) <= width_at_y)
    else:
        raise CaptionError(f"unknown shape {shape!r}")
    inside = np.broadcast_to(inside, (n, n)).astype(np.float32)
    return inside.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Neutral (grey) background, (SIZE, SIZE, 3) float in [0, 1]."""
    level = rng.uniform(0.2, 0.85)
    if kind == "plain":
        grey = np.full((SIZE, SIZE), level, np.float32)
    elif kind == "stripes":
        period = rng.integers(6, 14)
        phase = rng.uniform(0, 2 * np.pi)
        axis = np.arange(SIZE)[None, :] if rng.random() < 0.5 else np.arange(SIZE)[:, None]
        grey = level + 0.08 * np.sign(np.sin(2 * np.pi * axis / period + phase)) * np.ones((SIZE, SIZE))
    elif kind == "checker":
        cell = int(rng.integers(5, 12))
        ys, xs = np.indices((SIZE, SIZE))
        grey = level + 0.07 * (((xs // cell + ys // cell) % 2) * 2 - 1)
    elif kind == "noise":
        coarse = rng.normal(0.0, 0.08, (8, 8))
        grey = level + np.kron(coarse, np.ones((SIZE // 8, SIZE // 8)))
    else:
        raise ValueError(f"unknown background {kind!r}")
    grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
    return np.repeat(grey[:, :, None], 3, axis=2)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as (SIZE, SIZE, 3) uint8, with seeded jitter of size, place and background."""
    image = _background(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], rng)
    if len(scene.objects) == 1:
        centres = [POSITIONS[scene.position]]
        radius_range = (10.0, 13.0)
    else:
        centres = list(RELATIONS[scene.position])
        radius_range = (8.0, 10.5)
    for spec, (cx, cy) in zip(scene.objects, centres):
        radius = rng.uniform(*radius_range)
        cx, cy = cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3)
        coverage = _shape_mask(spec.shape, cx, cy, radius)[:, :, None]
        color = np.asarray(COLORS[spec.color], np.float32) / 255.0
        image = image * (1.0 - coverage) + color * coverage
    return np.round(image * 255.0).astype(np.uint8)


SINGLE_FRACTION = 0.4  # one-shape scenes are 75 of the 795 captions; drawn 40% of the time


def scene_weight(scene: Scene, shape_weights: dict[str, float]) -> float:
    """How often a scene is drawn relative to others of its kind: the product of its shapes' weights
    (a shape not named weighs 1)."""
    weight = 1.0
    for spec in scene.objects:
        weight *= shape_weights.get(spec.shape, 1.0)
    return weight


def _picker(pool: list[Scene], shape_weights: dict[str, float] | None):
    if not shape_weights or all(w == 1.0 for w in shape_weights.values()):
        # uniform: the draw every run before shape weights made, so old seeds render the same scenes
        return lambda rng: pool[int(rng.integers(len(pool)))]
    weights = np.asarray([scene_weight(s, shape_weights) for s in pool], np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    return lambda rng: pool[min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(pool) - 1)]


def check_shape_weights(shape_weights: dict[str, float] | None) -> None:
    for shape, weight in (shape_weights or {}).items():
        if shape not in SHAPES or not weight > 0:
            raise CaptionError(f"shape weights need a known shape ({', '.join(SHAPES)}) and a weight > 0, "
                               f"got {shape}={weight}")


def scene_stream(scenes: list[Scene], seed: int, shape_weights: dict[str, float] | None = None):
    """Endless (scene, image) pairs, seeded: a one-shape scene with probability SINGLE_FRACTION
    (when there are both kinds), then a scene within its kind, uniformly or by `scene_weight`."""
    check_shape_weights(shape_weights)
    rng = np.random.default_rng(seed)
    singles = [s for s in scenes if len(s.objects) == 1]
    doubles = [s for s in scenes if len(s.objects) == 2]
    pick_single, pick_double = _picker(singles, shape_weights), _picker(doubles, shape_weights)
    while True:
        single = singles and (not doubles or rng.random() < SINGLE_FRACTION)
        scene = pick_single(rng) if single else pick_double(rng)
        yield scene, render(scene, rng)


def shapes_dataset(count: int, seed: int = 0, held_out: bool = False, split_seed: int = 0,
                   shape_weights: dict[str, float] | None = None) -> tuple[np.ndarray, list[str]]:
    """`count` images (N, 64, 64, 3) uint8 and their captions, from the train or held-out scenes."""
    train, held = split_scenes(split_seed)
    stream = scene_stream(held if held_out else train, seed, shape_weights)
    images, captions = [], []
    for _ in range(count):
        scene, image = next(stream)
        images.append(image)
        captions.append(scene.caption())
    return np.stack(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8), captions
