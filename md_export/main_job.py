"""The main job (`md-export run`): what a new user runs first, end to end on one preset.

  0. a real picture first: the trained mobilediffusion-micro weights shipped with the package draw
     one caption (OUT/micro.png) and the fidelity scorer measures it (a second or two)
  1. cost table (params, GFLOPs per component)
  2. torch reference image
  3. export the three networks to every requested format
  4. parity of every artifact (hard gates)
  5. calibration data from real sampler runs; one int8 recipe per format (Core ML's beside
     LiteRT's: each compresses on one core); parity of each
  6. benchmark of every artifact (fp32 and quantized) on onnxruntime and LiteRT, each component's
     fp32 and quantized artifacts called in alternation
  7. per runtime, md-export plan's choice over those artifacts (OUT/plans/<runtime>/): the same
     prompt and seed through the exported fp32 pipeline (OUT/onnx.png, OUT/tflite.png: image PSNR
     vs torch), through the chosen configuration (OUT/<runtime>-plan.png), both timed end to end
     (that very call, made warm)
  8. OUT/report.md and OUT/report.json

Exit status is non-zero when parity fails; the report is written either way.
"""

from __future__ import annotations

import datetime
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from md_export.models import Preset

from .export import export_preset
from .export.manifest import read_manifest, write_json_atomic, write_text_atomic
from .images import save_png
from .isolated import run_isolated
from .micro_demo import micro_markdown, micro_picture
from .parity import check_directory, markdown, psnr_db
from .pipeline import Generation, TextToImagePipeline
from .plan import RUNTIME_FORMATS
from .quantize.driver import quantize_summary
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

    recipes = [r for r in settings.recipes if r.split("-")[0] in settings.formats]
    # The export converts on one core; beside it, in their own children, the torch reference and
    # the calibration use the other. LiteRT's conversion of the UNet runs alone once they are
    # done: it holds 4.7 GB (7.0-7.2 GB before litert-torch's lazy constants), and beside the torch
    # reference (README command 1 peaked at 7.85 GB, 2-core Xeon) or after the UNet's other formats
    # in their child (8.1 GB) it left no room under 8 GB. Beside them the export holds at most
    # about 3 GB (UNet first, its weights freed after its last format), the torch reference 3.5 GB
    # and the calibration 3.1 GB; all of them 7.6 GB while the decoder was exported and its
    # calibration latents sampled, which is where the other placements went over.
    stage("export")
    report["concurrent_stages"] = {"export": ["torch reference image"] + (["calibration"] if recipes else [])}
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        exporting = pool.submit(run_isolated, _export_beside, preset, settings, artifacts,
                                progress=lambda message: progress(f"export: {message}"), stop=stop)
        try:
            stage("torch reference image")
            # One child draws the reference and then calibrates with the same torch networks: a
            # second child spent 8 s importing torch and building them again, on the job's
            # critical path (the calibration ended 16 s after the export's part beside it).
            calibration = None
            if recipes:
                from md_export.calibration.builders import CalibrationSettings

                calibration = CalibrationSettings(num_prompts=settings.calibration_prompts,
                                                  steps=settings.calibration_steps, seed=settings.seed,
                                                  checkpoint_dir=settings.checkpoint_dir, photos=2,
                                                  # the decoder calibrates on latents of the pipeline's steps
                                                  decoder_steps=settings.steps,
                                                  held_out_prompts=(settings.prompt,))

            def child_progress(message: str) -> None:
                if message == "calibration":
                    done("torch reference image")
                    stage("calibration")
                else:
                    progress(message)

            reference, sources = run_isolated(_torch_reference, preset, settings, calibration, out / "calibration",
                                              progress=child_progress)
            report["weights"] = sources
            save_png(reference.image, out / "torch.png")
            report["images"] = {"torch": {"file": "torch.png", "seconds": reference.seconds}}
            done("calibration" if recipes else "torch reference image")
            entries = exporting.result()
        except BaseException:
            stop.set()  # the export's child ends too, not minutes later
            raise
    if "tflite" in settings.formats:
        entries += run_isolated(export_preset, preset, ("unet",), ("tflite",), settings.precisions, artifacts,
                                checkpoint_dir=settings.checkpoint_dir,
                                progress=lambda message: progress(f"export: {message}"))
    report["artifacts"] = [{k: e[k] for k in ("file", "signature", "format", "precision", "size_bytes",
                                               "export_seconds")} for e in entries]
    done("export")

    stage("parity")
    parity = run_isolated(check_directory, artifacts, progress=lambda message: progress(f"parity: {message}"))
    write_text_atomic(artifacts / "parity.md", markdown(parity))
    report["parity"] = parity.as_dict()
    done("parity")

    report["quantized"] = {}
    quantized_markdown = {}

    def quantize(recipe: str, stop: threading.Event | None = None) -> None:
        stage(f"quantize {recipe}")
        report["quantized"][recipe], quantized_markdown[recipe] = _quantize_recipe(artifacts, recipe, out, progress,
                                                                                   stop)
        done(f"quantize {recipe}")

    # Core ML's recipe compresses on one core (coremltools, no inference on Linux) and so do
    # LiteRT's (AI Edge Quantizer): side by side they share the host. onnxruntime's static int8
    # calibrates on both cores and holds the most memory (4.6 GB of the 7.6 GB peak), so it runs
    # alone; each of the other two peaked at 3.7 GB alone on the 2-core Xeon.
    beside = _recipes_beside(recipes)
    if beside:
        report["concurrent_stages"].update({f"quantize {main}": [f"quantize {b}"] for b, main in beside.items()})
    for recipe in (r for r in recipes if r not in beside):
        partners = [b for b, main in beside.items() if main == recipe]
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1) as pool:
            alongside = [pool.submit(quantize, partner, stop) for partner in partners]
            try:
                quantize(recipe)
                for future in alongside:
                    future.result()
            except BaseException:
                stop.set()  # the recipe beside ends too, not minutes later
                raise
    report["quantized"] = {r: report["quantized"][r] for r in recipes}  # the job's order, not finishing order
    quantized_markdown = "".join(quantized_markdown[r] for r in recipes)

    stage("benchmark")
    quantized_dirs = {r: out / "quantized" / r for r in recipes if not report["quantized"][r].get("error")}
    report["benchmark"] = run_isolated(run_benchmark, out, [out / "artifacts"] + list(quantized_dirs.values()),
                                       settings.bench_runs)
    bench = _bench_documents(out, report["benchmark"])
    for recipe in quantized_dirs:
        for artifact in report["quantized"][recipe]["artifacts"]:
            artifact["speed_vs_source"] = _speed_from_benchmark(bench, recipe, artifact["file"])
            artifact["summary"] = quantize_summary(artifact)
    done("benchmark")

    # The shipping configuration per runtime, by the plan's rules, over what the job already made
    # (one recipe per format: 2^3 configurations, so max_evaluations=8 makes the search complete):
    # the fp32 export and the job's recipe of that format, timed by the benchmark above. Its image
    # gate draws the job's prompt through the exported pipelines (OUT/onnx.png, OUT/tflite.png).
    report["plans"] = {}
    for runtime in PIPELINE_RUNTIMES:
        if runtime not in settings.formats:
            continue
        stage(f"{runtime} pipeline and plan")
        report["plans"][runtime], images = run_isolated(
            _plan, preset, out, runtime, settings, reference, sources, bench,
            {r: d for r, d in quantized_dirs.items() if r.startswith(runtime)}, progress=progress)
        report["images"].update(images)
        _speed_from_plan(report["quantized"], report["plans"][runtime])
        done(f"{runtime} pipeline and plan")

    # The gate of the job is the float export; quantized recipes report their own verdicts.
    report["passed"] = parity.passed
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render(report, markdown(parity)) + quantized_markdown)
    return report


PLAN_RUNTIMES = {fmt: runtime for runtime, fmt in RUNTIME_FORMATS.items()}  # "onnx" -> "onnxruntime"


# Recipes that compress on one core and may run beside the one named: Core ML's beside LiteRT's.
RECIPES_BESIDE_FORMAT = {"coreml": "tflite"}


def _recipes_beside(recipes: list[str]) -> dict[str, str]:
    """{recipe: the recipe it runs beside}, for the job's recipes whose partner format is there too."""
    by_format = {recipe.split("-")[0]: recipe for recipe in recipes}
    return {recipe: by_format[RECIPES_BESIDE_FORMAT[fmt]] for fmt, recipe in by_format.items()
            if RECIPES_BESIDE_FORMAT.get(fmt) in by_format}


def _quantize_recipe(artifacts: Path, recipe: str, out: Path, progress: Progress,
                     stop: threading.Event | None = None) -> tuple[dict, str]:
    """One recipe over the job's fp32 artifacts, then its parity: the report's entry and Markdown.
    A converter failure on this network is a finding of the job, not its end."""
    from .quantize.driver import QuantizeError, quantize_directory

    target = out / "quantized" / recipe
    try:
        # speed_runs=0: the benchmark stage times every artifact, fp32 and quantized, once;
        # each recipe's speed against its source is read from there (_speed_from_benchmark)
        entries = run_isolated(quantize_directory, artifacts, recipe, target, out / "calibration",
                               progress=lambda message: progress(f"quantize: {message}"), gate=False,
                               no_gate_reason="md-export run checks and reports each recipe's parity",
                               speed_runs=0, stop=stop)
    except QuantizeError as exc:
        progress(f"quantize: FAILED: {exc}")
        return ({"passed": False, "error": str(exc), "artifacts": [], "parity": None},
                f"\n## {recipe}\n\nFAILED: {exc}\n")
    result = run_isolated(check_directory, target, stop=stop)
    write_text_atomic(target / "parity.md", markdown(result))
    entry = {
        "passed": result.passed,
        "artifacts": [{"file": e["file"], "component": e["component"], "size_bytes": e["size_bytes"],
                       "quantize_seconds": e["quantize_seconds"], "kernels": e.get("kernels"),
                       "int8_convs": e.get("int8_convs"), "activation_ranges": e.get("activation_ranges"),
                       "speed_vs_source": e.get("speed_vs_source"),
                       "summary": quantize_summary(e)}
                      for e in entries],
        "parity": result.as_dict(),
    }
    return entry, markdown(result).replace("# Parity", f"## Parity of {recipe}", 1)


def _export_beside(preset: Preset, settings: "MainJobSettings", artifacts: Path, progress: Progress) -> list[dict]:
    """Every artifact but LiteRT's UNet, in one child: the UNet first, so its weights are freed
    before the text encoder's and decoder's conversions, then those two in every format. One
    directory, one manifest: each export_preset call keeps the earlier one's artifacts."""
    entries = []
    unet_formats = tuple(f for f in settings.formats if f != "tflite")  # LiteRT's UNet converts alone, later
    if unet_formats:
        entries += export_preset(preset, ("unet",), unet_formats, settings.precisions, artifacts,
                                 checkpoint_dir=settings.checkpoint_dir, progress=progress)
    entries += export_preset(preset, ("text_encoder", "vae_decoder"), settings.formats, settings.precisions,
                             artifacts, checkpoint_dir=settings.checkpoint_dir, progress=progress)
    return entries


def _torch_reference(preset: Preset, settings: "MainJobSettings", calibration=None, calibration_out: Path | None = None,
                     progress: Progress | None = None) -> tuple[Generation, dict[str, str]]:
    """The fp32 torch pipeline's picture of the job's prompt (in a child: its networks are the
    largest thing the job holds in torch) and where its weights came from; then, with
    `calibration` (CalibrationSettings), the calibration data into `calibration_out`, sampled by
    the same networks (its messages follow a "calibration" message)."""
    progress = progress or (lambda message: None)
    networks, sources = torch_networks(preset, checkpoint_dir=settings.checkpoint_dir)
    generation = TextToImagePipeline(networks, preset.unet.prediction_type).generate(
        settings.prompt, settings.steps, settings.seed, guidance_scale=preset.guidance_scale)
    if calibration is not None:
        from md_export.calibration.builders import build_calibration

        progress("calibration")
        build_calibration(preset, calibration_out, calibration,
                          progress=lambda done, total, message: progress(f"calibration: {message}"),
                          overwrite=settings.overwrite, networks=(networks, sources))
    return generation, sources


def _plan(preset: Preset, out: Path, runtime: str, settings: "MainJobSettings", reference: Generation, sources: dict,
          bench: dict[str, dict], quantized: dict[str, Path], progress: Progress) -> tuple[dict, dict]:
    """md-export plan's choice for one runtime (its summary for the report) and the pictures of
    the exported fp32 pipeline and of the choice (report rows by name)."""
    from .plan import FP32, PlanSettings, Reference, make_plan

    plan_runtime = PLAN_RUNTIMES[runtime]
    key = (settings.prompt, settings.steps, settings.seed, preset.guidance_scale)
    images: dict[str, dict] = {}

    def on_generation(config, prompt, seed, generation) -> None:
        if prompt != settings.prompt or seed != settings.seed:
            return
        recipes = set(config.recipes().values())
        name = runtime if recipes == {FP32} else f"{runtime}-plan"
        save_png(generation.image, out / f"{name}.png")
        images[name] = {
            "file": f"{name}.png", "seconds": generation.seconds, "components": config.recipes(),
            "image_psnr_db_vs_torch": round(psnr_db(reference.image.astype("float64"),
                                                    generation.image.astype("float64")), 2),
            "latent_psnr_db_vs_torch": round(psnr_db(reference.latent, generation.latent), 2)}

    from md_export.benchmarks.machine_peak import best_of_peaks, measure_machine_peak

    component_ms, gflops, peaks, alternated = {}, {}, [], True
    for name, document in bench.items():
        recipe = FP32 if name == "artifacts" else name
        if document.get("machine_peak") and document["machine_peak"] not in peaks:  # one run's peak is in each
            peaks.append(document["machine_peak"])
        for item in document["items"]:
            if item.get("runtime") == plan_runtime and item.get("level") == "component" and item.get("latency_ms"):
                component_ms[(item["component"], recipe)] = item["latency_ms"]["p50"]
                gflops[item["component"]] = item.get("gflops")
                # the plan's rivals of this artifact (the fp32 export's, each recipe's) were in its rounds
                rivals = {other.split("/")[0] for other in item.get("alternated_with", [])}
                alternated = alternated and ({"artifacts", *quantized} - {name}) <= rivals
    peak = best_of_peaks(peaks) if peaks else None
    plan_settings = PlanSettings(runtime=plan_runtime, steps=settings.steps, prompt_texts=(settings.prompt,),
                                 seed=settings.seed, max_evaluations=8, pipeline_runs=1, timing_runs=3,
                                 checkpoint_dir=settings.checkpoint_dir)
    torch_reference = Reference(preset, preset.resolution, settings.checkpoint_dir, sources=sources,
                                images={key: reference.image}, latents={key: reference.latent})
    plan = make_plan(preset, out / "plans" / plan_runtime, plan_settings, out / "artifacts", out / "calibration",
                     overwrite=True, progress=lambda message: progress(f"plan {plan_runtime}: {message}"),
                     quantized=quantized, component_ms=component_ms, component_ms_alternated=alternated,
                     reference=torch_reference, peak=peak, gflops=gflops if all(gflops.values()) else None,
                     on_generation=on_generation, peak_probe=measure_machine_peak if peak else None)
    return ({"plan": f"plans/{plan_runtime}/plan.json", "markdown": f"plans/{plan_runtime}/plan.md",
             "choice": plan["choice"], "estimated_ms": plan["choice_estimated_ms"],
             "measured_ms": plan["choice_measured_ms"], "end_to_end": plan["end_to_end"],
             "alternated_components": plan["measurement"].get("alternated_components", []),
             "retimed_components": plan["measurement"].get("retimed_components", []),
             "timing_runs": plan["measurement"]["timing_runs"],
             "component_candidates": plan["component_candidates"]}, images)


def _speed_from_plan(quantized: dict, plan: dict) -> None:
    """Where the plan itself timed a component's fp32 artifact and a recipe's again, in
    alternation, that pair is the recipe's speed against its float source in the report. The
    benchmark stage alternates them too, so this applies only where the plan re-timed."""
    from .plan import FP32
    from .quantize.driver import quantize_summary
    from .quantize.speed import SpeedCheck

    timed = [c for c in plan.get("component_candidates", []) if c["component"] in plan.get("retimed_components", [])
             and c["ms"] and not c["error"]]
    for candidate in timed:
        source = next((c for c in timed if c["component"] == candidate["component"] and c["recipe"] == FP32), None)
        if candidate["recipe"] == FP32 or source is None or candidate["recipe"] not in quantized:
            continue
        for artifact in quantized[candidate["recipe"]].get("artifacts", []):
            if artifact["file"] == candidate["file"]:
                check = SpeedCheck(source["file"], source["ms"], candidate["ms"], plan["timing_runs"], 0)
                artifact["speed_vs_source"] = check.as_dict() | {
                    "method": "md-export plan: the two called in alternation"}
                artifact["summary"] = quantize_summary(artifact)


def _bench_documents(out: Path, benchmark: dict) -> dict[str, dict]:
    """directory name -> its benchmark JSON (items and the run's machine peak)."""
    import json

    return {name: json.loads((out / files["json"]).read_text()) for name, files in benchmark.items()}


def _speed_from_benchmark(bench: dict[str, dict], recipe: str, file: str) -> dict:
    """The quantized artifact's median against its fp32 source's, from the benchmark stage (the
    two called in alternation when the item says so), in the quantize speed check's own record."""
    from .quantize.speed import SpeedCheck

    def timed(name: str) -> list[dict]:
        return [i for i in bench.get(name, {}).get("items", []) if i.get("latency_ms")]

    mine = [i for i in timed(recipe) if i.get("file") == file]
    if not mine:
        return {"skipped": "not benchmarked (Core ML runs on macOS only)"}
    item = mine[0]
    sources = [i for i in timed("artifacts") if i.get("component") == item["component"]
               and i.get("runtime") == item["runtime"] and i.get("resolution") == item.get("resolution")]
    if not sources:
        return {"skipped": "no fp32 timing of its source"}
    check = SpeedCheck(sources[0]["file"], round(sources[0]["latency_ms"]["p50"], 3), round(item["latency_ms"]["p50"], 3),
                       item["runs"], item["threads"])
    alternated = any(rival.endswith("/" + sources[0]["file"]) for rival in item.get("alternated_with", []))
    return check.as_dict() | {"method": "md-export run's benchmark stage" + (
        ": the two called in alternation" if alternated else ", each directory timed in turn")}


BENCH_RUNTIMES = ["onnxruntime", "litert"]  # Core ML packages are timed on a Mac (bench run --device mac)


def run_benchmark(out: Path, directories: list[Path], runs: int) -> dict:
    """Every artifact directory the job wrote, in `bench run`'s schema (one warm-up call, `runs`
    timed ones, all cores), with the best of three machine-peak probes spread through it: one
    JSON, Markdown and chart per directory (bench/<name>.json|md|png), summarised in the report.
    Each component's fp32 artifact and its quantized ones are called in alternation
    (benchmarks/alternated.py), so the plan and the report take their ratios from here as they are."""
    import os
    from types import SimpleNamespace

    from md_export.benchmarks.alternated import bench_alternated
    from md_export.benchmarks.cli import _write_outputs
    from md_export.benchmarks.machine_peak import measure_machine_peak
    from md_export.benchmarks.progress import BenchProgress
    from md_export.benchmarks.targets.host import FORMAT_RUNTIME, HostSettings

    timed = [d for d in directories if (d / "manifest.json").exists()
             and {FORMAT_RUNTIME.get(e["format"]) for e in read_manifest(d)["artifacts"]} & set(BENCH_RUNTIMES)]
    (out / "bench").mkdir(exist_ok=True)
    threads = os.cpu_count() or 1
    with BenchProgress(enabled=False) as progress:
        results = bench_alternated(timed, HostSettings(threads=threads), BENCH_RUNTIMES, 1, runs, progress,
                                   lambda: measure_machine_peak(threads), probes=3)
    summary = {}
    for directory, result in results.items():
        name = directory.name
        base = out / "bench" / name
        _write_outputs(SimpleNamespace(json=f"{base}.json", markdown=f"{base}.md", chart=f"{base}.png"), result)
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
                  "against the float source on this host: called in alternation by the plan where it re-timed "
                  "the component (rivals within 25% in the benchmark, or under a second a call), else the "
                  "benchmark stage's medians (each directory timed in turn).", "",
                  "| recipe | artifact | size MB | runtime kernels and speed | parity |", "| --- | --- | ---: | --- | --- |"]
        for recipe, data in report["quantized"].items():
            if data.get("error"):
                lines.append(f"| {recipe} | - | - | - | FAILED: {data['error']} |")
                continue
            statuses = {a["file"]: a["status"] for a in data["parity"]["artifacts"]}
            for a in data["artifacts"]:
                lines.append(f"| {recipe} | {a['file']} | {a['size_bytes'] / 1e6:.1f} | {a.get('summary', '')} | "
                             f"{statuses.get(a['file'], '')} |")
    for runtime, plan in report.get("plans", {}).items():
        lines += ["", f"## Shipping configuration: {PLAN_RUNTIMES[runtime]}", ""]
        if plan["choice"] is None:
            lines.append(f"No configuration passed the plan's gates; see [{plan['markdown']}]({plan['markdown']}).")
            continue
        lines.append(f"Choice: **{', '.join(f'{k} {v}' for k, v in plan['choice'].items())}** "
                     f"([{plan['markdown']}]({plan['markdown']}): every candidate and its verdict).")
        if plan.get("end_to_end"):
            from .plan import end_to_end_markdown

            lines += [""] + end_to_end_markdown(plan["end_to_end"], heading=False)
    for name, files in report.get("benchmark", {}).items():
        lines += ["", f"## Benchmark: {name}", "", f"![latency]({files['chart']})", ""]
        bench_md = Path(report["out"]) / files["markdown"]
        if bench_md.exists():
            lines.append(bench_md.read_text())
    beside = {stage: main for main, stages in report.get("concurrent_stages", {}).items() for stage in stages}
    lines += ["", "## Stage times (s)", ""] + [
        f"- {k}: {v}" + (f" (beside the {beside[k]})" if k in beside else "") for k, v in report["stage_seconds"].items()]
    lines += ["", parity_markdown.replace("# Parity", "## Parity", 1)]
    return "\n".join(lines) + "\n"
