"""safetensors checkpoints for every component, strict about what they contain.

A checkpoint that does not fit the module fails with one `CheckpointError` listing every missing,
unexpected and wrongly shaped key, instead of torch's first-error-wins or a silent partial load.
Other layouts (diffusers, SD single files, transformers) are mapped onto our names by the
`convert_*` modules and recognised by `checkpoint_layout`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

# torch.load (weights_only) reads the pickled formats the field still ships (.bin, .ckpt, .pt).
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


class CheckpointError(ValueError):
    def __init__(self, source: str, missing=(), unexpected=(), mismatched=(), reason: str | None = None,
                 unmapped=()):
        self.source = source
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.unmapped = sorted(unmapped)  # keys of a foreign layout no conversion rule covers
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.reason:
            return f"bad checkpoint {self.source}: {self.reason}"
        parts = []

        def listing(label: str, keys: list[str]) -> None:
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")

        listing("unmapped keys (no conversion rule)", self.unmapped)
        listing("missing keys", self.missing)
        listing("unexpected keys", self.unexpected)
        listing("wrong shapes", self.mismatched)
        return f"bad checkpoint {self.source}: " + "; ".join(parts)


def read_state_dict(path: str | os.PathLike, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """A weights file as a state dict; with `prefixes`, only the keys starting with one of them
    (a safetensors file is then read key by key: a 4 GB single-file checkpoint is not read whole
    to get its 160 MB decoder)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(str(path), reason="file not found")
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickled(path, prefixes)
    try:
        if prefixes is None:
            return load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefixes)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(str(path), reason=f"not a readable safetensors file ({exc})") from None


def state_dict_keys(path: str | os.PathLike) -> list[str]:
    """The key names of a weights file (a safetensors file: without reading any tensor)."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        return list(_read_pickled(path, None))
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(str(path), reason=f"not a readable safetensors file ({exc})") from None


def _read_pickled(path: Path, prefixes: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    # weights_only: a checkpoint from the internet must not run code on load
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise CheckpointError(str(path), reason=f"not a readable torch weights file ({type(exc).__name__}: "
                                                f"{exc})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # a training checkpoint (CompVis / Lightning) wraps the weights
    if not isinstance(data, dict):
        raise CheckpointError(str(path), reason=f"holds a {type(data).__name__}, not a state dict")
    return {k: v for k, v in data.items()
            if isinstance(v, torch.Tensor) and (prefixes is None or k.startswith(prefixes))}


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(path), reason=f"not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(str(path), reason="not a JSON object")
    return data


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(source, missing, unexpected, mismatched)
    module.load_state_dict(state, strict=True)


def load_component(module: nn.Module, path: str | os.PathLike) -> nn.Module:
    load_state_dict_strict(module, read_state_dict(path), str(path))
    return module


def save_component(module: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write atomically: a crash never leaves a half-written checkpoint under the final name."""
    from md_export.export.manifest import write_file_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    return write_file_atomic(path, lambda tmp: save_file(state, tmp, metadata=metadata), mode=None)


class ConfigMismatchError(CheckpointError):
    """A checkpoint's own config (diffusers / transformers config.json) differs from the preset's."""

    def __init__(self, source: str, preset: str, differences: list[tuple[str, object, object]]):
        self.preset = preset
        self.fields = [name for name, _, _ in differences]
        listed = "; ".join(f"{name}: preset {ours!r}, checkpoint {theirs!r}" for name, ours, theirs in differences)
        super().__init__(source, reason=f"config does not match preset {preset}: {listed}")


class UnsupportedConfigError(CheckpointError):
    """A checkpoint config our modules cannot represent; names each field and why."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(source, reason="cannot be represented by our modules: " + "; ".join(problems))


def config_differences(ours, theirs, ignore: tuple[str, ...] = ()) -> list[tuple[str, object, object]]:
    """(field, ours, theirs) for every dataclass field that differs, in declaration order."""
    return [(f.name, getattr(ours, f.name), getattr(theirs, f.name)) for f in dataclasses.fields(ours)
            if f.name not in ignore and getattr(ours, f.name) != getattr(theirs, f.name)]


def folder_weight_files(directory: str | os.PathLike, stems: tuple[str, ...]) -> list[Path]:
    """The weights files of a diffusers / transformers model folder: `<stem>.safetensors` (or .bin),
    all shards of `<stem>.safetensors.index.json`, else the one .safetensors there (a variant such
    as model.fp16.safetensors); empty when there is none."""
    directory = Path(directory)
    for stem in stems:
        for suffix in (".safetensors", ".bin"):
            if (directory / f"{stem}{suffix}").is_file():
                return [directory / f"{stem}{suffix}"]
            index = directory / f"{stem}{suffix}.index.json"
            if index.is_file():
                shards = sorted(set(read_json(index).get("weight_map", {}).values()))
                if not shards:
                    raise CheckpointError(str(index), reason="index without a weight_map")
                return [directory / shard for shard in shards]
    candidates = sorted(directory.glob("*.safetensors"))
    if len(candidates) > 1:  # variants (fp16, non_ema, ...) of one model: merging them would mix weights
        raise CheckpointError(str(directory), reason=f"several weights files ({', '.join(p.name for p in candidates)}) "
                                                     f"and no {stems[0]}.safetensors: keep the one to use")
    return candidates


def read_folder_weights(directory: str | os.PathLike, stems: tuple[str, ...]) -> dict[str, torch.Tensor]:
    files = folder_weight_files(directory, stems)
    if not files:
        raise CheckpointError(str(directory), reason=f"no .safetensors or .bin weights in the directory "
                                                     f"(expected {stems[0]}.safetensors)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(read_state_dict(file))
    return state
