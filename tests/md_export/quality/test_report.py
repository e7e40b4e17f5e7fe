"""What the scorers read (confusion), the Markdown report and the grid picture, measured on a
"model" that renders the data itself: no network, so cheap."""

import functools

import numpy as np

from md_export.data.digits import digits_dataset, parse_caption as parse_digit
from md_export.data.shapes import parse_caption, render, shapes_dataset
from md_export.quality import (QUALITY_MARGIN, GateResult, grid_image, markdown_report, measure, prompt_set,
                               score_and_read, score_image, text_summary)
from md_export.quality.confusion import add_readings, most_confused
from md_export.quality.report import ALL_RIGHT, LINE_HEIGHT, PAD, SOME_RIGHT, TEXT_LINES


@functools.lru_cache(maxsize=1)
def _held_out_digits():
    images, captions = digits_dataset(held_out=True)
    return images, np.array([parse_digit(c) for c in captions])


def render_prompt(prompt: str, seed: int) -> np.ndarray:
    """The data's own picture of a prompt: a perfect model, up to the digits classifier's errors."""
    if "digit" in prompt:
        images, labels = _held_out_digits()
        return images[np.flatnonzero(labels == parse_digit(prompt))[seed]]
    return render(parse_caption(prompt), np.random.default_rng(seed))


def test_score_and_read_agrees_with_score_image_and_reads_what_was_drawn():
    images, captions = shapes_dataset(20, seed=5, held_out=True)
    for image, caption in zip(images, captions):
        verdicts, readings = score_and_read(image, caption)
        assert verdicts == score_image(image, caption)
        assert all(named == read for pairs in readings.values() for named, read in pairs), (caption, readings)
    verdicts, readings = score_and_read(np.full((64, 64, 3), 128, np.uint8), "a red circle above a blue square")
    assert readings == {"color": [("red", None), ("blue", None)], "shape": [("circle", None), ("square", None)]}
    digit = render_prompt("a handwritten digit seven", 0)
    assert score_and_read(digit, "a handwritten digit seven") == ({"digit": [True]}, {"digit": [(7, 7)]})


def test_confusion_counts_named_against_read():
    confusion = {}
    add_readings(confusion, {"shape": [("circle", "square"), ("circle", "circle"), ("square", None)]})
    assert confusion["shape"]["circle"] == {"circle": 1, "square": 1, "triangle": 0, "none": 0}
    assert confusion["shape"]["square"]["none"] == 1 and sum(confusion["shape"]["triangle"].values()) == 0
    assert most_confused(confusion["shape"]) == ("square", "none", 1)


def test_report_of_a_perfect_model_and_of_its_broken_colour(tmp_path):
    prompts = prompt_set("held-out", 15)
    perfect = measure(render_prompt, prompts, [0], "rendered data")
    assert perfect.fidelity >= 0.95 and perfect.n == 15 and len(perfect.images) == 15
    assert perfect.per_attribute_count == {"color": 15, "shape": 15, "position": 5, "relation": 5, "digit": 5}
    data = perfect.as_dict()
    assert set(data["confusion"]) == {"color", "shape", "digit"}
    assert data["confusion"]["shape"]["circle"]["circle"] == sum(data["confusion"]["shape"]["circle"].values())
    assert all("read" in item for item in data["items"])

    broken = measure(lambda p, s: np.ascontiguousarray(render_prompt(p, s)[..., [1, 2, 0]]), prompts, [0],
                     "rendered data, R G B -> G B R")
    # colours read as other colours (a two-shape caption can pair a shape with the other's colour by chance)
    assert broken.per_attribute["color"] <= 0.2
    assert all(broken.per_attribute[k] == perfect.per_attribute[k] for k in ("position", "digit"))
    gate = GateResult(broken, perfect, QUALITY_MARGIN)
    assert gate.failed_classes == ["color"]

    text = markdown_report(broken, gate, setting="15 held-out prompts x 1 seed")
    assert "| color | 15 | 100.0% | 20.0% | +80.0% | 25.8% = 3 of 15 | **FAILED** |" in text
    assert "| shape | 15 | 100.0% | 100.0% | +0.0% | 25.8% = 3 of 15 | passed |" in text
    assert "### Confusion: shape" in text and "### Confusion: digit" in text
    assert "| purple | 0 | 0 | 3 | 0 | **0** | 0 | 0.0% |" in text  # purple's ink, turned, reads green
    assert broken.confusion["color"]["red"]["blue"] == 1  # R G B -> G B R puts red's ink in the blue channel
    plain = markdown_report(perfect)
    assert "may lose 5.0% = 2 of 45 attribute verdicts" in plain and "| position | 5 | 5 | 100.0% |" in plain
    assert "gate margin against this run: 5% = 2 of 45 attributes" in text_summary(perfect)

    grid = grid_image(broken, columns=5)
    cell_w, cell_h = 128 + 2 * PAD, 128 + 2 * PAD + TEXT_LINES * LINE_HEIGHT
    assert grid.shape[1] == 5 * cell_w and grid.dtype == np.uint8
    top = grid.shape[0] - 3 * cell_h  # under the title: 15 pictures in 3 rows
    frames = [tuple(grid[top + (i // 5) * cell_h + 2, (i % 5) * cell_w + 2]) for i in range(15)]
    # every shapes picture has its colours wrong and the rest right (amber), a digit read right is green
    expected = [ALL_RIGHT if all(v for vs in item["verdicts"].values() for v in vs) else SOME_RIGHT
                for item in broken.items]
    assert frames == expected and expected.count(SOME_RIGHT) == 10
