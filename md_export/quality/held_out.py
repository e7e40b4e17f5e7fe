"""The fixed held-out prompt set of `md-export quality` and the generator that wrote it.

The set ships as package data (held_out_prompts.txt) so every run, machine and recipe is measured
on the same prompts; `python -m md_export.quality.held_out > md_export/quality/held_out_prompts.txt`
regenerates it, and a test checks that the file is exactly what `generate_held_out_prompts` gives.

Balance: the scorer checks colour and shape on every shapes prompt, position on one-shape prompts,
relation on two-shape prompts and the digit on digit prompts. The set holds as many one-shape,
two-shape and digit prompts (so position, relation and digit get the same number of verdicts), and
within each class every value as often as the held-out split allows: every position, relation and
digit equally, and the two-shape prompts chosen so that colours and shapes even out over the set.

The held-out split has only ten one-shape captions and there are only ten digit captions, so those
are listed several times; `measure` draws a prompt's k-th listing with its own block of seeds
(evaluate.picture_draws), so a repeat adds new pictures, never copies.
"""

from __future__ import annotations

import sys
from collections import Counter
from importlib import resources

from ..data.digits import DIGIT_WORDS, caption as digit_caption
from ..data.shapes import COLORS, POSITIONS, RELATIONS, SHAPES, Scene, split_scenes

HELD_OUT_FILE = "held_out_prompts.txt"
PROMPTS_PER_KIND = 40  # one-shape, two-shape and digit prompts each: 120 prompts, 360 verdicts per seed


def _header(per_kind: int) -> str:
    return f"""\
# The held-out prompt set of `md-export quality`: shapes captions training never rendered
# (md_export.data.shapes.split_scenes, split seed 0) and digit captions (the scorer's classifier
# reads them against handwriting it never saw). One prompt a line, '#' starts a comment.
# Written by `python -m md_export.quality.held_out`; do not edit by hand (a test compares).
# {per_kind} one-shape, {per_kind} two-shape and {per_kind} digit prompts, one of each in turn: the first
# N lines are a mixed set too. A prompt listed k times is drawn with k different blocks of seeds.
"""


def _spread_singles(singles: list[Scene], count: int) -> list[Scene]:
    """`count` draws of the one-shape captions, the same number for every position; within a
    position its captions take turns in caption order."""
    per_position = count // len(POSITIONS)
    draws: list[Scene] = []
    for position in POSITIONS:
        captions = [s for s in singles if s.position == position]
        if not captions:
            raise ValueError(f"the held-out split has no one-shape caption {position!r}")
        draws += [captions[i % len(captions)] for i in range(per_position)]
    return draws


def _imbalance(colors: Counter, shapes: Counter, color_target: float, shape_target: float) -> float:
    return (sum((colors[k] - color_target) ** 2 for k in COLORS)
            + sum((shapes[k] - shape_target) ** 2 for k in SHAPES))


def _with(counts: Counter, values: list[str]) -> Counter:
    counts = counts.copy()
    counts.update(values)
    return counts


def _choose_doubles(doubles: list[Scene], count: int, singles: list[Scene]) -> list[Scene]:
    """`count` distinct two-shape captions, the same number per relation, picked one at a time:
    each pick is the caption (of a relation not yet full) that leaves the colour and shape counts
    of the whole set (the one-shape draws included) closest to even; caption order on a tie."""
    per_relation = count // len(RELATIONS)
    slots = len(singles) + 2 * count  # colour (and shape) verdicts: one per one-shape, two per two-shape prompt
    color_target, shape_target = slots / len(COLORS), slots / len(SHAPES)
    colors = Counter(s.objects[0].color for s in singles)
    shapes = Counter(s.objects[0].shape for s in singles)
    relations: Counter = Counter()
    chosen: list[Scene] = []
    for _ in range(count):
        candidates = [s for s in doubles if s not in chosen and relations[s.position] < per_relation]
        if not candidates:
            raise ValueError(f"the held-out split has too few two-shape captions for {count} prompts")
        pick = min(candidates, key=lambda s: (_imbalance(_with(colors, [o.color for o in s.objects]),
                                                         _with(shapes, [o.shape for o in s.objects]),
                                                         color_target, shape_target), s.caption()))
        chosen.append(pick)
        relations[pick.position] += 1
        colors.update(o.color for o in pick.objects)
        shapes.update(o.shape for o in pick.objects)
    return chosen


def _by_turns(groups: list[list[str]]) -> list[str]:
    """One from each group in turn: [[a1, a2], [b1]] -> [a1, b1, a2]."""
    longest = max(len(g) for g in groups)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def generate_held_out_prompts(per_kind: int = PROMPTS_PER_KIND, split_seed: int = 0) -> list[str]:
    """`per_kind` one-shape, two-shape and digit prompts, interleaved (one of each in turn), so
    any first N lines are mixed too. Repeats of a caption are spread out (first listings of every
    caption before any second one)."""
    if per_kind < 1 or per_kind % len(POSITIONS) or per_kind % len(RELATIONS) or per_kind % len(DIGIT_WORDS):
        raise ValueError(f"per_kind must be a positive multiple of {len(POSITIONS)}, {len(RELATIONS)} and "
                         f"{len(DIGIT_WORDS)} (positions, relations, digits), got {per_kind}")
    _, held = split_scenes(split_seed)
    singles = sorted((s for s in held if len(s.objects) == 1), key=Scene.caption)
    doubles = sorted((s for s in held if len(s.objects) == 2), key=Scene.caption)
    single_draws = _spread_singles(singles, per_kind)
    double_draws = _choose_doubles(doubles, per_kind, single_draws)
    # first listings of every one-shape caption, then second listings, ...
    listings: dict[str, int] = Counter()
    ranked = []
    for scene in single_draws:
        ranked.append((listings[scene.caption()], scene.caption()))
        listings[scene.caption()] += 1
    one_shape = [caption for _, caption in sorted(ranked)]
    two_shape = _by_turns([[s.caption() for s in double_draws if s.position == r] for r in RELATIONS])
    digits = [digit_caption(i % len(DIGIT_WORDS)) for i in range(per_kind)]
    return _by_turns([one_shape, two_shape, digits])


def held_out_file_text(per_kind: int = PROMPTS_PER_KIND) -> str:
    """What held_out_prompts.txt holds: the header, then one prompt a line."""
    return _header(per_kind) + "".join(p + "\n" for p in generate_held_out_prompts(per_kind))


def parse_prompt_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def held_out_prompts() -> list[str]:
    """The shipped held-out set, in file order (read as package data, never from the working directory)."""
    return parse_prompt_lines(resources.files(__package__).joinpath(HELD_OUT_FILE).read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.stdout.write(held_out_file_text())
