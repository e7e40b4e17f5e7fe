"""`md-export prune | distill | train-decoder | ufogen`: thin commands over md_export.prune."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _progress(label: str, total: int):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn(f"[progress.description]{label}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))


def _check_out(out: str) -> None:
    from .errors import OutputError

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} exists and is not a directory")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist")


def _require_weights(preset, checkpoint_dir, args, components=None) -> None:
    """Every component the command loads (all four: the model directory it writes holds them) must
    come from the checkpoint directory, unless --allow-random names it."""
    from md_export.models import COMPONENTS

    from .torch_networks import allowed_random, require_checkpoint_components

    require_checkpoint_components(preset, checkpoint_dir, components or COMPONENTS, allowed_random(args.allow_random))


def cmd_prune(args: argparse.Namespace) -> int:
    from md_export.models import get_preset

    from .prune.workflow import prune_preset

    _check_out(args.out)
    _require_weights(get_preset(args.preset), args.checkpoint_dir, args)
    report = prune_preset(get_preset(args.preset), args.method, args.amount, args.out, args.checkpoint_dir,
                          args.weight_seed, args.calibration)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    result = report["result"]
    before, after = report["unet_params_before"], report["unet_params_after"]
    if args.method == "magnitude":
        detail = (f"sparsity {result['sparsity']:.4f} of conv/linear weights (target {result['target_sparsity']}); "
                  "dense runtimes do not run faster on it")
    elif args.method == "channels":
        detail = f"channels removed {result['fraction']:.4f} (target {result['target_fraction']})"
    elif args.method == "heads":
        detail = (f"attention heads {result['heads_before']} -> {result['heads_after']} (removed "
                  f"{result['fraction']:.4f}, target {result['target_fraction']})")
    else:
        detail = "removed " + ", ".join(f"{b['name']} ({b['importance']:.2e})" for b in result["removed"])
    parity = report["parity_to_teacher"]
    print(f"{args.method}: {detail}\nUNet params {before:,} -> {after:,} ({100.0 * (after - before) / before:+.1f}%); "
          f"output vs unpruned: PSNR {parity['psnr_db']:.2f} dB, cosine {parity['cosine']:.5f}\n"
          f"wrote {args.out} (preset.json + safetensors); next: md-export distill --teacher {args.preset} "
          f"--student {args.out} --steps 200, or md-export export --preset {args.out}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .prune.distill import DistillSettings
    from .prune.report import markdown_table
    from .prune.workflow import distill_preset

    from md_export.models import get_preset

    out = args.out or str(Path(args.student).resolve()) + "-distilled"
    _check_out(out)
    _require_weights(get_preset(args.teacher), args.teacher_checkpoint_dir, args, ("unet",))  # the teacher's UNet
    settings = DistillSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                               feature_weight=args.feature_weight, seed=args.seed,
                               checkpoint_every=args.checkpoint_every, device=args.device)
    with _progress("distill", args.steps) as bar:
        task = bar.add_task("distill", total=args.steps, loss="")

        def on_step(step: int, total: int, row: dict) -> None:
            bar.update(task, completed=step,
                       loss=f"loss {row['loss']:.4g} (out {row['output']:.3g}, feat {row['feature']:.3g})")

        report = distill_preset(args.teacher, args.student, out, settings, args.teacher_checkpoint_dir,
                                args.weight_seed, args.calibration, on_step, args.image_prompts, args.image_steps)
    print(markdown_table(report["stages"]))
    trail = ", ".join(f"step {e['step']}: {e['psnr_db']:.2f} dB" for e in report["validation"]["output_psnr_db"])
    print(f"validation output PSNR to the teacher: {trail}; kept step {report['best_step']}")
    print(f"wrote {out} (distilled model, distill_log.jsonl, distill_report.json; rerun to resume)")
    return 0


def cmd_train_decoder(args: argparse.Namespace) -> int:
    from md_export.models import get_preset

    from .prune.decoder_training import DecoderTrainSettings
    from .prune.training_workflow import train_decoder_preset

    _check_out(args.out)
    preset = get_preset(args.preset)
    _require_weights(preset, args.checkpoint_dir, args)
    settings = DecoderTrainSettings(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                    batch_size=args.batch_size, resolution=args.resolution or preset.resolution,
                                    learning_rate=args.lr, seed=args.seed, device=args.device)
    total = args.epochs * args.steps_per_epoch
    with _progress("decoder", total) as bar:
        task = bar.add_task("decoder", total=total, loss="")

        def on_step(epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, completed=(epoch - 1) * steps + step, loss=f"epoch {epoch}/{epochs} loss {loss:.4f}")

        history = train_decoder_preset(preset, args.out, settings, args.checkpoint_dir, args.teacher,
                                       args.weight_seed, on_step)
    for row in history:
        loss = "-" if row["loss"] is None else f"{row['loss']:.4f}"
        print(f"epoch {row['epoch']}: train loss {loss}, reconstruction PSNR {row['psnr_db']:.2f} dB")
    print(f"wrote {args.out} (preset with the trained decoder; rerun with more --epochs to continue)")
    return 0


def cmd_ufogen(args: argparse.Namespace) -> int:
    from md_export.models import get_preset

    from .prune.training_workflow import ufogen_preset
    from .prune.ufogen import UFOGenSettings

    _check_out(args.out)
    _require_weights(get_preset(args.preset), args.checkpoint_dir, args)
    settings = UFOGenSettings(steps=args.steps, batch_size=args.batch_size, generator_lr=args.lr,
                              discriminator_lr=args.lr, rec_weight=args.rec_weight, seed=args.seed)
    with _progress("ufogen", args.steps) as bar:
        task = bar.add_task("ufogen", total=args.steps, loss="")

        def on_step(step: int, total: int, row: dict) -> None:
            bar.update(task, completed=step, loss=f"D {row['discriminator']:.3f} G-adv {row['adversarial']:.3f} "
                                                  f"rec {row['reconstruction']:.4g}")

        log = ufogen_preset(get_preset(args.preset), args.out, settings, args.checkpoint_dir, args.weight_seed,
                            progress=on_step)
    for row in log:
        print(f"step {row['step']}: D {row['discriminator']:.4f}, G adversarial {row['adversarial']:.4f}, "
              f"reconstruction {row['reconstruction']:.4f}")
    print(f"wrote {args.out} (one-step generator; md-export generate --preset {args.out} --sampler onestep)")
    return 0


def register(sub) -> None:
    from md_export.models import DEFAULT_PRESET

    from .prune.workflow import METHODS
    from .torch_networks import add_allow_random_argument

    prune = sub.add_parser("prune", help="prune a preset's UNet into a model directory (preset.json + safetensors)")
    prune.add_argument("--preset", default=DEFAULT_PRESET, help="preset name or model directory")
    prune.add_argument("--method", choices=METHODS, required=True,
                       help="magnitude: global unstructured sparsity; channels: inner widths of resnets and FFNs; "
                            "heads: whole attention heads of every transformer block; "
                            "blocks: remove the least important residual / transformer blocks")
    prune.add_argument("--amount", type=float, required=True,
                       help="magnitude: target sparsity (0.5); channels / heads: fraction removed (0.2); "
                            "blocks: how many (2)")
    prune.add_argument("--out", required=True, help="model directory to write")
    prune.add_argument("--calibration", default=None, help="calibration directory: rank blocks on real UNet inputs")
    prune.add_argument("--checkpoint-dir", default=None)
    add_allow_random_argument(prune)
    prune.add_argument("--weight-seed", type=int, default=0)
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(func=cmd_prune)

    distill = sub.add_parser("distill", help="distill a pruned UNet toward its unpruned teacher (output + features)")
    distill.add_argument("--teacher", required=True, help="teacher preset name or model directory")
    distill.add_argument("--student", required=True, help="pruned model directory (md-export prune --out)")
    distill.add_argument("--steps", type=int, required=True)
    distill.add_argument("--out", default=None, help="distilled model directory (default: STUDENT-distilled); "
                                                     "a rerun resumes from its distill_state.pt")
    distill.add_argument("--calibration", default=None, help="calibration directory: mix real UNet inputs in")
    distill.add_argument("--batch-size", type=int, default=2)
    distill.add_argument("--lr", type=float, default=1e-4)
    distill.add_argument("--feature-weight", type=float, default=1.0)
    distill.add_argument("--checkpoint-every", type=int, default=25)
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when present)")
    distill.add_argument("--image-prompts", type=int, default=1,
                         help="prompts for the final-image parity of each stage (0: skip it)")
    distill.add_argument("--image-steps", type=int, default=4, help="DDIM steps of that image parity")
    distill.add_argument("--teacher-checkpoint-dir", default=None)
    add_allow_random_argument(distill)
    distill.add_argument("--weight-seed", type=int, default=0, help="teacher's random-weight seed without checkpoint")
    distill.set_defaults(func=cmd_distill)

    decoder = sub.add_parser("train-decoder", help="train the light VAE decoder on photos against the frozen encoder")
    decoder.add_argument("--preset", default=DEFAULT_PRESET, help="preset name or model directory")
    decoder.add_argument("--out", required=True)
    decoder.add_argument("--epochs", type=int, default=2)
    decoder.add_argument("--steps-per-epoch", type=int, default=50)
    decoder.add_argument("--batch-size", type=int, default=2)
    decoder.add_argument("--resolution", type=int, default=None, help="crop side (default: the preset's)")
    decoder.add_argument("--lr", type=float, default=2e-4)
    decoder.add_argument("--teacher", default=None, help="preset whose decoder to distill (same encoder)")
    decoder.add_argument("--seed", type=int, default=0)
    decoder.add_argument("--device", default=None)
    decoder.add_argument("--checkpoint-dir", default=None)
    add_allow_random_argument(decoder)
    decoder.add_argument("--weight-seed", type=int, default=0)
    decoder.set_defaults(func=cmd_train_decoder)

    ufogen = sub.add_parser("ufogen", help="UFOGen one-step fine-tuning of a preset's UNet (GAN + reconstruction)")
    ufogen.add_argument("--preset", default=DEFAULT_PRESET, help="preset name or model directory")
    ufogen.add_argument("--out", required=True)
    ufogen.add_argument("--steps", type=int, required=True)
    ufogen.add_argument("--batch-size", type=int, default=2)
    ufogen.add_argument("--lr", type=float, default=1e-5)
    ufogen.add_argument("--rec-weight", type=float, default=1.0)
    ufogen.add_argument("--seed", type=int, default=0)
    ufogen.add_argument("--checkpoint-dir", default=None)
    add_allow_random_argument(ufogen)
    ufogen.add_argument("--weight-seed", type=int, default=0)
    ufogen.set_defaults(func=cmd_ufogen)
