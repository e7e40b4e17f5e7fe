import numpy as np
import pytest

from md_export.data.digits import caption as digit_caption, digits_dataset, parse_caption as parse_digit, split_indices
from md_export.data.shapes import (CaptionError, Scene, ShapeSpec, all_scenes, parse_caption, shapes_dataset,
                                   split_scenes)


def test_shapes_are_deterministic_for_a_seed_and_differ_across_seeds():
    a_images, a_captions = shapes_dataset(12, seed=3)
    b_images, b_captions = shapes_dataset(12, seed=3)
    c_images, _ = shapes_dataset(12, seed=4)
    assert a_images.shape == (12, 64, 64, 3) and a_images.dtype == np.uint8
    assert np.array_equal(a_images, b_images) and a_captions == b_captions
    assert not np.array_equal(a_images, c_images)


def test_captions_round_trip_through_the_parser():
    for scene in all_scenes()[::37]:
        assert parse_caption(scene.caption()) == scene
    assert parse_caption("a red circle above a blue square") == Scene(
        (ShapeSpec("red", "circle"), ShapeSpec("blue", "square")), "above")
    with pytest.raises(CaptionError):
        parse_caption("a cat on the mat")
    with pytest.raises(CaptionError):
        parse_caption("a pink circle on the left")


def test_held_out_captions_never_appear_in_training():
    train, held = split_scenes(0)
    assert held and train
    assert not {s.caption() for s in train} & {s.caption() for s in held}
    _, captions = shapes_dataset(300, seed=0)
    assert not set(captions) & {s.caption() for s in held}
    _, held_captions = shapes_dataset(20, seed=0, held_out=True)
    assert set(held_captions) <= {s.caption() for s in held}
    assert split_scenes(1)[1] != held  # the split follows its seed


def test_shape_weights_draw_the_weighted_shape_more_often_and_uniform_weights_change_nothing():
    def square_share(captions):
        shapes = [s.shape for c in captions for s in parse_caption(c).objects]
        return shapes.count("square") / len(shapes)

    plain_images, plain = shapes_dataset(600, seed=7)
    _, boosted = shapes_dataset(600, seed=7, shape_weights={"square": 3.0})
    # uniform draws put a square in 1/3 of the objects; weight 3 per square lifts that to about
    # 0.56 (singles 3/5, pairs 0.54); 600 scenes keep the share's standard error near 0.015
    assert square_share(plain) < 0.40 < 0.48 < square_share(boosted)
    same_images, same = shapes_dataset(600, seed=7, shape_weights={"square": 1.0, "circle": 1.0})
    assert same == plain and np.array_equal(same_images, plain_images)
    with pytest.raises(CaptionError, match="cube"):
        shapes_dataset(1, shape_weights={"cube": 2.0})
    with pytest.raises(CaptionError, match="square=0"):
        shapes_dataset(1, shape_weights={"square": 0.0})


def test_digits_are_real_scans_upscaled_with_captions_and_a_seeded_split():
    images, captions = digits_dataset()
    again, _ = digits_dataset()
    assert images.shape[1:] == (64, 64, 3) and np.array_equal(images, again)
    assert captions[0].startswith("a handwritten digit ")
    assert parse_digit(digit_caption(7)) == 7 and parse_digit("a handwritten digit seven") == 7
    train, held = split_indices(0)
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == 1797
    assert not np.array_equal(split_indices(1)[1], held)
