"""The quality gate's margins: overall, stated in attribute verdicts as well as in points, and per
attribute class (colour, shape, position, relation, digit).

Overall: a recipe fails when its fidelity is more than QUALITY_MARGIN below the fp32 torch model's
on the same prompts, seeds and sampler. Over a run of M attribute verdicts that is
floor(QUALITY_MARGIN x M) verdicts a recipe may lose (net) and still pass.

Why a per-class check too: the classes are not the same size. On the shipped held-out set
(held_out.py) position, relation and digit are each 40 of the 360 verdicts per seed (1/9).
A recipe that loses a whole class drops that class to chance (position 1/5, relation 1/4, digit
1/10) and the overall fidelity by only (class accuracy - chance) / 9: from a class at 60%, under
5 points, inside the overall margin. So each class is also held to its own margin.

A class's margin is its noise. The worst case of honest numeric drift is a recipe that draws
different pictures of the same quality (a new sample): its class accuracy then differs from the
reference's by a difference of two independent binomials, standard error sqrt(2 p (1 - p) / m) for
m verdicts at accuracy p. The class margin is CLASS_NOISE_Z of those, and never tighter than the
overall margin (a class is not held to a stricter standard than the whole). p is the reference's
accuracy with one success and one failure added (rule of succession): a class at 100% or 0% would
otherwise claim zero noise, and two verdicts would fail on one flip.

CLASS_NOISE_Z = 3: a faithful recipe fails one class on noise with probability ~0.13% (one-sided
normal tail), under 1% over five classes, and in practice far less (an export draws nearly the
same pictures as its reference; the two-sample error is an upper bound). What it still catches: a
class at 80% lost to 20% (a 60-point drop) from m >= 9 verdicts; at 50% (the most noise) lost to
10%, from m >= 29. The held-out set gives every class at least 40 verdicts per seed.
"""

from __future__ import annotations

import math

QUALITY_MARGIN = 0.05  # declared: a recipe may lose at most 5 points of fidelity against fp32 torch
CLASS_NOISE_Z = 3.0  # standard errors of a class's two-sample noise a recipe may drop (see above)


def attributes_within(margin: float, count: int) -> int:
    """How many of `count` attribute verdicts a drop of `margin` allows a recipe to lose (net)."""
    return int(math.floor(margin * count + 1e-9))


def class_noise(correct: int, count: int) -> float:
    """The standard error of the difference in accuracy between two independent samples of
    `count` verdicts from a model that gets `correct` of them right."""
    if count < 1:
        return math.inf
    p = (correct + 1) / (count + 2)
    return math.sqrt(2.0 * p * (1.0 - p) / count)


def class_margin(correct: int, count: int, margin: float = QUALITY_MARGIN, z: float = CLASS_NOISE_Z) -> float:
    """The accuracy drop a class of `count` verdicts (`correct` right on the reference) may take."""
    return max(margin, z * class_noise(correct, count))


def margin_summary(per_attribute: dict[str, float], per_attribute_count: dict[str, int], attributes: int,
                   margin: float = QUALITY_MARGIN) -> dict:
    """The gate's margins for a reference run, in points and in verdicts: what a recipe measured
    against this run may lose, overall and per class."""
    classes = {}
    for name in sorted(per_attribute_count):
        count = per_attribute_count[name]
        allowed = class_margin(round(per_attribute[name] * count), count, margin)
        classes[name] = {"count": count, "margin": round(allowed, 4),
                         "margin_attributes": attributes_within(min(allowed, 1.0), count)}
    return {"margin": margin, "margin_attributes": attributes_within(margin, attributes), "attributes": attributes,
            "class_noise_z": CLASS_NOISE_Z, "classes": classes}
