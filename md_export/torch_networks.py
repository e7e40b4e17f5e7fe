"""Build a preset's three networks as torch runners, with checkpoint weights where given.

`checkpoint_dir` may be any layout `md_export.models.open_checkpoint` reads:
    DIR/<component>.safetensors   what `save_checkpoint_dir` writes (text_encoder, unet, vae_decoder,
                                  and optionally vae_encoder, which calibration and parity use);
                                  DIR/text_encoder/ may be a transformers CLIPTextModel folder
    DIR/{unet,vae,text_encoder}/  a diffusers pipeline folder (configs checked against the preset)
    FILE.safetensors              a single-file SD-1.x checkpoint (CompVis layout)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from md_export.models import (COMPONENTS, CheckpointSource, Preset, build_component, component_example_inputs,
                               open_checkpoint, preset_checkpoint_dir, save_component)
from md_export.models.shipped_weights import shipped_weights_dir

from .errors import MdExportError
from .pipeline import Networks
from .runtimes.torch_runner import TorchRunner

PIPELINE_COMPONENTS = ("text_encoder", "unet", "vae_decoder")


@dataclass
class LoadedModule:
    module: nn.Module
    source: str  # "checkpoint PATH" or "random weights (seed N)"


def default_checkpoint_dir(preset: Preset, checkpoint_dir: str | Path | None) -> str | Path | None:
    """A preset loaded from a directory (preset.json, or a diffusers pipeline folder) brings its own
    weights unless told otherwise; a named preset with weights shipped in the package
    (models/weights/<name>/) uses those."""
    if checkpoint_dir is not None:
        return checkpoint_dir
    return preset_checkpoint_dir(preset) or shipped_weights_dir(preset.name)


def load_module(preset: Preset, component: str, checkpoint_dir: str | Path | None, seed: int) -> LoadedModule:
    checkpoint_dir = default_checkpoint_dir(preset, checkpoint_dir)
    if checkpoint_dir is None:
        return LoadedModule(build_component(preset, component, seed), f"random weights (seed {seed})")
    source = open_checkpoint(checkpoint_dir)
    if not source.has(component):
        return LoadedModule(build_component(preset, component, seed),
                            f"random weights (seed {seed}; no {source.expected(component)} in {source.path})")
    return LoadedModule(source.load(preset, component), f"checkpoint {source.describe(component)}")


def _open_existing(checkpoint_dir: str | Path) -> CheckpointSource:
    path = Path(checkpoint_dir)
    if not path.exists():
        raise MdExportError(f"checkpoint directory (or file) {path} does not exist")
    return open_checkpoint(path)


CHECKPOINT_DIR_HELP = ("weights: a folder of <component>.safetensors, a diffusers pipeline folder (unet/, vae/, "
                       "text_encoder/; configs checked against --preset), or a single-file SD-1.x .safetensors "
                       "(none given: random weights; a missing component is an error, see --allow-random)")

ALLOW_RANDOM_HELP = ("components that may run with random weights when the checkpoint directory lacks their "
                     "file (repeatable or comma-separated, e.g. --allow-random vae_encoder); any other missing "
                     "component file is an error")


def add_allow_random_argument(parser) -> None:
    """`--allow-random COMPONENT` on a command that takes a checkpoint directory."""
    parser.add_argument("--allow-random", action="append", default=[], metavar="COMPONENT", help=ALLOW_RANDOM_HELP)


def allowed_random(values: list[str] | None) -> tuple[str, ...]:
    """--allow-random values (repeated and/or comma-separated) as component names, checked."""
    names = tuple(name.strip() for value in values or () for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in COMPONENTS]
    if unknown:
        raise MdExportError(f"--allow-random takes components ({', '.join(COMPONENTS)}), got {', '.join(unknown)}")
    return names


def require_checkpoint_components(preset: Preset, checkpoint_dir: str | Path | None, components,
                                  allow_random: tuple[str, ...] = ()) -> None:
    """A checkpoint directory in use (given, a directory preset's, or shipped) must hold every component
    the command runs: `load_module` falls back to random weights for a missing file, which would
    silently turn a checkpoint into noise. `allow_random` names the components allowed to."""
    checkpoint_dir = default_checkpoint_dir(preset, checkpoint_dir)
    if checkpoint_dir is None:
        return  # no checkpoint at all: random weights are what the user asked for
    source = _open_existing(checkpoint_dir)
    missing = [c for c in components if c in COMPONENTS and c not in allow_random  # unknown names: the caller's error
               and not source.has(c)]
    if missing:
        files = ", ".join(source.expected(c) for c in missing)
        kind = "directory" if source.path.is_dir() else "file"
        raise MdExportError(f"checkpoint {kind} {source.path} has no {files}; pass --allow-random "
                            f"{','.join(missing)} to run {'it' if len(missing) == 1 else 'them'} with random weights")


def torch_networks(preset: Preset, resolution: int | None = None, checkpoint_dir: str | Path | None = None,
                   seed: int = 0) -> tuple[Networks, dict[str, str]]:
    """The pipeline's networks as torch runners and, per component, where its weights came from."""
    checkpoint_dir = default_checkpoint_dir(preset, checkpoint_dir)
    if checkpoint_dir is not None:
        source = _open_existing(checkpoint_dir)
        if not any(source.has(c) for c in PIPELINE_COMPONENTS):
            raise MdExportError(f"checkpoint {source.path} holds none of "
                                f"{', '.join(source.expected(c) for c in PIPELINE_COMPONENTS)}")
    runners, sources = {}, {}
    for component in PIPELINE_COMPONENTS:
        loaded = load_module(preset, component, checkpoint_dir, seed)
        examples = component_example_inputs(preset, component, resolution)
        runners[component] = TorchRunner(loaded.module, examples)
        sources[component] = loaded.source
    return Networks(**runners), sources


def save_checkpoint_dir(directory: str | Path, modules: dict[str, nn.Module]) -> None:
    for component, module in modules.items():
        save_component(module, Path(directory) / f"{component}.safetensors")
