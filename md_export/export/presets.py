"""Export a preset's networks (random or checkpoint weights) at one or more resolutions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable

from md_export.models import Preset, component_example_inputs

from ..torch_networks import default_checkpoint_dir, load_module
from .driver import Progress, export_targets, planned_steps
from .manifest import check_output_dir
from .types import ExportError, ExportTarget

EXPORTABLE = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
RESOLUTION_FREE = ("text_encoder",)


def preset_targets(preset: Preset, components: Iterable[str], resolutions: Iterable[int],
                   checkpoint_dir: str | Path | None = None, seed: int = 0) -> tuple[list[ExportTarget], dict]:
    targets, weights = [], {}
    resolutions = list(resolutions)
    factor = preset.vae.downsample_factor * preset.unet.downsample_factor
    for resolution in resolutions:
        if resolution < 1:
            raise ExportError(f"resolution must be a positive number of pixels, got {resolution}")
        if resolution % factor:
            raise ExportError(f"resolution {resolution} is not a multiple of {factor} for preset {preset.name}")
    for component in components:
        if component not in EXPORTABLE:
            raise ExportError(f"unknown component {component!r}; known: {', '.join(EXPORTABLE)}")
        loaded = load_module(preset, component, checkpoint_dir, seed)
        weights[component] = loaded.source
        module = loaded.module
        for resolution in ([None] if component in RESOLUTION_FREE else resolutions):
            examples = component_example_inputs(preset, component, resolution)
            inputs = dict(zip(module.input_names, examples))
            targets.append(ExportTarget(component, module, inputs, tuple(module.output_names), resolution))
    return targets, weights


def export_preset(preset: Preset, components: Iterable[str], formats: Iterable[str], precisions: Iterable[str],
                  out_dir: str | Path, resolutions: Iterable[int] | None = None,
                  checkpoint_dir: str | Path | None = None, seed: int = 0, dynamic_batch: bool = False,
                  progress: Progress | None = None, on_plan: Callable[[int], None] | None = None) -> list[dict]:
    """`on_plan(total_steps)` is called once the work is known, before the first progress message."""
    check_output_dir(out_dir)  # before the networks are built, not after
    resolutions = list(resolutions or [preset.resolution])
    # A directory preset (pruned / distilled) is recorded by path with its weights, so parity and
    # quantize rebuild exactly this model from the manifest.
    checkpoint_dir = default_checkpoint_dir(preset, checkpoint_dir)
    targets, weights = preset_targets(preset, components, resolutions, checkpoint_dir, seed)
    formats, precisions = list(formats), list(precisions)
    if on_plan is not None:
        on_plan(planned_steps(targets, formats, precisions))
    source = {
        "kind": "preset", "preset": preset.name,
        "checkpoint_dir": str(Path(checkpoint_dir).resolve()) if checkpoint_dir else None,
        "weight_seed": seed, "weights": weights,
        "unet_config": {k: v for k, v in dataclasses.asdict(preset.unet).items()},
    }
    # the networks were built here for this export: their weights go as soon as they are converted
    return export_targets(targets, formats, precisions, out_dir, source, dynamic_batch, progress,
                          release_modules=True)
