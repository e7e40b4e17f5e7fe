"""`md-export train` and `md-export quality`: the micro reference model's training and its
prompt-fidelity measurement / quality gate. Thin: parses flags, calls md_export.train / .quality."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

MICRO = "mobilediffusion-micro"


def _shape_weights(values: list[str]) -> dict[str, float]:
    from .errors import BadArgumentError

    weights = {}
    for value in values:
        shape, _, weight = value.partition("=")
        try:
            weights[shape.strip()] = float(weight)
        except ValueError:
            raise BadArgumentError(f"--shape-weight takes SHAPE=W (e.g. square=2), got {value!r}") from None
    return weights


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from md_export.models import get_preset

    from .train import TrainSettings, train_micro

    preset = get_preset(args.preset)
    settings = TrainSettings(data=args.data, steps=args.steps, vae_steps=args.vae_steps, batch_size=args.batch_size,
                             shapes_count=args.shapes_count, seed=args.seed, threads=args.threads,
                             save_every=args.save_every, learning_rate=args.learning_rate,
                             input_perturbation=args.input_perturbation,
                             shape_weights=_shape_weights(args.shape_weight),
                             high_noise_fraction=args.high_noise_fraction,
                             init_from=None if args.init_from is None else str(Path(args.init_from).resolve()))
    console = Console(stderr=True)
    with Progress(TextColumn("[progress.description]{task.description:<10}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TextColumn("loss {task.fields[loss]:.4f}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        tasks = {"vae": progress.add_task("vae", total=settings.vae_steps, loss=float("nan")),
                 "diffusion": progress.add_task("diffusion", total=settings.steps, loss=float("nan"))}

        def on_step(phase: str, step: int, total: int, loss: float) -> None:
            progress.update(tasks[phase], completed=step, loss=loss)

        summary = train_micro(preset, args.out, settings, on_step, stop_at=args.stop_at)
    print(f"wrote {args.out}: text_encoder, unet, vae_decoder, vae_encoder .safetensors, loss.jsonl, train.json "
          f"({summary['seconds']:.0f} s; final losses: vae {summary['final_vae_loss']}, "
          f"diffusion {summary['final_diffusion_loss']}); use it with --checkpoint-dir {args.out}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from rich.console import Console

    from md_export.models import get_preset

    from .errors import BadArgumentError
    from .export.manifest import check_output_path, write_text_atomic
    from .images import save_png
    from .quality import (QUALITY_MARGIN, GateResult, SamplingSettings, artifact_generate, check_gate, grid_image,
                          markdown_report, measure, prompt_set, text_summary, torch_generate)

    if (args.artifacts is None) == (args.preset is None):
        raise BadArgumentError("pass exactly one of --artifacts DIR (exported recipe, gated against fp32 torch) "
                               "or --preset NAME (the torch model)")
    if args.seeds < 1:
        raise BadArgumentError(f"--seeds must be at least 1, got {args.seeds}")
    try:
        prompts = prompt_set(args.prompts, args.num_prompts)
    except ValueError as exc:
        raise BadArgumentError(f"--num-prompts: {exc}") from None
    for output in (args.grid, args.markdown):
        if output is not None:
            check_output_path(output)  # before minutes of sampling
    seeds = list(range(args.seeds))
    sampling = SamplingSettings(args.steps, args.guidance_scale)
    console = Console(stderr=True)
    margin = QUALITY_MARGIN if args.margin is None else args.margin
    start = time.perf_counter()

    def run(generate, source):
        with console.status(f"fidelity of {source} ...") as status:
            return measure(generate, prompts, seeds, source,
                           lambda done, total: status.update(f"fidelity of {source}: {done}/{total} pictures"))

    if args.preset is not None:
        from .torch_networks import PIPELINE_COMPONENTS, allowed_random, require_checkpoint_components

        require_checkpoint_components(get_preset(args.preset), args.checkpoint_dir, PIPELINE_COMPONENTS,
                                      allowed_random(args.allow_random))
        generate, source = torch_generate(get_preset(args.preset), args.checkpoint_dir, sampling)
        report = run(generate, source)
        data, gate = report.as_dict(), None
        data["gate_margin"] = report.margins(margin)
    else:
        generate, source, preset, checkpoint_dir = artifact_generate(args.artifacts, args.runtime, args.precision,
                                                                     sampling)
        artifacts = run(generate, source)
        reference_generate, reference_source = torch_generate(preset, checkpoint_dir, sampling)
        gate = GateResult(artifacts, run(reference_generate, reference_source), margin)
        report, data = artifacts, gate.as_dict()
    setting = f"{len(prompts)} {args.prompts} prompts x {len(seeds)} seeds"
    if args.markdown is not None:
        write_text_atomic(args.markdown, markdown_report(report, gate, margin, setting))
    if args.grid is not None:
        save_png(grid_image(report), args.grid)
    if args.json:
        print(json.dumps(data if args.items else {k: v for k, v in data.items() if k != "items"}, indent=2))
    else:
        print(text_summary(report, gate, margin, setting), end="")
        for output in (args.markdown, args.grid):
            if output is not None:
                print(f"wrote {output}")
        console.print(f"{time.perf_counter() - start:.1f} s")
    if gate is not None:
        check_gate(gate)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .quality import PROMPT_SETS
    from .train import DATA_CHOICES, TrainSettings

    defaults = TrainSettings()
    train = sub.add_parser("train", help="train the micro reference model (VAE, then text encoder + UNet)")
    train.add_argument("--preset", default=MICRO, help=f"the preset to train (default {MICRO})")
    train.add_argument("--data", choices=DATA_CHOICES, default=defaults.data,
                       help="captioned shapes, handwritten digits (scikit-learn), or both")
    train.add_argument("--out", required=True, help="checkpoint directory (resumes when it holds a run)")
    train.add_argument("--steps", type=int, default=defaults.steps, help="text encoder + UNet steps")
    train.add_argument("--vae-steps", type=int, default=defaults.vae_steps, help="autoencoder steps (run first)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help="text encoder + UNet peak learning rate (cosine decay to 10%%)")
    train.add_argument("--input-perturbation", type=float, default=defaults.input_perturbation,
                       help="extra noise on the UNet's input only (0.1 in Ning et al. 2023; default 0: off)")
    train.add_argument("--shape-weight", action="append", default=[], metavar="SHAPE=W",
                       help="draw rendered scenes holding SHAPE W times as often (repeatable; e.g. square=2)")
    train.add_argument("--high-noise-fraction", type=float, default=defaults.high_noise_fraction,
                       help="share of timesteps drawn from the noisiest 40%% (where outlines are decided; "
                            "default 0: uniform)")
    train.add_argument("--init-from", default=None, metavar="DIR",
                       help="continue a checkpoint directory (e.g. models/weights/mobilediffusion-micro) with a "
                            "fresh optimiser and schedule; with --vae-steps 0 its autoencoder is kept")
    train.add_argument("--shapes-count", type=int, default=defaults.shapes_count, help="rendered training scenes")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--threads", type=int, default=defaults.threads,
                       help="torch CPU threads (1 is faster on a busy machine)")
    train.add_argument("--save-every", type=int, default=defaults.save_every, help="resumable state every N steps")
    train.add_argument("--stop-at", type=int, default=None,
                       help="stop after N text encoder + UNet steps and write the weights so far; the same "
                            "command without it resumes the full schedule")
    train.set_defaults(func=cmd_train)

    quality = sub.add_parser("quality", help="prompt fidelity (%% attributes correct) and the quality gate")
    quality.add_argument("--artifacts", default=None, help="an export / quantize directory: gated against fp32 torch")
    quality.add_argument("--preset", default=None, help=f"score the torch model instead (e.g. {MICRO})")
    quality.add_argument("--checkpoint-dir", default=None, help="with --preset: weights (default: the shipped ones)")
    from .torch_networks import add_allow_random_argument

    add_allow_random_argument(quality)
    quality.add_argument("--prompts", choices=PROMPT_SETS, default="held-out")
    quality.add_argument("--num-prompts", type=int, default=None,
                         help="held-out: the first N prompts of the shipped held-out set (default: all 120); "
                              "train: N training-split prompts (default 20)")
    quality.add_argument("--seeds", type=int, default=2, help="noise seeds per prompt")
    quality.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the preset's)")
    quality.add_argument("--guidance-scale", type=float, default=None)
    quality.add_argument("--runtime", choices=("onnx", "tflite"), default=None, help="with --artifacts")
    quality.add_argument("--precision", default=None, help="with --artifacts, when the directory holds several")
    quality.add_argument("--margin", type=float, default=None,
                         help="allowed fidelity drop below fp32 torch (default 0.05)")
    quality.add_argument("--json", action="store_true",
                         help='print {"fidelity": 0..1, "n": int, "per_attribute": {...}, "confusion": {...}, ...}')
    quality.add_argument("--items", action="store_true", help="with --json: every picture's verdicts too")
    quality.add_argument("--markdown", default=None, metavar="PATH",
                         help="write the report as Markdown: per-attribute accuracy, the gate's margins in "
                              "attributes, the shape / colour / digit scorers' confusion tables")
    quality.add_argument("--grid", default=None, metavar="PATH",
                         help="write a PNG grid of every scored picture with its prompt and verdicts")
    quality.set_defaults(func=cmd_quality)
