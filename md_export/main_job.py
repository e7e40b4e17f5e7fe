"""The main job (`md-export run`): what a new user runs first, end to end on one preset.

  1. cost table (params, GFLOPs per component)
  2. torch reference image
  3. export the three networks to every requested format
  4. parity of every artifact (hard gates)
  5. the same prompt and seed through the exported ONNX / LiteRT runners: image PSNR vs torch
  6. OUT/report.md and OUT/report.json

Exit status is non-zero when parity fails; the report is written either way.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from models import Preset

from .artifacts import artifact_networks
from .export import export_preset
from .export.manifest import write_json_atomic, write_text_atomic
from .images import save_png
from .parity import check_directory, markdown, psnr_db
from .pipeline import TextToImagePipeline
from .summary import preset_summary
from .torch_networks import torch_networks

Progress = Callable[[str], None]
PIPELINE_RUNTIMES = ("onnx", "tflite")  # the runtimes that execute on Linux


@dataclass(frozen=True)
class MainJobSettings:
    prompt: str = "a photo of an astronaut riding a horse"
    steps: int = 4
    seed: int = 0
    formats: tuple[str, ...] = ("onnx", "coreml", "tflite")
    precisions: tuple[str, ...] = ("fp32",)
    checkpoint_dir: str | None = None


def run_main_job(preset: Preset, out: str | Path, settings: MainJobSettings, progress: Progress) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = out / "artifacts"
    report: dict = {"preset": preset.name, "resolution": preset.resolution, "prompt": settings.prompt,
                    "steps": settings.steps, "seed": settings.seed,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "stage_seconds": {}}

    def stage(name: str):
        report["stage_seconds"][name] = time.perf_counter()
        progress(name)

    def done(name: str) -> None:
        report["stage_seconds"][name] = round(time.perf_counter() - report["stage_seconds"][name], 1)

    stage("summary")
    report["summary"] = preset_summary(preset)
    done("summary")

    stage("torch reference image")
    networks, sources = torch_networks(preset, checkpoint_dir=settings.checkpoint_dir)
    report["weights"] = sources
    reference = TextToImagePipeline(networks, preset.unet.prediction_type).generate(
        settings.prompt, settings.steps, settings.seed)
    save_png(reference.image, out / "torch.png")
    report["images"] = {"torch": {"file": "torch.png", "seconds": reference.seconds}}
    del networks
    done("torch reference image")

    stage("export")
    entries = export_preset(preset, ("text_encoder", "unet", "vae_decoder"), settings.formats, settings.precisions,
                            artifacts, checkpoint_dir=settings.checkpoint_dir,
                            progress=lambda message: progress(f"export: {message}"))
    report["artifacts"] = [{k: e[k] for k in ("file", "signature", "format", "precision", "size_bytes",
                                               "export_seconds")} for e in entries]
    done("export")

    stage("parity")
    parity = check_directory(artifacts, progress=lambda message: progress(f"parity: {message}"))
    write_text_atomic(artifacts / "parity.md", markdown(parity))
    report["parity"] = parity.as_dict()
    done("parity")

    for runtime in PIPELINE_RUNTIMES:
        if runtime not in settings.formats:
            continue
        stage(f"{runtime} pipeline")
        runners, _ = artifact_networks(artifacts, runtime, settings.precisions[0])
        result = TextToImagePipeline(runners, preset.unet.prediction_type).generate(
            settings.prompt, settings.steps, settings.seed)
        save_png(result.image, out / f"{runtime}.png")
        report["images"][runtime] = {
            "file": f"{runtime}.png", "seconds": result.seconds,
            "image_psnr_db_vs_torch": round(psnr_db(reference.image.astype("float64"), result.image.astype("float64")), 2),
            "latent_psnr_db_vs_torch": round(psnr_db(reference.latent, result.latent), 2),
        }
        done(f"{runtime} pipeline")

    report["passed"] = parity.passed
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render(report, markdown(parity)))
    return report


def render(report: dict, parity_markdown: str) -> str:
    lines = [f"# md-export main job: {report['preset']} at {report['resolution']}x{report['resolution']}", "",
             f"Overall parity: **{'PASSED' if report['passed'] else 'FAILED'}**. Weights: "
             + "; ".join(f"{k}: {v}" for k, v in report["weights"].items()), "",
             "## Cost (one call, batch 1)", "", "| component | params | GFLOPs |", "| --- | ---: | ---: |"]
    for name, cost in report["summary"]["components"].items():
        lines.append(f"| {name} | {cost['params']:,} | {cost['gflops']:.1f} |")
    lines += ["", f"## Images: \"{report['prompt']}\", {report['steps']} DDIM steps, seed {report['seed']}", "",
              "| runtime | file | text enc s | UNet s | decoder s | total s | image PSNR vs torch |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for runtime, image in report["images"].items():
        s = image["seconds"]
        psnr = f"{image['image_psnr_db_vs_torch']:.1f} dB" if "image_psnr_db_vs_torch" in image else "reference"
        lines.append(f"| {runtime} | {image['file']} | {s['text_encoder']:.2f} | {s['unet']:.2f} | "
                     f"{s['vae_decoder']:.2f} | {s['total']:.2f} | {psnr} |")
    lines += ["", "## Artifacts", "", "| file | format | precision | size MB | export s |", "| --- | --- | --- | ---: | ---: |"]
    for a in report["artifacts"]:
        name = a["file"] + (f" [{a['signature']}]" if a.get("signature") else "")
        lines.append(f"| {name} | {a['format']} | {a['precision']} | {a['size_bytes'] / 1e6:.1f} | {a['export_seconds']:.1f} |")
    lines += ["", "## Stage times (s)", ""] + [f"- {k}: {v}" for k, v in report["stage_seconds"].items()]
    lines += ["", parity_markdown.replace("# Parity", "## Parity", 1)]
    return "\n".join(lines) + "\n"
