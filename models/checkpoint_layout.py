"""Which layout a checkpoint path has, and each component's weights from it.

    components       DIR/<component>.safetensors, what `save_component` writes. A unet / vae file
                     in diffusers' or CompVis' names and a text encoder with or without
                     `text_model.` load too; DIR/text_encoder/ may be a transformers folder.
    diffusers        a pipeline folder: DIR/{unet,vae,text_encoder}/config.json + weights
                     (diffusion_pytorch_model / model .safetensors or .bin, or shards).
    sd_single_file   FILE.safetensors (or .ckpt) in the original SD-1.x layout.

The diffusers layout carries configs: each is compared with the preset's (a difference is a
`ConfigMismatchError` naming the fields) or builds a preset (`preset_from_diffusers`). The other
two carry none: the preset's config shapes the networks and the strict load checks the fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .checkpoint import (CheckpointError, ConfigMismatchError, config_differences, folder_weight_files,
                         load_state_dict_strict, read_folder_weights, read_json, read_state_dict, state_dict_keys)
from .components import COMPONENTS, build_component
from .convert_diffusers import (UNET_WEIGHT_STEMS, VAE_WEIGHT_STEMS, unet_config_from_diffusers,
                                unet_state_dict_from_diffusers, vae_config_from_diffusers,
                                vae_state_dict_from_diffusers)
from .convert_sd_single_file import (COMPONENT_PREFIXES, UNET_PREFIX, VAE_PREFIX, is_sd_single_file,
                                     text_encoder_state_dict_from_sd, unet_state_dict_from_sd, unknown_keys,
                                     vae_state_dict_from_sd)
from .convert_transformers import (WEIGHT_STEMS as TEXT_WEIGHT_STEMS, text_encoder_config_from_hf,
                                   text_encoder_state_dict_from_hf)
from .presets import Preset

LAYOUTS = ("components", "diffusers", "sd_single_file")
DIFFUSERS_FOLDERS = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae", "vae_encoder": "vae"}
_SIDES = {"vae_decoder": "decoder", "vae_encoder": "encoder"}
# Fields that choose a graph for the same weights, never a different network.
_GRAPH_ONLY = ("attention_implementation",)
_TAESD_ONLY = ("taesd_channels", "taesd_blocks")


def is_diffusers_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "model_index.json").is_file()
                              or any((path / sub / "config.json").is_file() for sub in ("unet", "vae")))


def _component_state(preset: Preset, component: str, state: dict, source: str) -> dict:
    """One component's state dict in whichever naming it came in, on our names."""
    if component == "text_encoder":
        return text_encoder_state_dict_from_hf(state, source)
    if component == "unet":
        if any(k.startswith(("mid_block.",)) or ".ff.net." in k or "samplers.0." in k for k in state):
            return unet_state_dict_from_diffusers(state, source)
        if any(k.startswith(("input_blocks.", UNET_PREFIX)) for k in state):
            state = {k if k.startswith(UNET_PREFIX) else UNET_PREFIX + k: v for k, v in state.items()}
            return unet_state_dict_from_sd(state, preset.unet, source)
        return state
    side = preset.vae.decoder if component == "vae_decoder" else preset.vae.encoder
    if side.family != "kl":
        return state
    if any(".mid.block_1." in k for k in state):  # CompVis names (first_stage_model.* without the prefix)
        state = {k if k.startswith(VAE_PREFIX) else VAE_PREFIX + k: v for k, v in state.items()}
        return vae_state_dict_from_sd(state, _SIDES[component], side, source)
    return vae_state_dict_from_diffusers(state, _SIDES[component], source)


@dataclass
class CheckpointSource:
    """A checkpoint path of one layout; `load` builds a preset's component with its weights."""

    path: Path
    layout: str = "components"

    def has(self, component: str) -> bool:
        raise NotImplementedError

    def expected(self, component: str) -> str:
        """What holds `component` in this layout (for "has no ..." messages)."""
        raise NotImplementedError

    def describe(self, component: str) -> str:
        """Where `component` loads from (the "checkpoint ..." line of a run)."""
        raise NotImplementedError

    def load(self, preset: Preset, component: str) -> nn.Module:
        raise NotImplementedError

    def _build(self, preset: Preset, component: str, state: dict, source: str) -> nn.Module:
        module = build_component(preset, component)
        load_state_dict_strict(module, _component_state(preset, component, state, source), source)
        return module.eval()


@dataclass
class ComponentsFolder(CheckpointSource):
    def _file(self, component: str) -> Path:
        return self.path / f"{component}.safetensors"

    def _text_folder(self) -> Path:
        return self.path / "text_encoder"

    def has(self, component: str) -> bool:
        return self._file(component).exists() or (component == "text_encoder" and self._text_folder().is_dir())

    def expected(self, component: str) -> str:
        return f"{component}.safetensors"

    def describe(self, component: str) -> str:
        use_folder = component == "text_encoder" and not self._file(component).exists() and self._text_folder().is_dir()
        return str(self._text_folder() if use_folder else self._file(component))

    def load(self, preset: Preset, component: str) -> nn.Module:
        file = self._file(component)
        if component == "text_encoder" and not file.exists() and self._text_folder().is_dir():
            folder = self._text_folder()
            if (folder / "config.json").is_file():
                check_config(preset, component, text_encoder_config_from_hf(read_json(folder / "config.json")),
                             str(folder / "config.json"))
            return self._build(preset, component, read_folder_weights(folder, TEXT_WEIGHT_STEMS), str(folder))
        return self._build(preset, component, read_state_dict(file), str(file))


@dataclass
class DiffusersFolder(CheckpointSource):
    layout: str = "diffusers"

    def _folder(self, component: str) -> Path:
        return self.path / DIFFUSERS_FOLDERS[component]

    def _stems(self, component: str) -> tuple[str, ...]:
        return TEXT_WEIGHT_STEMS if component == "text_encoder" else (
            UNET_WEIGHT_STEMS if component == "unet" else VAE_WEIGHT_STEMS)

    def has(self, component: str) -> bool:
        folder = self._folder(component)
        return folder.is_dir() and bool(folder_weight_files(folder, self._stems(component)))

    def expected(self, component: str) -> str:
        return f"{DIFFUSERS_FOLDERS[component]}/ (config.json + {self._stems(component)[0]}.safetensors)"

    def describe(self, component: str) -> str:
        return f"{self._folder(component)} (diffusers)"

    def config(self, component: str, prediction_type: str | None = None):
        """Our config of `component` from its config.json: a TextEncoderConfig, UNetConfig or VAEConfig."""
        path = self._folder(component) / "config.json"
        if not path.is_file():
            raise CheckpointError(str(self._folder(component)), reason="no config.json")
        data = read_json(path)
        if component == "text_encoder":
            return text_encoder_config_from_hf(data, str(path))
        if component == "unet":
            return unet_config_from_diffusers(data, prediction_type or self.prediction_type() or "epsilon", str(path))
        return vae_config_from_diffusers(data, str(path))

    def prediction_type(self) -> str | None:
        """The scheduler's prediction_type, None when the folder has no scheduler config."""
        path = self.path / "scheduler" / "scheduler_config.json"
        return read_json(path).get("prediction_type", "epsilon") if path.is_file() else None

    def load(self, preset: Preset, component: str) -> nn.Module:
        folder = self._folder(component)
        # without a scheduler config the folder says nothing about the prediction type: the preset's
        theirs = self.config(component, self.prediction_type() or preset.unet.prediction_type)
        if component in _SIDES:
            theirs = (theirs.decoder if component == "vae_decoder" else theirs.encoder, theirs.scaling_factor)
        check_config(preset, component, theirs, str(folder / "config.json"))
        return self._build(preset, component, read_folder_weights(folder, self._stems(component)), str(folder))


@dataclass
class SDSingleFile(CheckpointSource):
    layout: str = "sd_single_file"
    keys: list[str] = field(default_factory=list)

    def has(self, component: str) -> bool:
        return any(key.startswith(COMPONENT_PREFIXES[component]) for key in self.keys)

    def expected(self, component: str) -> str:
        return " / ".join(f"{prefix}*" for prefix in COMPONENT_PREFIXES[component]) + " keys"

    def describe(self, component: str) -> str:
        return f"{self.path} (SD single file)"

    def load(self, preset: Preset, component: str) -> nn.Module:
        source = str(self.path)
        unknown = unknown_keys(self.keys)
        if unknown:  # a key of no known network may be weights this model needs (a LoRA, an adapter)
            raise CheckpointError(source, unmapped=unknown)
        state = read_state_dict(self.path, COMPONENT_PREFIXES[component])
        if component == "text_encoder":
            mapped = text_encoder_state_dict_from_sd(state, source)
        elif component == "unet":
            mapped = unet_state_dict_from_sd(state, preset.unet, source)
        else:
            side = preset.vae.decoder if component == "vae_decoder" else preset.vae.encoder
            if side.family != "kl":
                raise CheckpointError(source, reason=f"preset {preset.name}'s {component} is {side.family}, "
                                                     "a single file holds SD's KL VAE")
            mapped = vae_state_dict_from_sd(state, _SIDES[component], side, source)
        module = build_component(preset, component)
        load_state_dict_strict(module, mapped, source)
        return module.eval()


def open_checkpoint(path: str | os.PathLike) -> CheckpointSource:
    """The checkpoint at `path` in whichever layout it has (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        keys = state_dict_keys(path)
        if not is_sd_single_file(keys):
            raise CheckpointError(str(path), reason="a single checkpoint file must be an SD-1.x checkpoint "
                                                    f"({UNET_PREFIX}* keys); a component's own file goes into a "
                                                    "folder as <component>.safetensors")
        return SDSingleFile(path, keys=keys)
    if not path.is_dir():
        raise CheckpointError(str(path), reason="no such file or directory")
    if is_diffusers_dir(path):
        return DiffusersFolder(path)
    return ComponentsFolder(path)


def check_config(preset: Preset, component: str, theirs, source: str) -> None:
    """A checkpoint's config against the preset's for `component`; raises naming each differing field.
    For a VAE side, `theirs` is (AutoencoderConfig, scaling_factor)."""
    if component in _SIDES:
        side, scaling = theirs
        ours = preset.vae.decoder if component == "vae_decoder" else preset.vae.encoder
        # a KL side never reads the TAESD fields (the tiny twins shrink them all the same)
        differences = config_differences(ours, side, ignore=_TAESD_ONLY if side.family == "kl" else ())
        if scaling != preset.vae.scaling_factor:
            differences.append(("scaling_factor", preset.vae.scaling_factor, scaling))
    elif component == "unet":
        differences = config_differences(preset.unet, theirs, ignore=_GRAPH_ONLY)
    else:
        differences = config_differences(preset.text_encoder, theirs)
    if differences:
        raise ConfigMismatchError(source, preset.name, differences)


def preset_from_diffusers(directory: str | os.PathLike, name: str | None = None) -> Preset:
    """A preset from a diffusers pipeline folder's configs (text_encoder/, unet/, vae/, scheduler/).

    Named by the folder's resolved path (as directory presets are), so a manifest that records the
    name re-opens the same model. Sampling defaults are SD-1.5's (20 steps, guidance 7.5)."""
    folder = DiffusersFolder(Path(directory).resolve())
    missing = [sub for sub in ("text_encoder", "unet", "vae") if not (folder.path / sub / "config.json").is_file()]
    if missing:
        needed = ", ".join(f"{sub}/config.json" for sub in missing)
        raise CheckpointError(str(folder.path), reason=f"a preset needs {needed}")
    unet = folder.config("unet")
    vae = folder.config("vae_decoder")
    sample_size = read_json(folder.path / "unet" / "config.json").get("sample_size") or 64
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    try:
        return Preset(name=name or str(folder.path), description=f"diffusers pipeline folder {folder.path}",
                      text_encoder=folder.config("text_encoder"), unet=unet, vae=vae,
                      resolution=int(sample_size) * vae.downsample_factor, default_steps=20, guidance_scale=7.5)
    except ValueError as exc:  # the three configs do not fit together (text width, latent channels)
        raise CheckpointError(str(folder.path), reason=str(exc)) from None


def load_pretrained(preset: Preset, component: str, path: str | os.PathLike) -> nn.Module:
    """`component` of `preset` with the weights at `path` (any layout), in eval mode."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    source = open_checkpoint(path)
    if not source.has(component):
        raise CheckpointError(str(path), reason=f"no {source.expected(component)}")
    return source.load(preset, component)


__all__ = ["CheckpointSource", "ComponentsFolder", "DiffusersFolder", "LAYOUTS", "SDSingleFile", "check_config",
           "is_diffusers_dir", "load_pretrained", "open_checkpoint", "preset_from_diffusers"]
