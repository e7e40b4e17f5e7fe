"""End-to-end text -> image latency with the stage breakdown users know from onnxruntime's SD demo:
text encoder, UNet x N, VAE decoder, total; plus one `unet_step` item (one denoising step, both
guidance halves) from timing every UNet call the sampler makes.

Steps 1 uses the one-step sampler (MobileDiffusion-DiffusionGAN style); more steps use DDIM.
Guidance off is guidance scale 1.0 (the pipeline then skips the unconditional pass)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from md_export.errors import MdExportError
from md_export.pipeline import Networks, TextToImagePipeline
from md_export.runtimes.base import Runner, TensorSpec

from .harness import Timing, make_item
from .limit import limit_basis, limit_fields

PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 0


class CallTimer(Runner):
    """A runner that times every call of the one it wraps (the UNet, for per-step numbers)."""

    def __init__(self, inner: Runner):
        self.inner = inner
        self.runtime = inner.runtime
        self.calls_ms: list[float] = []

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.inner.inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.inner.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.inner.run(feeds)
        self.calls_ms.append((time.perf_counter() - start) * 1e3)
        return out


@dataclass(frozen=True)
class PipelineCase:
    steps: int
    guidance_scale: float

    @property
    def sampler(self) -> str:
        return "onestep" if self.steps == 1 else "ddim"

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    @property
    def label(self) -> str:
        return f"{self.steps}step" + (f"/cfg{self.guidance_scale:g}" if self.guided else "/nocfg")


def parse_cases(steps: str, guidance: str, scale: float) -> list[PipelineCase]:
    """`--steps 1,8 --guidance on,off` -> every combination (one-step never uses guidance)."""
    try:
        step_list = [int(s) for s in steps.split(",") if s]
    except ValueError:
        raise MdExportError(f"--steps takes comma-separated integers, got {steps!r}") from None
    if not step_list or any(s < 1 for s in step_list):
        raise MdExportError(f"--steps must be >= 1, got {steps!r}")
    modes = [g.strip() for g in guidance.split(",") if g.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        raise MdExportError(f"--guidance takes on, off or on,off; got {guidance!r}")
    cases = []
    for s in step_list:
        for mode in modes:
            case = PipelineCase(s, scale if mode == "on" and s > 1 else 1.0)
            if case not in cases:
                cases.append(case)
    return cases


def pipeline_work(component_gflops: dict[str, float | None], case: PipelineCase) -> dict[str, tuple[float | None, int]]:
    """Work of one image per component, (GFLOPs of a batch-1 call, calls): the text encoder once
    (the pipeline encodes the empty negative prompt once and reuses it, so a warm image encodes
    only its prompt; a `first_is_timed` run also encodes the negative, one text-encoder call more,
    under 1% of a 512x512 image's work), UNet steps (x2 with guidance), decoder once."""
    factor = 2 if case.guided else 1
    return {"text_encoder": (component_gflops.get("text_encoder"), 1),
            "unet": (component_gflops.get("unet"), case.steps * factor),
            "vae_decoder": (component_gflops.get("vae_decoder"), 1)}


def pipeline_gflops(component_gflops: dict[str, float | None], case: PipelineCase) -> float | None:
    work = pipeline_work(component_gflops, case)
    if any(gflops is None for gflops, _ in work.values()):
        return None
    return sum(gflops * calls for gflops, calls in work.values())


def bench_pipeline(networks: Networks, init_ms: float, prediction_type: str, case: PipelineCase, *, warmup: int,
                   runs: int, name: str, runtime: str, precision: str, threads: int, resolution: int,
                   component_gflops: dict[str, float | None], peak: dict | None, tick=None,
                   first_is_timed: bool = False, component_precisions: dict[str, str] | None = None,
                   init_fields: dict | None = None) -> tuple[dict, dict]:
    """(pipeline item, unet_step item) for one case; Ctrl-C keeps the runs already timed.

    `first_is_timed` counts the first generation as a timed run too (for full-size suites where one
    8-step image takes minutes); the item then says so in `first_run_timed`.
    `component_precisions`: the manifest precision of each network that ran (default: `precision`
    for all three); each is held against its own peak in `limit_ms`. `init_fields` (init_ms_cold,
    ort_cache, ...) go into both items as they are."""
    precisions = {c: precision for c in ("text_encoder", "unet", "vae_decoder")} | (component_precisions or {})
    timer = CallTimer(networks.unet)
    pipeline = TextToImagePipeline(Networks(networks.text_encoder, timer, networks.vae_decoder), prediction_type)
    # With guidance each step is a batch of 2: one call (free or fixed batch 2) or two batch-1 calls.
    unet_batch = pipeline.unet_batch or (2 if case.guided else 1)
    calls_per_step = max(1, (2 if case.guided else 1) // unet_batch)

    def generate():
        return pipeline.generate(PROMPT, case.steps, SEED, case.guidance_scale, case.sampler)

    if first_is_timed and warmup:
        raise ValueError("first_is_timed runs without warm-up (the first generation is a timed one)")
    stage_ms: dict[str, list[float]] = {"text_encoder": [], "unet": [], "vae_decoder": [], "total": []}
    start = time.perf_counter()
    first = generate()
    first_ms = (time.perf_counter() - start) * 1e3
    if first_is_timed:
        for stage in stage_ms:
            stage_ms[stage].append(first.seconds[stage] * 1e3)
        runs -= 1
    else:
        for _ in range(warmup):
            generate()
            if tick:
                tick()
        timer.calls_ms.clear()  # only the timed runs' UNet calls make the per-step numbers
    interrupted = False
    try:
        for _ in range(runs):
            seconds = generate().seconds
            for stage in stage_ms:
                stage_ms[stage].append(seconds[stage] * 1e3)
            if tick:
                tick()
    except KeyboardInterrupt:
        if not stage_ms["total"]:
            raise
        interrupted = True
    done = len(stage_ms["total"])
    calls = timer.calls_ms[:done * case.steps * calls_per_step]
    step_ms = [sum(calls[i:i + calls_per_step]) for i in range(0, len(calls), calls_per_step)]
    stages = {stage: round(statistics.median(values), 3) for stage, values in stage_ms.items()}
    stages["unet_per_step"] = round(statistics.median(step_ms), 3)
    common = dict(runtime=runtime, precision=precision, threads=threads, peak=peak, resolution=resolution,
                  steps=case.steps, guidance_scale=case.guidance_scale, sampler=case.sampler)
    common |= init_fields or {}
    work = pipeline_work(component_gflops, case)
    pipeline_item = make_item(
        name=f"{name}/{case.label}", level="pipeline", component="pipeline",
        timing=Timing(init_ms, first_ms, stage_ms["total"], interrupted),
        gflops=pipeline_gflops(component_gflops, case), stages=stages, prompt=PROMPT, seed=SEED,
        first_run_timed=first_is_timed, component_precisions=precisions, **common)
    pipeline_item |= limit_fields(limit_basis(work, precisions, peak), pipeline_item["latency_ms"]["p50"])
    unet_gflops = component_gflops.get("unet")
    step_item = make_item(
        name=f"unet_step@{resolution}/{runtime}/{precision}/" + ("cfg" if case.guided else "nocfg"),
        level="unet_step", component="unet",
        timing=Timing(init_ms, first_ms, step_ms, interrupted),
        gflops=unet_gflops * (2 if case.guided else 1) if unet_gflops else None,
        calls_per_step=calls_per_step, component_precisions={"unet": precisions["unet"]}, **common)
    step_basis = limit_basis({"unet": (unet_gflops, 2 if case.guided else 1)}, precisions, peak)
    step_item |= limit_fields(step_basis, step_item["latency_ms"]["p50"])
    return pipeline_item, step_item
