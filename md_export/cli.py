"""`md-export`: thin command line over the library. Parses flags, calls, prints.

Every user-facing failure becomes one line on stderr (`md-export: error: ...`) and exit code 2;
nothing half-written is left behind (outputs are written to a temp name and renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

EXIT_USER_ERROR = 2


def _die(message: str) -> int:
    print(f"md-export: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


# ---- summary -----------------------------------------------------------------------------

def cmd_summary(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from models import get_preset

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

def _check_writable(path: Path) -> None:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise OSError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OSError(f"output directory {parent} is not writable")
    if path.is_dir():
        raise OSError(f"output {path} is a directory")


def save_png(image, path: Path) -> None:
    from PIL import Image

    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cmd_generate(args: argparse.Namespace) -> int:
    from models import get_preset

    preset = get_preset(args.preset)
    steps = args.steps if args.steps is not None else (1 if args.sampler == "onestep" else preset.default_steps)
    if steps < 1:
        return _die(f"--steps must be at least 1, got {steps}")
    resolution = args.resolution or preset.resolution
    factor = preset.vae.downsample_factor * preset.unet.downsample_factor
    if resolution % factor:
        return _die(f"--resolution {resolution} is not a multiple of {factor} for preset {preset.name}")
    guidance = args.guidance_scale
    if guidance is None:
        guidance = 1.0 if args.sampler == "onestep" else preset.guidance_scale
    out = Path(args.out)
    try:
        _check_writable(out)
    except OSError as exc:
        return _die(f"cannot write {out}: {exc}")

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .pipeline import TextToImagePipeline
    from .torch_networks import torch_networks

    console = Console(stderr=True)
    with console.status(f"building {preset.name} networks at {resolution}x{resolution} ..."):
        networks, sources = torch_networks(preset, resolution, args.checkpoint_dir, seed=args.weight_seed)
    for component, source in sources.items():
        console.print(f"  {component}: {source}")
    if all(source.startswith("random") for source in sources.values()):
        console.print("[yellow]No checkpoint given: the networks have random weights, so the image is noise. "
                      "Pass --checkpoint-dir for real pictures.[/yellow]")
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{args.sampler} sampling", total=steps)

        def on_step(step: int, total: int, timestep: int, latent) -> None:
            progress.update(task, completed=step, total=total)

        result = pipeline.generate(args.prompt, steps=steps, seed=args.seed, guidance_scale=guidance,
                                   sampler=args.sampler, negative_prompt=args.negative_prompt, callback=on_step)
    save_png(result.image, out)
    timing = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.seconds.items())
    print(f"wrote {out} ({resolution}x{resolution}, {args.sampler}, {steps} steps, guidance {guidance}, "
          f"seed {args.seed}); {timing}")
    return 0


# ---- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from models import DEFAULT_PRESET, preset_names

    from .samplers import SAMPLERS

    parser = argparse.ArgumentParser(prog="md-export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    presets = ", ".join(preset_names())

    summary = sub.add_parser("summary", help="parameters and GFLOPs per component")
    summary.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {presets}")
    summary.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the preset's)")
    summary.add_argument("--json", action="store_true", help="print machine-readable JSON")
    summary.add_argument("--ablation", action="store_true", help="the sd15 -> mobilediffusion ablation table")
    summary.set_defaults(func=cmd_summary)

    generate = sub.add_parser("generate", help="text -> image with the torch reference pipeline")
    generate.add_argument("prompt")
    generate.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {presets}")
    generate.add_argument("--steps", type=int, default=None, help="sampler steps (default: preset's; 1 for onestep)")
    generate.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    generate.add_argument("--seed", type=int, default=0, help="noise seed")
    generate.add_argument("--weight-seed", type=int, default=0, help="seed of random weights where no checkpoint is given")
    generate.add_argument("--guidance-scale", type=float, default=None,
                          help="classifier-free guidance (default: preset's for ddim, 1.0 for onestep)")
    generate.add_argument("--negative-prompt", default="")
    generate.add_argument("--resolution", type=int, default=None)
    generate.add_argument("--out", default="md_export_image.png", help="PNG to write")
    generate.add_argument("--checkpoint-dir", default=None,
                          help="directory with text_encoder/unet/vae_decoder .safetensors (else random weights)")
    generate.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from models import CheckpointError, UnknownPresetError

    from .errors import MdExportError
    from .tokenizer import PromptTruncatedWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("always", PromptTruncatedWarning)
    warnings.formatwarning = lambda message, category, *rest: f"md-export: warning: {message}\n"
    try:
        return args.func(args)
    except (UnknownPresetError, CheckpointError, MdExportError) as exc:
        return _die(str(exc))
    except KeyboardInterrupt:
        return _die("interrupted")


if __name__ == "__main__":
    sys.exit(main())
