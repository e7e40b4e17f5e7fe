"""The shipped held-out prompt set: what its generator writes, balanced over every attribute the
scorer checks, read as package data, and what `md-export quality` measures by default."""

import os
from collections import Counter
from importlib import resources

import pytest

from md_export.data.digits import is_digit_caption, parse_caption as parse_digit
from md_export.data.shapes import is_held_out, parse_caption
from md_export.quality import generate_held_out_prompts, held_out_prompts, picture_draws, prompt_set
from md_export.quality.held_out import HELD_OUT_FILE, held_out_file_text

SHIPPED = resources.files("md_export.quality").joinpath(HELD_OUT_FILE)


def _kinds(prompts):
    digits = [p for p in prompts if is_digit_caption(p)]
    scenes = [parse_caption(p) for p in prompts if not is_digit_caption(p)]
    return digits, [s for s in scenes if len(s.objects) == 1], [s for s in scenes if len(s.objects) == 2]


def test_the_shipped_file_is_what_the_generator_writes():
    assert SHIPPED.read_text(encoding="utf-8") == held_out_file_text()
    assert held_out_prompts() == generate_held_out_prompts()


def test_the_set_is_held_out_and_balanced_over_every_attribute():
    prompts = held_out_prompts()
    digits, singles, doubles = _kinds(prompts)
    assert (len(prompts), len(singles), len(doubles), len(digits)) == (120, 40, 40, 40)
    assert all(is_held_out(s) for s in singles + doubles)  # combinations training never rendered
    assert len({s.caption() for s in doubles}) == 40  # two-shape prompts never repeat
    # verdicts per seed of each attribute class the scorer checks
    verdicts = {"color": len(singles) + 2 * len(doubles), "shape": len(singles) + 2 * len(doubles),
                "position": len(singles), "relation": len(doubles), "digit": len(digits)}
    assert verdicts == {"color": 120, "shape": 120, "position": 40, "relation": 40, "digit": 40}
    # and every value within a class equally often
    objects = [o for s in singles + doubles for o in s.objects]
    assert Counter(o.color for o in objects) == {c: 24 for c in ("red", "yellow", "green", "blue", "purple")}
    assert Counter(o.shape for o in objects) == {s: 40 for s in ("circle", "square", "triangle")}
    assert Counter(s.position for s in singles) == {p: 8 for p in ("on the left", "on the right", "at the top",
                                                                  "at the bottom", "in the center")}
    assert Counter(s.position for s in doubles) == {r: 10 for r in ("above", "below", "to the left of",
                                                                   "to the right of")}
    assert Counter(parse_digit(p) for p in digits) == {d: 4 for d in range(10)}


def test_any_first_lines_are_mixed():
    digits, singles, doubles = _kinds(prompt_set("held-out", 5))
    assert (len(singles), len(doubles), len(digits)) == (2, 2, 1)


def test_it_is_package_data_read_from_any_working_directory(tmp_path):
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert len(held_out_prompts()) == 120
    finally:
        os.chdir(here)


def test_prompt_set_counts():
    assert prompt_set("held-out") == held_out_prompts()
    assert prompt_set("held-out", 7) == held_out_prompts()[:7]
    assert len(prompt_set("train")) == 20 and len(prompt_set("train", 5)) == 5
    for bad in (0, 121):
        with pytest.raises(ValueError, match="1 to 120"):
            prompt_set("held-out", bad)


def test_a_repeated_prompt_is_drawn_with_new_seeds():
    draws = picture_draws(["a", "b", "a", "a"], [0, 1])
    assert draws == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5)]
    assert len(set(picture_draws(held_out_prompts(), [0, 1]))) == 240
