import numpy as np
import pytest

from md_export.data.digits import digits_dataset
from md_export.data.shapes import shapes_dataset
from md_export.errors import BadArgumentError
from md_export.quality import fidelity, quality_prompts, score_image
from md_export.quality.digits_scorer import predict_digits
from md_export.data.digits import parse_caption as parse_digit


def test_rendered_scenes_score_every_attribute_correct():
    images, captions = shapes_dataset(60, seed=11, held_out=True)
    for image, caption in zip(images, captions):
        verdicts = score_image(image, caption)
        assert fidelity(verdicts) == 1.0, (caption, verdicts)


def test_wrong_captions_score_low():
    images, captions = shapes_dataset(30, seed=12)
    scores = []
    for image, caption in zip(images, captions):
        wrong = caption.replace("red", "TMP").replace("blue", "red").replace("TMP", "blue")
        wrong = wrong.replace("circle", "TMP").replace("square", "circle").replace("TMP", "square")
        wrong = wrong.replace("left", "TMP").replace("right", "left").replace("TMP", "right")
        wrong = wrong.replace("above", "TMP").replace("below", "above").replace("TMP", "below")
        if wrong != caption:
            scores.append(fidelity(score_image(image, wrong)))
    assert np.mean(scores) < 0.75


def test_blank_picture_scores_zero_and_bad_input_is_a_clear_error():
    grey = np.full((64, 64, 3), 128, np.uint8)
    assert fidelity(score_image(grey, "a red circle on the left")) == 0.0
    with pytest.raises(BadArgumentError):
        score_image(grey, "a photo of an astronaut")
    with pytest.raises(BadArgumentError):
        score_image(np.zeros((32, 32, 3), np.uint8), "a red circle on the left")


def test_digit_classifier_reads_unseen_handwriting():
    images, captions = digits_dataset(held_out=True)
    predicted = predict_digits(images)
    assert np.mean(predicted == np.array([parse_digit(c) for c in captions])) >= 0.97


def test_prompt_sets_are_deterministic_and_mixed():
    held = quality_prompts("held-out", 20)
    assert held == quality_prompts("held-out", 20) and len(held) == 20
    assert sum("digit" in p for p in held) == 4
    assert set(held) != set(quality_prompts("train", 20))
