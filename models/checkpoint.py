"""safetensors checkpoints for every component, strict about what they contain.

A checkpoint that does not fit the module fails with one `CheckpointError` listing every missing,
unexpected and wrongly shaped key, instead of torch's first-error-wins or a silent partial load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .text_encoder import CLIPTextEncoder, TextEncoderConfig

# Keys CLIPTextModel checkpoints may carry that are buffers, not weights.
_IGNORED_HF_KEYS = ("embeddings.position_ids",)
# Parts of a full CLIPModel checkpoint that are not the text transformer.
_NOT_TEXT_MODEL = ("vision_model.", "visual_projection.", "text_projection.", "logit_scale")


class CheckpointError(ValueError):
    def __init__(self, source: str, missing=(), unexpected=(), mismatched=(), reason: str | None = None):
        self.source = source
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
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

        listing("missing keys", self.missing)
        listing("unexpected keys", self.unexpected)
        listing("wrong shapes", self.mismatched)
        return f"bad checkpoint {self.source}: " + "; ".join(parts)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(str(path), reason="file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(str(path), reason=f"not a readable safetensors file ({exc})") from None


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


def clip_state_dict_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a CLIPTextModel (or a whole CLIPModel) state dict onto CLIPTextEncoder's names."""
    out = {}
    for key, value in state.items():
        if key.startswith(_NOT_TEXT_MODEL):
            continue
        name = key.removeprefix("text_model.")
        if name not in _IGNORED_HF_KEYS:
            out[name] = value
    return out


def load_text_encoder_from_hf(directory: str | os.PathLike) -> CLIPTextEncoder:
    """Load a transformers CLIPTextModel directory (config.json + model.safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(str(directory), reason="no config.json (expected a CLIPTextModel directory)")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(str(directory), reason="no .safetensors weights in the directory")
    config = TextEncoderConfig.from_hf_dict(json.loads(config_path.read_text()))
    state: dict[str, torch.Tensor] = {}
    for file in weights:
        state.update(read_state_dict(file))
    model = CLIPTextEncoder(config)
    load_state_dict_strict(model, clip_state_dict_from_hf(state), str(directory))
    return model
