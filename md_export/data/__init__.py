"""Offline, deterministic captioned image data for training the micro reference model."""

from .digits import digits_dataset
from .shapes import Scene, ShapeSpec, parse_caption, render, shapes_dataset, split_scenes

DATASETS = ("shapes", "digits", "both")

__all__ = ["DATASETS", "Scene", "ShapeSpec", "digits_dataset", "parse_caption", "render", "shapes_dataset",
           "split_scenes"]
