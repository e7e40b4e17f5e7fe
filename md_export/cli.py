"""`md-export`: thin command line over the library. Parses flags, calls, prints.

Every user-facing failure becomes one line on stderr (`md-export: error: ...`) and exit code 2;
nothing half-written is left behind (outputs are written to a temp name and renamed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_PARITY_FAILED = 1


def _die(message: str) -> int:
    print(f"md-export: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _at_least(flag: str, value: int | float | None, minimum: int) -> None:
    """A number flag below its minimum is a user error, before any work (None: not given)."""
    from .errors import BadArgumentError

    if value is not None and value < minimum:
        raise BadArgumentError(f"{flag} must be at least {minimum}, got {value}")


# ---- summary -----------------------------------------------------------------------------

def cmd_summary(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from md_export.models import get_preset

    from .summary import ablation_table, preset_summary

    console = Console()
    if args.ablation:
        rows = ablation_table(args.resolution or 512, tiny=args.preset.endswith("-tiny"))
        if args.json:
            print(json.dumps({"resolution": args.resolution or 512, "ablation": rows}, indent=2))
            return 0
        table = Table(title=f"MobileDiffusion ablation, UNet at {args.resolution or 512}x{args.resolution or 512}")
        for column in ("step", "preset", "change", "UNet params (M)", "d params", "UNet GFLOPs", "d GFLOPs", "res blocks"):
            table.add_column(column, justify="left" if column in ("preset", "change") else "right")
        for row in rows:
            table.add_row(str(row["step"]), row["preset"], row["change"], f"{row['unet_params'] / 1e6:.1f}",
                          f"{row.get('delta_params_pct', 0.0):+.1f}%", f"{row['unet_gflops']:.1f}",
                          f"{row.get('delta_gflops_pct', 0.0):+.1f}%", str(row["residual_blocks"]))
        console.print(table)
        return 0

    preset = get_preset(args.preset)
    summary = preset_summary(preset, args.resolution)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    table = Table(title=f"{preset.name} at {summary['resolution']}x{summary['resolution']} (one call, batch 1)")
    for column in ("component", "params", "GFLOPs"):
        table.add_column(column, justify="left" if column == "component" else "right")
    for name, cost in summary["components"].items():
        table.add_row(name, f"{cost['params']:,}", f"{cost['gflops']:.2f}")
    console.print(table)
    console.print(f"UNet residual blocks: {summary['unet_residual_blocks']}. "
                  "GFLOPs = 2 x MACs of matmuls and convs (torch.utils.flop_counter).")
    return 0


# ---- generate ----------------------------------------------------------------------------

def cmd_generate(args: argparse.Namespace) -> int:
    from md_export.models import DEFAULT_PRESET, get_preset

    args.preset_given = args.preset is not None
    preset = get_preset(args.preset or DEFAULT_PRESET)
    steps = args.steps if args.steps is not None else (1 if args.sampler == "onestep" else preset.default_steps)
    if steps < 1:
        return _die(f"--steps must be at least 1, got {steps}")
    _at_least("--resolution", args.resolution, 1)  # 0 must not quietly mean "the preset's"
    _at_least("--seed", args.seed, 0)
    resolution = args.resolution or preset.resolution
    factor = preset.vae.downsample_factor * preset.unet.downsample_factor
    if resolution % factor:
        return _die(f"--resolution {resolution} is not a multiple of {factor} for preset {preset.name}")
    guidance = args.guidance_scale
    if guidance is None:
        guidance = 1.0 if args.sampler == "onestep" else preset.guidance_scale
    out = Path(args.out)
    from .errors import OutputError
    from .export.manifest import check_output_path

    try:
        check_output_path(out)
    except OutputError as exc:
        return _die(f"cannot write {out}: {exc}")

    from rich.console import Console

    from .images import save_png
    from .pipeline import TextToImagePipeline
    from .torch_networks import PIPELINE_COMPONENTS, allowed_random, require_checkpoint_components, torch_networks

    console = Console(stderr=True)
    checkpoint_dir, weight_seed = args.checkpoint_dir, args.weight_seed
    if args.runtime == "torch":
        require_checkpoint_components(preset, checkpoint_dir, PIPELINE_COMPONENTS, allowed_random(args.allow_random))
        with console.status(f"building {preset.name} networks at {resolution}x{resolution} ..."):
            networks, sources = torch_networks(preset, resolution, checkpoint_dir, seed=weight_seed)
    else:
        if not args.artifacts:
            return _die(f"--runtime {args.runtime} needs --artifacts DIR (the output of md-export export)")
        from .artifacts import artifact_networks

        networks, manifest = artifact_networks(args.artifacts, args.runtime, args.precision,
                                               args.resolution or (resolution if args.preset_given else None),
                                               ort_cache=args.ort_cache)
        source = manifest.get("source", {})
        if source.get("kind") == "preset":
            if source["preset"] != preset.name:
                preset = get_preset(source["preset"])  # the artifacts decide what they are
            checkpoint_dir, weight_seed = source.get("checkpoint_dir"), source.get("weight_seed", 0)
        latent = next(s for s in networks.unet.inputs if s.name == "latent")
        resolution = latent.shape[-1] * preset.vae.downsample_factor
        sources = {c: f"{args.runtime} {args.precision} artifact from {args.artifacts}" for c in ("text_encoder", "unet", "vae_decoder")}
    for component, source_text in sources.items():
        console.print(f"  {component}: {source_text}")
    if args.runtime == "torch" and all(text.startswith("random") for text in sources.values()):
        console.print("[yellow]No checkpoint given: the networks have random weights, so the image is noise. "
                      "Pass --checkpoint-dir for real pictures.[/yellow]")
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    result = _sample(pipeline, args, steps, guidance, console, f"{args.sampler} sampling ({args.runtime})")
    save_png(result.image, out)
    timing = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.seconds.items())
    print(f"wrote {out} ({resolution}x{resolution}, {args.runtime}, {args.sampler}, {steps} steps, "
          f"guidance {guidance}, seed {args.seed}); {timing}")
    if args.compare_torch and args.runtime != "torch":
        from .parity import psnr_db

        with console.status("building the torch reference ..."):
            reference_networks, _ = torch_networks(preset, resolution, checkpoint_dir, seed=weight_seed)
        reference = _sample(TextToImagePipeline(reference_networks, preset.unet.prediction_type), args, steps,
                            guidance, console, f"{args.sampler} sampling (torch reference)")
        image_psnr = psnr_db(reference.image.astype("float64"), result.image.astype("float64"))
        latent_psnr = psnr_db(reference.latent, result.latent)
        print(f"parity vs torch: image PSNR {image_psnr:.2f} dB, final latent PSNR {latent_psnr:.2f} dB "
              f"(20*log10(max|ref| / RMSE))")
    return 0


def _sample(pipeline, args, steps, guidance, console, label):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(label, total=steps)

        def on_step(step: int, total: int, timestep: int, latent) -> None:
            progress.update(task, completed=step, total=total)

        return pipeline.generate(args.prompt, steps=steps, seed=args.seed, guidance_scale=guidance,
                                 sampler=args.sampler, negative_prompt=args.negative_prompt, callback=on_step)


# ---- export ------------------------------------------------------------------------------

def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def cmd_export(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from md_export.models import get_preset

    from .export import export_preset
    from .export.manifest import check_output_dir
    from .torch_networks import allowed_random, require_checkpoint_components

    preset = get_preset(args.preset)
    if args.attention_implementation:
        import dataclasses

        preset = dataclasses.replace(preset, unet=preset.unet.replace(attention_implementation=args.attention_implementation))
    try:
        resolutions = [int(r) for r in _csv(args.resolution)] if args.resolution else None
    except ValueError:
        return _die(f"--resolution takes comma-separated integers, got {args.resolution!r}")
    for resolution in resolutions or ():
        _at_least("--resolution", resolution, 1)
    check_output_dir(args.out)  # a file there, or an unwritable place: before the networks are built
    require_checkpoint_components(preset, args.checkpoint_dir, _csv(args.components), allowed_random(args.allow_random))
    console = Console(stderr=True)
    with Progress(TextColumn("[progress.description]{task.description:<40}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("export", total=None)

        state = {"started": False}

        def step(message: str) -> None:
            if state["started"]:
                progress.advance(task)
            state["started"] = True
            progress.update(task, description=message)

        entries = export_preset(preset, _csv(args.components), _csv(args.formats), _csv(args.precision), args.out,
                                resolutions, args.checkpoint_dir, args.weight_seed, args.dynamic_batch,
                                progress=step, on_plan=lambda total: progress.update(task, total=total))
        progress.advance(task)
        progress.update(task, description="done")
    from rich.table import Table

    table = Table(title=f"{preset.name} -> {args.out}")
    for column in ("artifact", "format", "precision", "res", "size MB", "export s"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for entry in entries:
        name = entry["file"] + (f" [{entry['signature']}]" if entry.get("signature") else "")
        table.add_row(name, entry["format"], entry["precision"], str(entry.get("resolution") or ""),
                      f"{entry['size_bytes'] / 1e6:.1f}", f"{entry['export_seconds']:.1f}")
    Console().print(table)
    print(f"wrote {len(entries)} artifacts and {Path(args.out) / 'manifest.json'}; check them with: md-export parity {args.out}")
    return 0


# ---- parity ------------------------------------------------------------------------------

def cmd_parity(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .export.manifest import write_text_atomic
    from .parity import ParityFailure, check_directory, markdown

    _at_least("--threads", args.threads, 1)  # before anything runs or parity.md is rewritten
    _at_least("--prompts", args.prompts, 1)
    _at_least("--steps", args.steps, 1)
    console = Console(stderr=True)
    pipelines = []
    with console.status("parity ...") as status:
        report = check_directory(args.artifacts, args.threads, progress=lambda m: status.update(f"parity: {m}"))
        if args.pipeline:
            from .pipeline_parity import check_pipelines

            pipelines = check_pipelines(args.artifacts, args.prompts, args.steps,
                                        progress=lambda m: status.update(f"parity: {m}"))
    from .pipeline_parity import NOTHING_COMPARED
    from .pipeline_parity import markdown as pipeline_markdown

    # --pipeline asks for a pipeline gate: one that compared nothing has not passed
    nothing_compared = args.pipeline and not pipelines
    text = markdown(report) + pipeline_markdown(pipelines) + (f"\n{NOTHING_COMPARED}\n" if nothing_compared else "")
    write_text_atomic(Path(args.artifacts) / "parity.md", text)
    passed = report.passed and all(p.passed for p in pipelines) and not nothing_compared
    if args.json:
        data = report.as_dict()
        data["passed"] = passed
        data["pipelines"] = [p.as_dict() for p in pipelines]
        print(json.dumps(data, indent=2))
    else:
        print(text)
    if not passed:
        bad = [a.file + (f" [{a.signature}]" if a.signature else "") for a in report.artifacts if not a.ok]
        bad += [f"{p.format} {p.precision} pipeline" for p in pipelines if not p.passed]
        bad += [NOTHING_COMPARED] if nothing_compared else []
        raise ParityFailure(f"parity failed for {len(bad)} item(s): {', '.join(bad)}")
    return 0


# ---- calibrate / quantize ----------------------------------------------------------------

def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from md_export.calibration.builders import CalibrationError, CalibrationSettings, build_calibration
    from md_export.models import COMPONENTS, DEFAULT_PRESET, get_preset

    from .export.manifest import check_output_dir
    from .torch_networks import allowed_random, require_checkpoint_components

    if args.artifacts is not None:
        return _calibrate_user_inputs(args)
    if args.inputs is not None or args.image_range is not None:
        from .errors import BadArgumentError

        raise BadArgumentError("--inputs and --image-range go with --artifacts DIR (your own export), not --preset")
    for flag, default in _PRESET_CALIBRATE_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    preset = get_preset(args.preset or DEFAULT_PRESET)
    _at_least("--num-prompts", args.num_prompts, 1)
    _at_least("--steps", args.steps, 1)
    _at_least("--resolution", args.resolution, 1)  # 0 must not quietly mean "the preset's"
    _at_least("--seed", args.seed, 0)
    if args.decoder_steps is not None:
        _at_least("--decoder-steps", args.decoder_steps, 1)
    check_output_dir(args.out, must_be_empty=not args.overwrite)  # before the sampling, not after it
    # the three pipeline networks sample, the VAE encoder encodes the photos
    require_checkpoint_components(preset, args.checkpoint_dir, COMPONENTS, allowed_random(args.allow_random))
    settings = CalibrationSettings(num_prompts=args.num_prompts, steps=args.steps, seed=args.seed,
                                   resolution=args.resolution, checkpoint_dir=args.checkpoint_dir,
                                   prompts_file=args.prompts_file, decoder_steps=args.decoder_steps)
    with Progress(TextColumn("[progress.description]{task.description:<60}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as progress:
        # the builder's own count (a --decoder-steps run adds one) comes with each update
        task = progress.add_task("calibration", total=args.num_prompts + 1)
        try:
            manifest = build_calibration(preset, args.out, settings,
                                         lambda done, total, message: progress.update(task, completed=done, total=total,
                                                                                      description=message),
                                         overwrite=args.overwrite)
        except CalibrationError as exc:
            return _die(str(exc))
    samples = ", ".join(f"{k} {v}" for k, v in manifest["samples"].items())
    print(f"wrote {args.out}: {samples} samples ({args.num_prompts} prompts x {args.steps} steps, seed {args.seed})")
    return 0


_PRESET_CALIBRATE_DEFAULTS = {"num_prompts": 16, "steps": 4, "seed": 0}
_PRESET_ONLY_FLAGS = ("num_prompts", "steps", "seed", "resolution", "checkpoint_dir", "prompts_file", "allow_random",
                      "decoder_steps")


def _calibrate_user_inputs(args: argparse.Namespace) -> int:
    """`calibrate --artifacts DIR --inputs FILE|DIR`: the user's own rows or images, checked against
    the export's manifest (calibration/user_inputs.py)."""
    from md_export.calibration.user_inputs import calibrate_inputs

    from .errors import BadArgumentError

    given = [f"--{flag.replace('_', '-')}" for flag in _PRESET_ONLY_FLAGS if getattr(args, flag) not in (None, [])]
    if given:
        raise BadArgumentError(f"{', '.join(given)} go with --preset (sampler runs), not --artifacts")
    if args.inputs is None:
        raise BadArgumentError("--artifacts needs --inputs FILE|DIR: an .npz/.safetensors of rows keyed by input "
                               "name, or a folder of .png/.jpg images")
    manifest = calibrate_inputs(args.artifacts, args.inputs, args.out, image_range=args.image_range or "-1,1",
                                overwrite=args.overwrite)
    samples = ", ".join(f"{k} {v}" for k, v in manifest["samples"].items())
    print(f"wrote {args.out}: {samples} samples from {args.inputs}; use it with: md-export quantize --artifacts "
          f"{args.artifacts} --calibration {args.out} ...")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .quantize.driver import quantize_directory, quantize_summary

    console = Console(stderr=True)
    start = time.perf_counter()
    entries = quantize_directory(args.artifacts, args.recipe, args.out, args.calibration, args.target_psnr,
                                 progress=lambda m: console.print(f"[{time.perf_counter() - start:7.1f}s] {m}"),
                                 speed_runs=args.speed_runs, gate=not args.no_gate,
                                 activation_ranges=args.activation_ranges)
    missed = []
    for entry in dict((e["file"], e) for e in entries).values():
        if "fallback" in entry and not entry["fallback"]["reached"]:
            missed.append(f"{entry['file']} ({entry['fallback']['final_psnr_db']:.1f} dB)")
        source_size = entry["size_bytes"]
        line = f"{entry['file']}: {source_size / 1e6:.2f} MB ({entry['recipe']}, from {entry['quantized_from']})"
        if "fallback" in entry:
            fb = entry["fallback"]
            line += (f"; fallback {'reached' if fb['reached'] else 'MISSED'} {fb['target_psnr_db']} dB: "
                     f"{fb['plain_psnr_db']:.1f} -> {fb['final_psnr_db']:.1f} dB with {len(fb['float_blocks'])} "
                     f"block(s) float: {', '.join(fb['float_blocks']) or 'none'}")
        print(line)
        print(f"  {entry['component']}: {quantize_summary(entry)}")
    print(f"wrote {args.out}/manifest.json; check with: md-export parity {args.out}")
    if missed:  # a target the user set is a gate: missing it fails the command, artifacts or not
        print(f"md-export: error: --target-psnr {args.target_psnr} dB missed by {', '.join(missed)}; the artifacts "
              f"were written to {args.out} anyway (inspect or delete them)", file=sys.stderr)
        return EXIT_PARITY_FAILED
    return 0


# ---- run (the main job) --------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from md_export.models import get_preset

    from .export.manifest import check_output_dir
    from .main_job import MainJobSettings, run_main_job
    from .parity import ParityFailure
    from .torch_networks import PIPELINE_COMPONENTS, allowed_random, require_checkpoint_components

    preset = get_preset(args.preset)
    if args.steps < 1:
        return _die(f"--steps must be at least 1, got {args.steps}")
    _at_least("--seed", args.seed, 0)
    require_checkpoint_components(preset, args.checkpoint_dir, PIPELINE_COMPONENTS, allowed_random(args.allow_random))
    # a second run into the same folder would replace the first one's calibration and artifacts
    check_output_dir(args.out, must_be_empty=not args.overwrite)
    settings = MainJobSettings(prompt=args.prompt, steps=args.steps, seed=args.seed, formats=tuple(_csv(args.formats)),
                               precisions=tuple(_csv(args.precision)), checkpoint_dir=args.checkpoint_dir,
                               overwrite=args.overwrite)
    console = Console(stderr=True)
    start = time.perf_counter()
    if args.checkpoint_dir is None:
        console.print(f"[yellow]{preset.name}: random weights (no --checkpoint-dir); images are noise, parity is real.[/yellow]")

    def progress(message: str) -> None:
        console.print(f"[{time.perf_counter() - start:7.1f}s] {message}")

    report = run_main_job(preset, args.out, settings, progress)
    out = Path(args.out)
    micro = report.get("micro", {})
    if micro.get("file"):
        print(f"{micro['preset']}: {out / micro['file']} (\"{micro['prompt']}\", fidelity {micro['fidelity']:.0%})")
    for runtime, image in report["images"].items():
        psnr = f", image PSNR vs torch {image['image_psnr_db_vs_torch']:.1f} dB" if "image_psnr_db_vs_torch" in image else ""
        print(f"{runtime}: {out / image['file']} ({image['seconds']['total']:.1f} s{psnr})")
    for recipe, data in report.get("quantized", {}).items():
        verdict = f"FAILED: {data['error']}" if data.get("error") else ("parity passed" if data["passed"] else "parity FAILED")
        print(f"{recipe}: {verdict}")
    print(f"report: {out / 'report.md'} ({time.perf_counter() - start:.0f} s in all)")
    if not report["passed"]:
        raise ParityFailure(f"parity failed; see {out / 'artifacts' / 'parity.md'}")
    return 0


# ---- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from md_export.models import DEFAULT_PRESET, preset_names

    from .samplers import SAMPLERS
    from .torch_networks import CHECKPOINT_DIR_HELP, add_allow_random_argument

    from md_export.calibration.user_inputs import IMAGE_RANGES

    parser = argparse.ArgumentParser(prog="md-export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    presets = ", ".join(preset_names()) + "; or a folder: a preset (preset.json) or a diffusers pipeline"

    summary = sub.add_parser("summary", help="parameters and GFLOPs per component")
    summary.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {presets}")
    summary.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the preset's)")
    summary.add_argument("--json", action="store_true", help="print machine-readable JSON")
    summary.add_argument("--ablation", action="store_true", help="the sd15 -> mobilediffusion ablation table")
    summary.set_defaults(func=cmd_summary)

    export = sub.add_parser("export", help="export a preset's networks to ONNX / Core ML / LiteRT")
    export.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {presets}")
    export.add_argument("--components", default="text_encoder,unet,vae_decoder",
                        help="comma-separated: text_encoder, unet, vae_decoder, vae_encoder")
    export.add_argument("--formats", default="onnx,coreml,tflite", help="comma-separated: onnx, coreml, tflite")
    export.add_argument("--precision", default="fp32", help="fp32, fp16, or both: fp32,fp16")
    export.add_argument("--resolution", default=None, help="image side(s), comma-separated, e.g. 512,768")
    export.add_argument("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
    add_allow_random_argument(export)
    export.add_argument("--weight-seed", type=int, default=0, help="seed of random weights where no checkpoint is given")
    export.add_argument("--dynamic-batch", action="store_true", help="ONNX: a dynamic batch axis")
    export.add_argument("--attention-implementation", choices=("batched", "split_einsum"), default=None,
                        help="UNet attention graph (split_einsum suits the Apple Neural Engine)")
    export.add_argument("--out", required=True, help="artifact directory (manifest.json goes there)")
    export.set_defaults(func=cmd_export)

    calibrate = sub.add_parser(
        "calibrate", help="record real network inputs along sampler runs (--preset), or from your own data (--artifacts)",
        description="Write a calibration directory for md-export quantize --calibration. --preset: run the preset's "
                    "fp32 pipeline over prompts and record every network input. --artifacts DIR --inputs FILE|DIR: "
                    "your own export's inputs, from an .npz/.safetensors of arrays keyed by input name (or "
                    "component/input), first axis = rows, or from a folder of .png/.jpg images for a network with "
                    "one image input (resized to cover its H x W, center-cropped, RGB, float32 NCHW in [-1, 1] "
                    "unless --image-range 0,1).")
    source = calibrate.add_mutually_exclusive_group()
    source.add_argument("--preset", default=None, help=f"one of: {presets} (default {DEFAULT_PRESET})")
    source.add_argument("--artifacts", default=None, metavar="DIR",
                        help="an export directory (md-export export / md_export.export_model): calibrate its "
                             "components from --inputs")
    calibrate.add_argument("--inputs", default=None, metavar="FILE|DIR",
                           help="with --artifacts: .npz or .safetensors with arrays keyed by input name (several "
                                "components: component/input), rows on axis 0; or a folder of .png/.jpg images")
    calibrate.add_argument("--image-range", choices=tuple(IMAGE_RANGES), default=None, metavar="LOW,HIGH",
                           help="with a folder of images: pixel values scaled to -1,1 (default) or 0,1 "
                                "(write --image-range=-1,1 to pass the default explicitly)")
    calibrate.add_argument("--num-prompts", type=int, default=None, help="default 16")
    calibrate.add_argument("--steps", type=int, default=None,
                           help="DDIM steps per prompt (UNet inputs per prompt: 2 x steps; default 4)")
    calibrate.add_argument("--decoder-steps", type=int, default=None,
                           help="DDIM steps of the run whose final latent calibrates the VAE decoder (default: "
                                "--steps); set it to your app's step count when --steps is lower, since with random "
                                "weights the final latent's scale follows the step count")
    calibrate.add_argument("--seed", type=int, default=None, help="default 0")
    calibrate.add_argument("--resolution", type=int, default=None)
    calibrate.add_argument("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
    add_allow_random_argument(calibrate)
    calibrate.add_argument("--prompts-file", default=None,
                           help="your domain's prompts, one a line (default: the shipped calibration/prompts.txt)")
    calibrate.add_argument("--out", required=True, help="calibration directory to write (absent or empty)")
    calibrate.add_argument("--overwrite", action="store_true",
                           help="replace a non-empty --out, once the new data is complete")
    calibrate.set_defaults(func=cmd_calibrate)

    from .quantize.recipes import recipe_help

    quantize = sub.add_parser("quantize", help="apply a quantization recipe to an export directory",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="recipes per format:\n" + recipe_help())
    quantize.add_argument("--artifacts", required=True, help="export directory (md-export export --out)")
    quantize.add_argument("--recipe", required=True, help="see the list below")
    quantize.add_argument("--calibration", default=None, help="calibration directory (md-export calibrate --out)")
    quantize.add_argument("--target-psnr", type=float, default=None,
                          help="keep the most sensitive blocks float until the output PSNR reaches this (dB)")
    quantize.add_argument("--activation-ranges", choices=("auto", "minmax", "percentile"), default="auto",
                          help="static ONNX recipes: how activation ranges come from the calibration data; "
                               "minmax: each tensor's min and max; percentile: clip 5e-6 of the values on each "
                               "side (99.999); auto (default): percentile for the UNet's uint8 activations, "
                               "minmax elsewhere (measured on the trained micro model)")
    quantize.add_argument("--out", required=True)
    quantize.add_argument("--no-gate", action="store_true",
                          help="exit 0 even when an artifact misses its recipe's tolerance (recorded in the manifest)")
    quantize.add_argument("--speed-runs", type=int, default=3,
                          help="alternating timed calls against the float source (default 3; 0 skips the speed check)")
    quantize.set_defaults(func=cmd_quantize)

    from md_export.benchmarks.cli import register as register_bench

    register_bench(sub)

    from .cli_prune import register as register_prune

    register_prune(sub)

    from .cli_train import register as register_train

    register_train(sub)

    from .cli_plan import register as register_plan

    register_plan(sub)

    run = sub.add_parser("run", help="the main job: summary, export, parity, exported pipeline vs torch, report")
    run.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {presets}")
    run.add_argument("--out", default="md_export_out", help="output directory (report.md, images, artifacts/)")
    run.add_argument("--prompt", default="a photo of an astronaut riding a horse")
    run.add_argument("--steps", type=int, default=4, help="DDIM steps of the image comparison")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--formats", default="onnx,coreml,tflite")
    run.add_argument("--precision", default="fp32", help="fp32, fp16, or fp32,fp16")
    run.add_argument("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
    add_allow_random_argument(run)
    run.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (an earlier run's)")
    run.set_defaults(func=cmd_run)

    parity = sub.add_parser("parity", help="every artifact in DIR against the PyTorch reference (hard gates)")
    parity.add_argument("artifacts", metavar="DIR")
    parity.add_argument("--json", action="store_true", help="print the machine-readable report")
    parity.add_argument("--threads", type=int, default=None,
                        help="runtime threads, at least 1 (default: the runtime's)")
    parity.add_argument("--pipeline", action="store_true",
                        help="also run each complete exported pipeline against the torch pipeline: per-step "
                             "latent PSNR, final image PSNR and SSIM")
    parity.add_argument("--prompts", type=int, default=2, help="prompts for --pipeline")
    parity.add_argument("--steps", type=int, default=4, help="DDIM steps for --pipeline")
    parity.set_defaults(func=cmd_parity)

    generate = sub.add_parser("generate", help="text -> image (torch, or exported artifacts)")
    generate.add_argument("prompt")
    generate.add_argument("--preset", default=None, help=f"one of: {presets} (default {DEFAULT_PRESET})")
    generate.add_argument("--runtime", choices=("torch", "onnx", "tflite", "coreml"), default="torch")
    generate.add_argument("--artifacts", default=None, help="artifact directory for --runtime onnx|tflite|coreml")
    generate.add_argument("--precision", default="fp32",
                          help="which artifacts: fp32, fp16, or a recipe's label (int8-static, int8-dynamic, ...)")
    generate.add_argument("--no-ort-cache", dest="ort_cache", action="store_false",
                          help="--runtime onnx: do not read or write onnxruntime's optimized graphs in "
                               "ARTIFACTS/.ort_cache (by default the first load writes them, later loads skip the optimizer)")
    generate.add_argument("--compare-torch", action="store_true",
                          help="also run the torch reference and print the image PSNR between the two")
    generate.add_argument("--steps", type=int, default=None, help="sampler steps (default: preset's; 1 for onestep)")
    generate.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    generate.add_argument("--seed", type=int, default=0, help="noise seed")
    generate.add_argument("--weight-seed", type=int, default=0, help="seed of random weights where no checkpoint is given")
    generate.add_argument("--guidance-scale", type=float, default=None,
                          help="classifier-free guidance (default: preset's for ddim, 1.0 for onestep)")
    generate.add_argument("--negative-prompt", default="")
    generate.add_argument("--resolution", type=int, default=None)
    generate.add_argument("--out", default="md_export_image.png", help="PNG to write")
    generate.add_argument("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
    add_allow_random_argument(generate)
    generate.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from md_export.models import CheckpointError, UnknownPresetError

    from .errors import MdExportError
    from .parity import ParityFailure
    from .tokenizer import PromptTruncatedWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("always", PromptTruncatedWarning)
    warnings.formatwarning = lambda message, category, *rest: f"md-export: warning: {message}\n"
    try:
        return args.func(args)
    except ParityFailure as exc:
        print(f"md-export: error: {exc}", file=sys.stderr)
        return EXIT_PARITY_FAILED
    # Every error a user can cause is an MdExportError; md_export.models keeps its own two (it
    # imports nothing else of ours).
    except (UnknownPresetError, CheckpointError, MdExportError) as exc:
        return _die(str(exc))
    except KeyboardInterrupt:
        return _die("interrupted")


if __name__ == "__main__":
    sys.exit(main())
