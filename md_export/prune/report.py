"""The numbers a pruning run is judged by: params, GFLOPs, latency, parity to the teacher.

Parity is measured at two levels: the UNet output on held-out inputs (PSNR / cosine), and the
final image of the whole text-to-image pipeline (PSNR) when only the UNet is swapped for the
student: same prompts, seeds, DDIM steps, text encoder and decoder as the teacher's pipeline.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from torch import nn

from md_export.models import Preset, component_example_inputs

from ..parity import compare, psnr_db
from ..summary import component_cost


@torch.no_grad()
def parity_to_teacher(teacher: nn.Module, student: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Output PSNR (dB, 20*log10(max|ref| / RMSE)) and cosine of the student against the teacher."""
    reference = teacher.eval()(*inputs).float().numpy()
    actual = student.eval()(*inputs).float().numpy()
    metrics = compare(reference, actual)
    return {"psnr_db": round(metrics["psnr_db"], 3), "cosine": round(metrics["cosine"], 6),
            "mean_abs": float(metrics["mean_abs"])}


@torch.no_grad()
def torch_latency_ms(module: nn.Module, inputs: tuple[torch.Tensor, ...], runs: int = 3) -> float:
    """Median wall time of one eager call (batch as given), timed by the benchmark harness."""
    from md_export.benchmarks.harness import time_calls

    module.eval()
    _, samples, _ = time_calls(lambda: module(*inputs), warmup=0, runs=runs)
    return round(statistics.median(samples), 2)


class ImageProbe:
    """The teacher pipeline's final images, and any UNet's image PSNR against them.

    Built once per report, so the teacher's images are generated once for every stage.
    """

    def __init__(self, preset: Preset, text_encoder: nn.Module, vae_decoder: nn.Module, teacher_unet: nn.Module,
                 prompts: int = 1, steps: int = 4, seed: int = 0):
        from md_export.calibration.builders import load_prompts

        self.preset, self.steps, self.seed = preset, steps, seed
        self.prompts = load_prompts()[:prompts]
        self._text_encoder, self._vae_decoder = text_encoder, vae_decoder
        self.reference = self.images(teacher_unet)

    def images(self, unet: nn.Module) -> list[np.ndarray]:
        from ..pipeline import Networks, TextToImagePipeline
        from ..runtimes.torch_runner import TorchRunner

        def runner(module: nn.Module, component: str) -> TorchRunner:
            return TorchRunner(module, component_example_inputs(self.preset, component))

        networks = Networks(runner(self._text_encoder, "text_encoder"), runner(unet, "unet"),
                            runner(self._vae_decoder, "vae_decoder"))
        pipeline = TextToImagePipeline(networks, self.preset.unet.prediction_type)
        return [pipeline.generate(prompt, self.steps, self.seed + i).image for i, prompt in enumerate(self.prompts)]

    def psnr_db(self, unet: nn.Module) -> float:
        """Mean over prompts of the uint8 image PSNR (peak = the reference's max) to the teacher's image."""
        scores = [psnr_db(ref.astype(np.float64), img.astype(np.float64))
                  for ref, img in zip(self.reference, self.images(unet))]
        return round(float(np.mean(scores)), 2)


def stage_row(stage: str, preset: Preset, module: nn.Module, teacher: nn.Module,
              eval_inputs: tuple[torch.Tensor, ...], latency_inputs: tuple[torch.Tensor, ...],
              probe: ImageProbe | None = None) -> dict:
    cost = component_cost(preset, "unet")
    params = sum(p.numel() for p in module.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in module.parameters())
    row = {"stage": stage, "params": params, "nonzero_params": nonzero, "gflops": round(cost.gflops, 3),
           "torch_latency_ms": torch_latency_ms(module, latency_inputs),
           **{f"parity_{k}": v for k, v in parity_to_teacher(teacher, module, eval_inputs).items()}}
    if probe is not None:
        row["image_psnr_db"] = probe.psnr_db(module)
    return row


def markdown_table(rows: list[dict]) -> str:
    lines = ["| stage | params | nonzero | GFLOPs | torch ms | PSNR to teacher (dB) | cosine | image PSNR (dB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        image = f"{r['image_psnr_db']:.2f}" if r.get("image_psnr_db") is not None else "-"
        lines.append(f"| {r['stage']} | {r['params']:,} | {r['nonzero_params']:,} | {r['gflops']:.3f} | "
                     f"{r['torch_latency_ms']:.1f} | {r['parity_psnr_db']:.2f} | {r['parity_cosine']:.5f} | "
                     f"{image} |")
    return "\n".join(lines) + "\n"
