"""Prompt fidelity of a model (torch preset or exported artifacts) and the quality-parity gate.

fidelity = correct attributes / all attributes over prompts x seeds (md_export/quality/scorer.py).
The gate: an artifact directory (a recipe) fails when its fidelity is more than `margin` below
the fp32 torch model it was exported from, measured on the same prompts, seeds and sampler, or
when one attribute class (colour, shape, ...) drops by more than its own margin (gate_margin.py).
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
from .confusion import Confusion, add_readings
from .gate_margin import QUALITY_MARGIN, attributes_within, class_margin, margin_summary  # QUALITY_MARGIN: as before
from .scorer import fidelity, score_and_read

Generate = Callable[[str, int], np.ndarray]  # (prompt, seed) -> (64, 64, 3) uint8


class QualityGateFailure(ParityFailure):
    """The artifacts' fidelity, or one attribute class's accuracy, fell more than its margin below fp32 torch."""


@dataclass
class QualityReport:
    source: str
    fidelity: float
    n: int  # pictures scored (prompts x seeds)
    per_attribute: dict[str, float]
    attributes: int  # attribute verdicts behind `fidelity`
    items: list[dict] = field(default_factory=list)  # per picture: prompt, seed, verdicts, read
    per_attribute_count: dict[str, int] = field(default_factory=dict)  # verdicts per attribute class
    confusion: Confusion = field(default_factory=dict)  # named -> read, per classified attribute
    images: list[np.ndarray] = field(default_factory=list, repr=False)  # the pictures, in items' order

    def per_attribute_correct(self) -> dict[str, int]:
        return {k: round(self.per_attribute[k] * n) for k, n in self.per_attribute_count.items()}

    def margins(self, margin: float = QUALITY_MARGIN) -> dict:
        """What a recipe gated against this run may lose, overall and per class, in points and verdicts."""
        return margin_summary(self.per_attribute, self.per_attribute_count, self.attributes, margin)

    def as_dict(self) -> dict:
        return {"fidelity": round(self.fidelity, 4), "n": self.n,
                "per_attribute": {k: round(v, 4) for k, v in self.per_attribute.items()},
                "attributes": self.attributes, "source": self.source, "items": self.items,
                "per_attribute_count": dict(self.per_attribute_count), "confusion": self.confusion}


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
    confusion: Confusion = {}
    items, images = [], []
    draws = picture_draws(prompts, seeds)
    for prompt, seed in draws:
        image = generate(prompt, seed)
        verdicts, readings = score_and_read(image, prompt)
        for attribute, values in verdicts.items():
            correct[attribute] = correct.get(attribute, 0) + sum(values)
            total[attribute] = total.get(attribute, 0) + len(values)
        add_readings(confusion, readings)
        items.append({"prompt": prompt, "seed": seed, "fidelity": round(fidelity(verdicts), 4),
                      "verdicts": verdicts, "read": {k: [read for _, read in pairs] for k, pairs in readings.items()}})
        images.append(image)
        if progress is not None:
            progress(len(items), len(draws))
    attributes = sum(total.values())
    return QualityReport(source, sum(correct.values()) / attributes if attributes else 0.0, len(items),
                         {k: correct[k] / total[k] for k in sorted(total)}, attributes, items,
                         {k: total[k] for k in sorted(total)}, confusion, images)


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
    def overall_passed(self) -> bool:
        return self.drop <= self.margin + 1e-9

    def class_checks(self) -> dict[str, dict]:
        """Per attribute class both runs counted: accuracy drop against the class's own margin."""
        correct = self.reference.per_attribute_correct()
        checks = {}
        for name, count in sorted(self.reference.per_attribute_count.items()):
            if name not in self.artifacts.per_attribute:
                continue
            drop = self.reference.per_attribute[name] - self.artifacts.per_attribute[name]
            allowed = class_margin(correct[name], count, self.margin)
            checks[name] = {"count": count, "torch": round(self.reference.per_attribute[name], 4),
                            "artifacts": round(self.artifacts.per_attribute[name], 4), "drop": round(drop, 4),
                            "margin": round(allowed, 4), "margin_attributes": attributes_within(min(allowed, 1.0), count),
                            "passed": drop <= allowed + 1e-9}
        return checks

    @property
    def failed_classes(self) -> list[str]:
        return [name for name, check in self.class_checks().items() if not check["passed"]]

    @property
    def passed(self) -> bool:
        return self.overall_passed and not self.failed_classes

    def as_dict(self) -> dict:
        data = self.artifacts.as_dict()
        data["gate"] = {"passed": self.passed, "margin": self.margin, "drop": round(self.drop, 4),
                        "torch_fidelity": round(self.reference.fidelity, 4),
                        "torch_per_attribute": {k: round(v, 4) for k, v in self.reference.per_attribute.items()},
                        "overall_passed": self.overall_passed,
                        "margin_attributes": attributes_within(self.margin, self.reference.attributes),
                        "attributes": self.reference.attributes,
                        "classes": self.class_checks(), "failed_classes": self.failed_classes}
        return data


def check_gate(result: GateResult) -> None:
    if not result.passed:
        lost = round(result.drop * result.reference.attributes)
        reasons = []
        if not result.overall_passed:
            reasons.append(f"fidelity {result.artifacts.fidelity:.1%} ({result.artifacts.source}) is {result.drop:.1%} "
                           f"below fp32 torch {result.reference.fidelity:.1%} (net {lost} of "
                           f"{result.reference.attributes} attributes); the declared margin is {result.margin:.1%} "
                           f"({attributes_within(result.margin, result.reference.attributes)} attributes)")
        checks = result.class_checks()
        for name in result.failed_classes:
            check = checks[name]
            reasons.append(f"{name} accuracy {check['artifacts']:.1%} is {check['drop']:.1%} below fp32 torch "
                           f"{check['torch']:.1%} over {check['count']} verdicts; its margin is {check['margin']:.1%} "
                           f"({check['margin_attributes']} verdicts)")
        raise QualityGateFailure("quality gate failed: " + "; ".join(reasons))
