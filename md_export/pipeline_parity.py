"""Pipeline-level parity: the exported (or quantized) pipeline against the fp32 torch pipeline.

For each runnable (format, precision) group holding all three networks: the same prompts and
seeds through both pipelines; per DDIM step the latent PSNR (where the error enters and grows),
and the final image's PSNR and SSIM. The image gate is declared per precision below; a miss fails.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from md_export.calibration.builders import load_prompts

from .artifacts import artifact_networks
from .export.manifest import read_manifest
from .parity import psnr_db
from .pipeline import TextToImagePipeline

# Final-image PSNR gates (dB) against the fp32 torch image. fp32 runtimes differ by float
# reassociation only; int8 pictures differ visibly in noise-like random-weight images, so these
# are floors that catch broken graphs, with the recipe's own tensor gates doing the fine work.
IMAGE_GATES_DB = {"fp32": 40.0, "fp16": 30.0, "w8a16": 30.0}
DEFAULT_QUANTIZED_GATE_DB = 20.0
RUNNABLE_FORMATS = ("onnx", "tflite") + (("coreml",) if platform.system() == "Darwin" else ())
RUNTIME_OF_FORMAT = {"onnx": "onnx", "tflite": "tflite", "coreml": "coreml"}
NOTHING_COMPARED = ("no pipeline compared: --pipeline needs a preset export (not a module's) with text_encoder, "
                    f"unet and vae_decoder of one format and precision runnable here ({', '.join(RUNNABLE_FORMATS)})")

# The fp32 torch pipeline is the same for every directory of one preset (export, each recipe):
# its images and latents are kept per (weights, resolution, prompt, steps, seed) within a process.
_REFERENCE_RUNS: dict[tuple, tuple[np.ndarray, list[np.ndarray]]] = {}


@dataclass
class PipelineParity:
    format: str
    precision: str
    resolution: int
    prompts: int
    steps: int
    image_psnr_db: list[float] = field(default_factory=list)  # per prompt
    image_ssim: list[float] = field(default_factory=list)
    step_latent_psnr_db: list[float] = field(default_factory=list)  # mean over prompts, per step
    gate_db: float = 0.0
    passed: bool = False

    def as_dict(self) -> dict:
        data = asdict(self)
        data["min_image_psnr_db"] = round(min(self.image_psnr_db), 2)
        data["mean_image_ssim"] = round(float(np.mean(self.image_ssim)), 4)
        return data


def _groups(manifest: dict) -> list[tuple[str, str]]:
    have: dict[tuple[str, str], set] = {}
    for entry in manifest["artifacts"]:
        have.setdefault((entry["format"], entry["precision"]), set()).add(entry["component"])
    needed = {"text_encoder", "unet", "vae_decoder"}
    return sorted(key for key, components in have.items() if needed <= components and key[0] in RUNNABLE_FORMATS)


def check_pipelines(directory: str | Path, prompts: int = 2, steps: int = 4, seed: int = 0,
                    progress=None) -> list[PipelineParity]:
    from skimage.metrics import structural_similarity

    from md_export.models import get_preset

    from .torch_networks import torch_networks

    directory = Path(directory)
    manifest = read_manifest(directory)
    source = manifest.get("source", {})
    if source.get("kind") != "preset":
        return []  # a user's module has no pipeline to compare
    preset = get_preset(source["preset"])
    chosen_prompts = load_prompts()[:prompts]
    results, references = [], {}
    for fmt, precision in _groups(manifest):
        networks, _ = artifact_networks(directory, RUNTIME_OF_FORMAT[fmt], precision)
        latent_spec = next(s for s in networks.unet.inputs if s.name == "latent")
        resolution = latent_spec.shape[-1] * preset.vae.downsample_factor

        def reference() -> TextToImagePipeline:  # built only when a prompt is not cached yet
            if resolution not in references:
                torch_nets, _ = torch_networks(preset, resolution, source.get("checkpoint_dir"),
                                               source.get("weight_seed", 0))
                references[resolution] = TextToImagePipeline(torch_nets, preset.unet.prediction_type)
            return references[resolution]

        candidate = TextToImagePipeline(networks, preset.unet.prediction_type)
        gate = IMAGE_GATES_DB.get(precision, DEFAULT_QUANTIZED_GATE_DB)
        result = PipelineParity(fmt, precision, resolution, prompts, steps, gate_db=gate)
        per_step = np.zeros(steps)
        for index, prompt in enumerate(chosen_prompts):
            if progress:
                progress(f"pipeline {fmt} {precision}: prompt {index + 1}/{prompts}")
            key = (preset.name, source.get("checkpoint_dir"), source.get("weight_seed", 0), resolution,
                   prompt, steps, seed + index)
            if key not in _REFERENCE_RUNS:
                latents: list[np.ndarray] = []
                image = reference().generate(prompt, steps, seed + index,
                                             callback=lambda step, total, t, latent: latents.append(latent.copy())).image
                _REFERENCE_RUNS[key] = (image, latents)
            ref_image, ref_latents = _REFERENCE_RUNS[key]
            cand_latents = []
            cand = candidate.generate(prompt, steps, seed + index,
                                      callback=lambda step, total, t, latent: cand_latents.append(latent.copy()))
            per_step += [psnr_db(a, b) for a, b in zip(ref_latents, cand_latents)]
            result.image_psnr_db.append(round(psnr_db(ref_image.astype(np.float64), cand.image.astype(np.float64)), 2))
            result.image_ssim.append(round(float(structural_similarity(ref_image, cand.image, channel_axis=2)), 4))
        result.step_latent_psnr_db = [round(float(v), 2) for v in per_step / prompts]
        result.passed = min(result.image_psnr_db) >= gate
        results.append(result)
    return results


def markdown(results: list[PipelineParity]) -> str:
    if not results:
        return ""
    lines = ["", "## Pipeline parity (vs the fp32 torch pipeline, same prompts and seeds)", "",
             "| format | precision | res | prompts x steps | min image PSNR dB | mean SSIM | latent PSNR per step | gate | status |",
             "| --- | --- | --- | --- | ---: | ---: | --- | ---: | --- |"]
    for r in results:
        d = r.as_dict()
        lines.append(f"| {r.format} | {r.precision} | {r.resolution} | {r.prompts} x {r.steps} | "
                     f"{d['min_image_psnr_db']:.1f} | {d['mean_image_ssim']:.3f} | "
                     f"{' / '.join(f'{v:.1f}' for v in r.step_latent_psnr_db)} | {r.gate_db} | "
                     f"{'passed' if r.passed else 'FAILED'} |")
    return "\n".join(lines) + "\n"
