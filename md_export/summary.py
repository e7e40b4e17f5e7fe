"""Parameters and FLOPs per component, counted on meta tensors (no weight memory needed).

GFLOPs are torch.utils.flop_counter's: 2 x multiply-accumulates of matmuls and convolutions, one
network call at batch 1 (the UNet without guidance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from md_export.models import ABLATION_STEPS, Preset, build_component, component_example_inputs, get_preset
from md_export.models.presets import ABLATION_CHANGES

SUMMARY_COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


@dataclass(frozen=True)
class ComponentCost:
    params: int
    gflops: float


def component_cost(preset: Preset, component: str, resolution: int | None = None) -> ComponentCost:
    with torch.device("meta"):
        module = build_component(preset, component)
    params = sum(p.numel() for p in module.parameters())
    inputs = component_example_inputs(preset, component, resolution, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return ComponentCost(params, counter.get_total_flops() / 1e9)


def preset_summary(preset: Preset, resolution: int | None = None) -> dict:
    resolution = resolution or preset.resolution
    components = {}
    for component in SUMMARY_COMPONENTS:
        cost = component_cost(preset, component, resolution)
        components[component] = {"params": cost.params, "gflops": round(cost.gflops, 3)}
    return {"preset": preset.name, "resolution": resolution, "components": components,
            "unet_residual_blocks": preset.unet.residual_blocks}


def ablation_table(resolution: int = 512, tiny: bool = False) -> list[dict]:
    """One row per step from sd15 to mobilediffusion: UNet params and GFLOPs, and each step's delta."""
    rows, previous = [], None
    for step, name in enumerate(ABLATION_STEPS):
        preset = get_preset(name + ("-tiny" if tiny else ""))
        cost = component_cost(preset, "unet", resolution)
        row = {"step": step, "preset": preset.name, "change": ABLATION_CHANGES[name],
               "unet_params": cost.params, "unet_gflops": round(cost.gflops, 3),
               "residual_blocks": preset.unet.residual_blocks}
        if previous is not None:
            row["delta_params_pct"] = round(100.0 * (cost.params - previous.params) / previous.params, 2)
            row["delta_gflops_pct"] = round(100.0 * (cost.gflops - previous.gflops) / previous.gflops, 2)
        rows.append(row)
        previous = cost
    return rows
