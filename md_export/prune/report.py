"""The numbers a pruning run is judged by: params, GFLOPs, latency, parity to the teacher."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from models import Preset

from ..parity import compare
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
    """Median wall time of one eager call (batch as given), after one warm-up call."""
    module.eval()(*inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        module(*inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 2)


def stage_row(stage: str, preset: Preset, module: nn.Module, teacher: nn.Module,
              eval_inputs: tuple[torch.Tensor, ...], latency_inputs: tuple[torch.Tensor, ...]) -> dict:
    cost = component_cost(preset, "unet")
    params = sum(p.numel() for p in module.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in module.parameters())
    return {"stage": stage, "params": params, "nonzero_params": nonzero, "gflops": round(cost.gflops, 3),
            "torch_latency_ms": torch_latency_ms(module, latency_inputs),
            **{f"parity_{k}": v for k, v in parity_to_teacher(teacher, module, eval_inputs).items()}}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| stage | params | nonzero | GFLOPs | torch ms | PSNR to teacher (dB) | cosine |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['params']:,} | {r['nonzero_params']:,} | {r['gflops']:.3f} | "
                     f"{r['torch_latency_ms']:.1f} | {r['parity_psnr_db']:.2f} | {r['parity_cosine']:.5f} |")
    return "\n".join(lines) + "\n"
