"""`md-export plan`: thin command over md_export.plan (flags, output-folder checks, printing)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def cmd_plan(args: argparse.Namespace) -> int:
    from rich.console import Console

    from md_export.benchmarks.machine_peak import measure_machine_peak
    from md_export.models import get_preset

    from .export.manifest import check_output_dir, make_output_dir, remove_created_dir
    from .parity import ParityFailure
    from .plan import PlanSettings, check_alt_decoders, make_plan
    from .torch_networks import PIPELINE_COMPONENTS, allowed_random, require_checkpoint_components

    preset = get_preset(args.preset)
    settings = PlanSettings(runtime=args.runtime, steps=args.steps, prompts=args.prompts, min_psnr_db=args.min_psnr,
                            timing_runs=args.timing_runs, fidelity_prompts=args.fidelity_prompts,
                            max_evaluations=args.max_evaluations, pipeline_runs=args.pipeline_runs,
                            checkpoint_dir=args.checkpoint_dir, seed=args.seed,
                            alt_decoders=tuple(_alt_decoder(value) for value in args.alt_decoder))
    settings.check()  # before any work
    check_output_dir(args.out, must_be_empty=not args.overwrite)  # a second plan would mix two runs' artifacts
    require_checkpoint_components(preset, args.checkpoint_dir, PIPELINE_COMPONENTS, allowed_random(args.allow_random))
    for alt in check_alt_decoders(preset, settings):  # before any work too
        checkpoint_dir = dict(settings.alt_decoders)[alt.name]
        require_checkpoint_components(alt, checkpoint_dir, ("vae_decoder",), allowed_random(args.allow_random))
    console = Console(stderr=True)
    start = time.perf_counter()
    created = make_output_dir(args.out)
    try:
        progress = lambda m: console.print(f"[{time.perf_counter() - start:7.1f}s] {m}")  # noqa: E731
        peak, gflops = _limit_inputs(preset, settings, progress)
        plan = make_plan(preset, args.out, settings, args.artifacts, args.calibration, args.overwrite,
                         progress=progress, peak=peak, gflops=gflops,
                         peak_probe=measure_machine_peak if peak else None)
    except BaseException:
        remove_created_dir(created)  # a failed plan leaves no half-filled folder where there was none
        raise
    out = Path(args.out)
    print((out / "plan.md").read_text())
    print(f"wrote {out / 'plan.json'} and {out / 'plan.md'} ({plan['seconds']:.0f} s)")
    if plan["choice"] is None:
        raise ParityFailure(f"no {args.runtime} configuration of {preset.name} passed the gates; see {out / 'plan.md'}")
    return 0


def _limit_inputs(preset, settings, progress) -> tuple[dict | None, dict | None]:
    """This host's measured peaks and the GFLOPs per call of each component (counted on meta
    tensors, no weights): what the limit beside the end-to-end timing needs."""
    if settings.pipeline_runs == 0:
        return None, None
    from md_export.benchmarks.machine_peak import measure_machine_peak

    from .summary import component_cost

    from md_export.models import get_preset

    progress("machine peak (GEMM and conv probes) and GFLOPs per component")
    gflops = {c: component_cost(preset, c).gflops for c in ("text_encoder", "unet", "vae_decoder")}
    for name, _ in settings.alt_decoders:  # at the plan's resolution, as exported
        gflops[f"vae_decoder@{name}"] = component_cost(get_preset(name), "vae_decoder", preset.resolution).gflops
    return measure_machine_peak(), gflops


def _alt_decoder(value: str) -> tuple[str, str | None]:
    """--alt-decoder PRESET or PRESET=CHECKPOINT_DIR."""
    name, _, checkpoint_dir = value.partition("=")
    return name.strip(), (checkpoint_dir.strip() or None)


def register(sub) -> None:
    from md_export.models import DEFAULT_PRESET

    from .plan import DEFAULT_MIN_PSNR_DB, RUNTIME_RECIPES
    from .torch_networks import CHECKPOINT_DIR_HELP, add_allow_random_argument

    plan = sub.add_parser(
        "plan", help="choose each component's recipe for one runtime: lowest estimated latency that passes "
                     "the image (and fidelity) gates",
        description="Quantize the fp32 export with every recipe of the runtime's format, time each component "
                    "artifact, rank the configurations by estimated end-to-end latency (text + UNet x steps + "
                    "decoder) and evaluate them in that order against the fp32 torch pipeline; the first that "
                    "passes is the choice. Writes OUT/plan.json and OUT/plan.md.")
    plan.add_argument("--preset", default=DEFAULT_PRESET, help="preset name or model directory")
    plan.add_argument("--runtime", choices=tuple(RUNTIME_RECIPES), required=True)
    plan.add_argument("--out", required=True, help="plan directory (plan.json, plan.md, artifacts/, quantized/)")
    plan.add_argument("--artifacts", default=None, help="an fp32 export of the preset (default: export into OUT/artifacts)")
    plan.add_argument("--calibration", default=None,
                      help="calibration directory for the static recipes (default: a small one in OUT/calibration)")
    plan.add_argument("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
    add_allow_random_argument(plan)
    plan.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the preset's)")
    plan.add_argument("--prompts", type=int, default=2, help="prompts of the image PSNR gate (default 2)")
    plan.add_argument("--min-psnr", type=float, default=DEFAULT_MIN_PSNR_DB,
                      help=f"final-image PSNR floor against fp32 torch, dB (default {DEFAULT_MIN_PSNR_DB:g})")
    plan.add_argument("--fidelity-prompts", type=int, default=20,
                      help="held-out prompts of the fidelity gate (trained weights only; default 20)")
    plan.add_argument("--timing-runs", type=int, default=5, help="alternating timed calls per artifact (default 5)")
    plan.add_argument("--pipeline-runs", type=int, default=3,
                      help="end-to-end runs of the choice and of fp32, timed as whole pipelines (default 3; 0: skip)")
    plan.add_argument("--max-evaluations", type=int, default=12,
                      help="failing configurations to evaluate before giving up (default 12; fp32 is extra)")
    plan.add_argument("--alt-decoder", action="append", default=[], metavar="PRESET[=CHECKPOINT_DIR]",
                      help="also consider this preset's VAE decoder (e.g. mobilediffusion-taesd, the TAESD-style "
                           "one), fp32 and every recipe, against the same gates; its weights from CHECKPOINT_DIR "
                           "(seeded random weights without one). Repeatable")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (an earlier plan's)")
    plan.set_defaults(func=cmd_plan)
