"""Build the pruned UNet from its new config and carry the surviving weights over.

Each new state-dict key names the old key it comes from (`rename`) and, for narrowed tensors,
which indices survive along which dimension (`keep`); a shape that still does not fit is a bug
and fails loudly through models.checkpoint's strict loader.
"""

from __future__ import annotations

from typing import Callable

import torch

from md_export.models.checkpoint import load_state_dict_strict
from md_export.models.unet import MobileUNet
from md_export.models.unet_config import UNetConfig

Keep = dict[str, list[tuple[int, torch.Tensor]]]  # new key -> [(dim, kept indices), ...]


def rebuild_unet(old: MobileUNet, config: UNetConfig, rename: Callable[[str], str] | None = None,
                 keep: Keep | None = None) -> MobileUNet:
    rename = rename or (lambda key: key)
    keep = keep or {}
    old_state = old.state_dict()
    new = MobileUNet(config).eval()
    state = {}
    for key in new.state_dict():
        tensor = old_state[rename(key)]
        for dim, index in keep.get(key, []):
            tensor = tensor.index_select(dim, index)
        state[key] = tensor.clone()
    load_state_dict_strict(new, state, "pruned UNet")
    return new
