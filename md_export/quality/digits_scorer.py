"""Score a picture against "a handwritten digit N" with a scikit-learn classifier trained on the
digits set's training split (the held-out scans never reach it): the picture is box-filtered to
the set's own 8x8, 0..16 format and classified."""

from __future__ import annotations

import functools

import numpy as np

from ..data.digits import parse_caption, raw_digits

CLASSIFIER_SPLIT_SEED = 0


@functools.lru_cache(maxsize=2)
def digit_classifier(split_seed: int = CLASSIFIER_SPLIT_SEED):
    from sklearn.svm import SVC

    scans, labels = raw_digits(held_out=False, split_seed=split_seed)
    return SVC(gamma=0.02, C=10.0).fit(scans.reshape(len(scans), -1), labels)


def to_scan(image: np.ndarray) -> np.ndarray:
    """(64, 64, 3) uint8 -> (8, 8) in [0, 1] (grey, 8x8 block means)."""
    grey = image.astype(np.float32).mean(axis=2) / 255.0
    side = grey.shape[0] // 8
    return grey.reshape(8, side, 8, side).mean(axis=(1, 3))


def predict_digits(images: np.ndarray) -> np.ndarray:
    scans = np.stack([to_scan(image) for image in images])
    return digit_classifier().predict(scans.reshape(len(scans), -1))


def read_digit(image: np.ndarray, caption: str) -> tuple[dict[str, list[bool]], dict[str, list[tuple[int, int]]]]:
    """score_digit's verdict, and (the digit the caption names, the digit the classifier read)."""
    wanted, read = parse_caption(caption), int(predict_digits(image[None])[0])
    return {"digit": [read == wanted]}, {"digit": [(wanted, read)]}


def score_digit(image: np.ndarray, caption: str) -> dict[str, list[bool]]:
    return read_digit(image, caption)[0]
