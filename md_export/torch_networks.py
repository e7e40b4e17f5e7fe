"""Build a preset's three networks as torch runners, with checkpoint weights where given.

Checkpoint directory layout (what `save_checkpoint_dir` writes):
    DIR/text_encoder.safetensors  (or DIR/text_encoder/ as a transformers CLIPTextModel directory)
    DIR/unet.safetensors
    DIR/vae_decoder.safetensors
    DIR/vae_encoder.safetensors   (optional; calibration and parity use it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from md_export.models import (COMPONENTS, CheckpointError, Preset, build_component, component_example_inputs,
                    load_component, load_text_encoder_from_hf, preset_checkpoint_dir, save_component)
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
    """A preset loaded from a directory (preset.json) brings its own weights unless told otherwise;
    a named preset with weights shipped in the package (models/weights/<name>/) uses those."""
    if checkpoint_dir is not None:
        return checkpoint_dir
    return preset_checkpoint_dir(preset) or shipped_weights_dir(preset.name)


def load_module(preset: Preset, component: str, checkpoint_dir: str | Path | None, seed: int) -> LoadedModule:
    checkpoint_dir = default_checkpoint_dir(preset, checkpoint_dir)
    module = build_component(preset, component, seed)
    if checkpoint_dir is None:
        return LoadedModule(module, f"random weights (seed {seed})")
    directory = Path(checkpoint_dir)
    hf_dir = directory / component
    if component == "text_encoder" and hf_dir.is_dir():
        loaded = load_text_encoder_from_hf(hf_dir)
        if loaded.config != preset.text_encoder:
            raise CheckpointError(str(hf_dir), reason=f"config {loaded.config} does not match preset {preset.name}")
        return LoadedModule(loaded.eval(), f"checkpoint {hf_dir}")
    path = directory / f"{component}.safetensors"
    if not path.exists():
        return LoadedModule(module, f"random weights (seed {seed}; no {path.name} in {directory})")
    load_component(module, path)
    return LoadedModule(module, f"checkpoint {path}")


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
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise MdExportError(f"checkpoint directory {directory} does not exist")
    missing = [c for c in components if c in COMPONENTS and c not in allow_random  # unknown names: the caller's error
               and not (directory / f"{c}.safetensors").exists()
               and not (c == "text_encoder" and (directory / c).is_dir())]
    if missing:
        files = ", ".join(f"{c}.safetensors" for c in missing)
        raise MdExportError(f"checkpoint directory {directory} has no {files}; pass --allow-random "
                            f"{','.join(missing)} to run {'it' if len(missing) == 1 else 'them'} with random weights")


def torch_networks(preset: Preset, resolution: int | None = None, checkpoint_dir: str | Path | None = None,
                   seed: int = 0) -> tuple[Networks, dict[str, str]]:
    """The pipeline's networks as torch runners and, per component, where its weights came from."""
    checkpoint_dir = default_checkpoint_dir(preset, checkpoint_dir)
    if checkpoint_dir is not None:
        directory = Path(checkpoint_dir)
        if not directory.is_dir():
            raise MdExportError(f"checkpoint directory {directory} does not exist")
        present = [c for c in PIPELINE_COMPONENTS
                   if (directory / f"{c}.safetensors").exists() or (directory / c).is_dir()]
        if not present:
            raise MdExportError(f"checkpoint directory {directory} holds none of "
                                f"{', '.join(c + '.safetensors' for c in PIPELINE_COMPONENTS)}")
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
