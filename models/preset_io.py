"""A preset as a directory: `preset.json` (every config of the preset) + `<component>.safetensors`.

This is how a pruned or fine-tuned model travels: `get_preset(DIR)` rebuilds the exact networks
from preset.json, and the directory's safetensors are the default checkpoint of that preset. A
directory preset's `name` is its resolved path, so a manifest that records the preset name can be
re-opened by `md-export parity --pipeline` and friends like any named preset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from .checkpoint import CheckpointError, save_component
from .checkpoint_layout import is_diffusers_dir, preset_from_diffusers
from .presets import Preset, UnknownPresetError, preset_names
from .presets import get_preset as get_named_preset
from .text_encoder import TextEncoderConfig
from .unet_config import UNetConfig
from .vae_config import AutoencoderConfig, VAEConfig

PRESET_FILE = "preset.json"
FORMAT_VERSION = 1


class PresetFileError(CheckpointError):
    """A preset directory that cannot be read back (missing or invalid preset.json)."""

    def __init__(self, source: str, reason: str):
        super().__init__(source, reason=reason)


def _tuples(value):
    """JSON lists back to the tuples the frozen configs hold."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _config(cls, data: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return cls(**{k: _tuples(v) for k, v in data.items()})


def preset_to_dict(preset: Preset, name: str | None = None) -> dict:
    data = dataclasses.asdict(preset)
    data["name"] = name or data["name"]
    return {"format_version": FORMAT_VERSION, "preset": data}


def preset_from_dict(data: dict, name: str | None = None) -> Preset:
    body = dict(data["preset"])
    vae = body.pop("vae")
    body["text_encoder"] = _config(TextEncoderConfig, body["text_encoder"])
    body["unet"] = _config(UNetConfig, body["unet"])
    body["vae"] = VAEConfig(decoder=_config(AutoencoderConfig, vae["decoder"]),
                            encoder=_config(AutoencoderConfig, vae["encoder"]),
                            scaling_factor=vae["scaling_factor"])
    if name is not None:
        body["name"] = name
    return Preset(**body)


def is_preset_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / PRESET_FILE).is_file()


def load_preset_dir(directory: str | os.PathLike) -> Preset:
    directory = Path(directory).resolve()
    path = directory / PRESET_FILE
    if not path.is_file():
        raise PresetFileError(str(directory), f"no {PRESET_FILE} (not a preset directory)")
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        return preset_from_dict(data, name=str(directory))
    except (ValueError, KeyError, TypeError) as exc:
        raise PresetFileError(str(path), f"invalid preset description ({exc})") from None


def preset_checkpoint_dir(preset: Preset) -> Path | None:
    """The directory a directory preset came from (its weights), None for a named preset."""
    path = Path(preset.name)
    return path if path.is_absolute() and (is_preset_dir(path) or is_diffusers_dir(path)) else None


def get_preset(name_or_path: str) -> Preset:
    """A named preset, a preset directory (preset.json + safetensors), or a diffusers pipeline
    folder (the preset is built from its configs; its weights come with it)."""
    try:
        return get_named_preset(name_or_path)
    except UnknownPresetError:
        if is_preset_dir(name_or_path):
            return load_preset_dir(name_or_path)
        if is_diffusers_dir(name_or_path):
            return preset_from_diffusers(name_or_path)
        if Path(name_or_path).is_dir():
            return load_preset_dir(name_or_path)  # names what a preset directory lacks
        raise UnknownPresetError(name_or_path, preset_names() + ["or a directory with preset.json, or a "
                                                                 "diffusers pipeline folder"]) from None


def write_preset_files(preset: Preset, modules: dict[str, nn.Module], directory: str | os.PathLike,
                       name: str | None = None, extra: dict | None = None,
                       files: dict[str, str] | None = None) -> Path:
    """Write the weights, the extra text `files`, then preset.json, each file atomically, into an
    existing directory: preset.json comes last, so the directory reads as a preset only when whole."""
    from md_export.export.manifest import write_text_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for component, module in modules.items():
        save_component(module, directory / f"{component}.safetensors")
    for file_name, text in (files or {}).items():
        write_text_atomic(directory / file_name, text, mode=None)
    data = preset_to_dict(preset, name)
    if extra:
        data["provenance"] = extra
    write_text_atomic(directory / PRESET_FILE, json.dumps(data, indent=2) + "\n", mode=None)
    return directory


def save_preset_dir(preset: Preset, modules: dict[str, nn.Module], directory: str | os.PathLike,
                    name: str | None = None, extra: dict | None = None, files: dict[str, str] | None = None) -> Path:
    """A fresh preset directory, atomically: everything is written to a sibling temp directory that
    replaces `directory` only when complete and readable."""
    from md_export.export.manifest import replace_path

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        write_preset_files(preset, modules, staging, name, extra, files)
        load_preset_dir(staging)  # what we wrote must read back
        replace_path(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory
