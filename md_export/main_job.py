"""The main job (`md-export run`): what a new user runs first, end to end on one preset.

  0. a real picture first: the trained mobilediffusion-micro weights shipped with the package draw
     one caption (OUT/micro.png) and the fidelity scorer measures it (a second or two)
  1. cost table (params, GFLOPs per component)
  2. torch reference image
  3. export the three networks to every requested format
  4. parity of every artifact (hard gates)
  5. the same prompt and seed through the exported ONNX / LiteRT runners: image PSNR vs torch
  6. calibration data from real sampler runs; one int8 recipe per format; parity of each
  7. OUT/report.md and OUT/report.json

Exit status is non-zero when parity fails; the report is written either way.
"""

from __future__ import annotations

import datetime
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from md_export.models import Preset

from .artifacts import artifact_networks
from .export import export_preset
from .export.manifest import read_manifest, write_json_atomic, write_text_atomic
from .images import save_png
from .isolated import run_isolated
from .micro_demo import micro_markdown, micro_picture
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
    calibration_prompts: int = 4
    calibration_steps: int = 2
    # one int8 recipe per format: the fastest CPU path for ONNX, XNNPACK's dynamic-range path for
    # LiteRT, 8-bit weights for Core ML (activation calibration for Core ML needs macOS)
    recipes: tuple[str, ...] = ("onnx-static-int8", "tflite-dynamic-int8", "coreml-linear-int8")
    bench_runs: int = 3
    overwrite: bool = False  # replace what an earlier run left in the output folder


def run_main_job(preset: Preset, out: str | Path, settings: MainJobSettings, progress: Progress) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = out / "artifacts"
    report: dict = {"out": str(out), "preset": preset.name, "resolution": preset.resolution, "prompt": settings.prompt,
                    "steps": settings.steps, "seed": settings.seed,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "stage_seconds": {}}

    def stage(name: str):
        report["stage_seconds"][name] = time.perf_counter()
        progress(name)

    def done(name: str) -> None:
        report["stage_seconds"][name] = round(time.perf_counter() - report["stage_seconds"][name], 1)

    stage("micro preset picture")
    report["micro"] = micro_picture(out, seed=settings.seed)
    done("micro preset picture")

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
    entries = run_isolated(export_preset, preset, ("text_encoder", "unet", "vae_decoder"), settings.formats,
                           settings.precisions, artifacts, checkpoint_dir=settings.checkpoint_dir,
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
        del runners, result  # the sessions hold the UNet's weights: not while the next stages run
        gc.collect()
        done(f"{runtime} pipeline")

    quantized_markdown = ""
    recipes = [r for r in settings.recipes if r.split("-")[0] in settings.formats]
    report["quantized"] = {}
    if recipes:
        from md_export.calibration.builders import CalibrationSettings, build_calibration

        from .quantize.driver import quantize_directory, quantize_summary

        stage("calibration")
        run_isolated(build_calibration, preset, out / "calibration",
                     CalibrationSettings(num_prompts=settings.calibration_prompts, steps=settings.calibration_steps,
                                         seed=settings.seed, checkpoint_dir=settings.checkpoint_dir, photos=2),
                     progress=lambda message: progress(f"calibration: {message}"), overwrite=settings.overwrite)
        done("calibration")
        from .quantize.driver import QuantizeError

        for recipe in recipes:
            stage(f"quantize {recipe}")
            target = out / "quantized" / recipe
            try:
                entries = run_isolated(quantize_directory, artifacts, recipe, target, out / "calibration",
                                       progress=lambda message: progress(f"quantize: {message}"), gate=False,
                                       no_gate_reason="md-export run checks and reports each recipe's parity")
            except QuantizeError as exc:
                # a converter limit on this network is a finding of the job, not the end of it
                progress(f"quantize: FAILED: {exc}")
                report["quantized"][recipe] = {"passed": False, "error": str(exc), "artifacts": [], "parity": None}
                quantized_markdown += f"\n## {recipe}\n\nFAILED: {exc}\n"
                done(f"quantize {recipe}")
                continue
            result = check_directory(target)
            write_text_atomic(target / "parity.md", markdown(result))
            report["quantized"][recipe] = {
                "passed": result.passed,
                "artifacts": [{"file": e["file"], "size_bytes": e["size_bytes"],
                               "quantize_seconds": e["quantize_seconds"], "kernels": e.get("kernels"),
                               "speed_vs_source": e.get("speed_vs_source"), "summary": quantize_summary(e)}
                              for e in entries],
                "parity": result.as_dict(),
            }
            quantized_markdown += markdown(result).replace("# Parity", f"## Parity of {recipe}", 1)
            done(f"quantize {recipe}")

    stage("benchmark")
    report["benchmark"] = run_benchmark(out, [out / "artifacts"] + [out / "quantized" / r for r in recipes
                                                                    if not report["quantized"][r].get("error")],
                                        settings.bench_runs)
    done("benchmark")

    # The gate of the job is the float export; quantized recipes report their own verdicts.
    report["passed"] = parity.passed
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render(report, markdown(parity)) + quantized_markdown)
    return report


def run_benchmark(out: Path, directories: list[Path], runs: int) -> dict:
    """`md-export bench run` over every artifact directory the job wrote: one JSON, Markdown and
    chart per directory (bench/<name>.json|md|png), summarised in the report."""
    import argparse

    from md_export.benchmarks.cli import register

    parser = argparse.ArgumentParser(prog="md-export")
    register(parser.add_subparsers(dest="command"))
    (out / "bench").mkdir(exist_ok=True)
    summary = {}
    for directory in directories:
        if not (directory / "manifest.json").exists():
            continue
        formats = {e["format"] for e in read_manifest(directory)["artifacts"]}
        if not formats & {"onnx", "tflite"}:
            continue  # Core ML packages are timed on a Mac (md-export bench run --device mac)
        name = directory.name
        base = out / "bench" / name
        args = parser.parse_args(["bench", "run", "--artifacts", str(directory), "--runtime", "onnxruntime,litert",
                                  "--runs", str(runs), "--warmup", "1", "--json", f"{base}.json",
                                  "--markdown", f"{base}.md", "--chart", f"{base}.png"])
        args.func(args)
        summary[name] = {"json": f"bench/{name}.json", "markdown": f"bench/{name}.md", "chart": f"bench/{name}.png"}
    return summary


def render(report: dict, parity_markdown: str) -> str:
    lines = [f"# md-export main job: {report['preset']} at {report['resolution']}x{report['resolution']}", "",
             f"Overall parity: **{'PASSED' if report['passed'] else 'FAILED'}**. Weights: "
             + "; ".join(f"{k}: {v}" for k, v in report["weights"].items()), ""]
    if report.get("micro"):
        lines += micro_markdown(report["micro"], report["preset"])
    lines += ["## Cost (one call, batch 1)", "", "| component | params | GFLOPs |", "| --- | ---: | ---: |"]
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
    if report.get("quantized"):
        lines += ["", "## Quantized (one recipe per format)", "",
                  "What the runtime runs (quantized kernels / all, in its optimized graph) and the speed "
                  "against the float source, timed in alternation on this host.", "",
                  "| recipe | artifact | size MB | runtime kernels and speed | parity |", "| --- | --- | ---: | --- | --- |"]
        for recipe, data in report["quantized"].items():
            if data.get("error"):
                lines.append(f"| {recipe} | - | - | - | FAILED: {data['error']} |")
                continue
            statuses = {a["file"]: a["status"] for a in data["parity"]["artifacts"]}
            for a in data["artifacts"]:
                lines.append(f"| {recipe} | {a['file']} | {a['size_bytes'] / 1e6:.1f} | {a.get('summary', '')} | "
                             f"{statuses.get(a['file'], '')} |")
    for name, files in report.get("benchmark", {}).items():
        lines += ["", f"## Benchmark: {name}", "", f"![latency]({files['chart']})", ""]
        bench_md = Path(report["out"]) / files["markdown"]
        if bench_md.exists():
            lines.append(bench_md.read_text())
    lines += ["", "## Stage times (s)", ""] + [f"- {k}: {v}" for k, v in report["stage_seconds"].items()]
    lines += ["", parity_markdown.replace("# Parity", "## Parity", 1)]
    return "\n".join(lines) + "\n"
