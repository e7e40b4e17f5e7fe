"""Prompt fidelity of a model (torch preset or exported artifacts) and the quality-parity gate.

fidelity = correct attributes / all attributes over prompts x seeds (md_export/quality/scorer.py).
The gate: an artifact directory (a recipe) fails when its fidelity is more than `margin` below
the fp32 torch model it was exported from, measured on the same prompts, seeds and sampler.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from md_export.models import Preset, get_preset

from ..errors import BadArgumentError
from ..parity import ParityFailure
from ..pipeline import TextToImagePipeline
from .scorer import fidelity, score_image

QUALITY_MARGIN = 0.05  # declared: a recipe may lose at most 5 points of fidelity against fp32 torch
Generate = Callable[[str, int], np.ndarray]  # (prompt, seed) -> (64, 64, 3) uint8


class QualityGateFailure(ParityFailure):
    """The artifacts' fidelity fell more than the declared margin below fp32 torch."""


@dataclass
class QualityReport:
    source: str
    fidelity: float
    n: int  # pictures scored (prompts x seeds)
    per_attribute: dict[str, float]
    attributes: int  # attribute verdicts behind `fidelity`
    items: list[dict] = field(default_factory=list)  # per picture: prompt, seed, verdicts

    def as_dict(self) -> dict:
        return {"fidelity": round(self.fidelity, 4), "n": self.n,
                "per_attribute": {k: round(v, 4) for k, v in self.per_attribute.items()},
                "attributes": self.attributes, "source": self.source, "items": self.items}


def picture_draws(prompts: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """(prompt, seed) of every picture: each prompt with every seed. A prompt listed k times
    is drawn the k-th time with the seeds moved by k blocks (a block spans the seeds' range), so a
    repeated prompt adds new pictures, not copies."""
    if not seeds:
        return []
    block = max(seeds) - min(seeds) + 1
    listed: Counter = Counter()
    draws = []
    for prompt in prompts:
        draws += [(prompt, seed + listed[prompt] * block) for seed in seeds]
        listed[prompt] += 1
    return draws


def measure(generate: Generate, prompts: list[str], seeds: list[int], source: str,
            progress: Callable[[int, int], None] | None = None) -> QualityReport:
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    items = []
    draws = picture_draws(prompts, seeds)
    for prompt, seed in draws:
        verdicts = score_image(generate(prompt, seed), prompt)
        for attribute, values in verdicts.items():
            correct[attribute] = correct.get(attribute, 0) + sum(values)
            total[attribute] = total.get(attribute, 0) + len(values)
        items.append({"prompt": prompt, "seed": seed, "fidelity": round(fidelity(verdicts), 4),
                      "verdicts": verdicts})
        if progress is not None:
            progress(len(items), len(draws))
    attributes = sum(total.values())
    return QualityReport(source, sum(correct.values()) / attributes if attributes else 0.0, len(items),
                         {k: correct[k] / total[k] for k in sorted(total)}, attributes, items)


@dataclass(frozen=True)
class SamplingSettings:
    steps: int | None = None  # None: the preset's default
    guidance_scale: float | None = None  # None: the preset's default

    def resolve(self, preset: Preset) -> tuple[int, float]:
        steps = self.steps if self.steps is not None else preset.default_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else preset.guidance_scale
        if steps < 1:
            raise BadArgumentError(f"steps must be at least 1, got {steps}")
        return steps, guidance


def _pipeline_generate(pipeline: TextToImagePipeline, steps: int, guidance: float) -> Generate:
    return lambda prompt, seed: pipeline.generate(prompt, steps, seed, guidance_scale=guidance).image


def torch_generate(preset: Preset, checkpoint_dir: str | Path | None, sampling: SamplingSettings
                   ) -> tuple[Generate, str]:
    from ..torch_networks import torch_networks

    networks, sources = torch_networks(preset, checkpoint_dir=checkpoint_dir)
    if all(text.startswith("random") for text in sources.values()):
        raise BadArgumentError(f"{preset.name} has no trained weights here: fidelity of random weights "
                               "says nothing (pass --checkpoint-dir)")
    steps, guidance = sampling.resolve(preset)
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    return _pipeline_generate(pipeline, steps, guidance), f"torch fp32 {preset.name} ({sources['unet']})"


def _runnable(manifest: dict, runtime: str | None, precision: str | None) -> tuple[str, str]:
    from ..artifacts import RUNTIME_FORMATS

    formats = {e["format"] for e in manifest["artifacts"]}
    if runtime is None:
        runnable = [r for r in ("onnx", "tflite") if RUNTIME_FORMATS[r] in formats]
        if not runnable:
            raise BadArgumentError(f"no ONNX or LiteRT artifacts to run here (formats: {', '.join(sorted(formats))})")
        runtime = runnable[0]
    if precision is None:
        precisions = sorted({e["precision"] for e in manifest["artifacts"] if e["format"] == RUNTIME_FORMATS[runtime]})
        if len(precisions) != 1:
            raise BadArgumentError(f"several {runtime} precisions ({', '.join(precisions)}): pass --precision")
        precision = precisions[0]
    return runtime, precision


def artifact_generate(directory: str | Path, runtime: str | None, precision: str | None, sampling: SamplingSettings
                      ) -> tuple[Generate, str, Preset, str | None]:
    """A generator over exported artifacts, and the preset + checkpoint they were exported from."""
    from ..artifacts import artifact_networks
    from ..export.manifest import read_manifest

    manifest = read_manifest(Path(directory))
    source = manifest.get("source", {})
    if source.get("kind") != "preset":
        raise BadArgumentError(f"{directory} was not exported from a preset: no torch model to compare with")
    preset = get_preset(source["preset"])
    runtime, precision = _runnable(manifest, runtime, precision)
    networks, _ = artifact_networks(directory, runtime, precision, preset.resolution)
    steps, guidance = sampling.resolve(preset)
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    return (_pipeline_generate(pipeline, steps, guidance), f"{runtime} {precision} artifacts in {directory}", preset,
            source.get("checkpoint_dir"))


@dataclass
class GateResult:
    artifacts: QualityReport
    reference: QualityReport
    margin: float

    @property
    def drop(self) -> float:
        return self.reference.fidelity - self.artifacts.fidelity

    @property
    def passed(self) -> bool:
        return self.drop <= self.margin + 1e-9

    def as_dict(self) -> dict:
        data = self.artifacts.as_dict()
        data["gate"] = {"passed": self.passed, "margin": self.margin, "drop": round(self.drop, 4),
                        "torch_fidelity": round(self.reference.fidelity, 4),
                        "torch_per_attribute": {k: round(v, 4) for k, v in self.reference.per_attribute.items()}}
        return data


def check_gate(result: GateResult) -> None:
    if not result.passed:
        raise QualityGateFailure(
            f"quality gate failed: fidelity {result.artifacts.fidelity:.1%} ({result.artifacts.source}) is "
            f"{result.drop:.1%} below fp32 torch {result.reference.fidelity:.1%}; the declared margin is "
            f"{result.margin:.1%}")
