"""Pruning x (params, GFLOPs, UNet latency on onnxruntime, parity to the teacher before/after distillation).

    python -m md_export.benchmarks.prune_full --preset mobilediffusion --out out/prune_full --json out/prune_full.json

For each variant (the unpruned teacher, magnitude sparsity, channel and head fractions, block counts):
prune into a model directory, export its UNet to ONNX fp32 and time it with onnxruntime on the
export's reference inputs, in alternation with the teacher's UNet (so the ratio holds on a busy
machine; `--retime` redoes only this step for the model directories of an earlier run), then
distill a few steps toward the teacher; parity (output PSNR / cosine to the teacher's UNet, on
seeded inputs the pruning never saw, and the final image PSNR of a DDIM pipeline with only the
UNet swapped) is measured before and after. Distillation keeps its best checkpoint on separate
validation inputs (the step is in the table). The JSON is rewritten after every variant, so an
interrupted run keeps the rows it finished.
Not a test: on the full preset each variant takes minutes. `--preset mobilediffusion-tiny` is a
one-minute check that the script works.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path



def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    from md_export.export import export_preset
    from md_export.export.manifest import write_text_atomic
    from md_export.prune.distill import STATE_FILE, DistillSettings
    from md_export.prune.workflow import distill_preset, prune_preset
    from md_export.models import get_preset

    from .paired import paired_unet_p50_ms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilediffusion")
    parser.add_argument("--out", default="out/prune_full")
    parser.add_argument("--magnitude", default="0.5", help="sparsities, comma-separated ('' for none)")
    parser.add_argument("--channels", default="0.2,0.4", help="channel fractions, comma-separated")
    parser.add_argument("--heads", default="0.5", help="attention-head fractions, comma-separated")
    parser.add_argument("--blocks", default="2,4", help="block counts, comma-separated")
    parser.add_argument("--distill-steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=2, help="distillation batch")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="steps between validations (best checkpoint)")
    parser.add_argument("--image-prompts", type=int, default=1, help="prompts of the final-image parity (0: skip)")
    parser.add_argument("--image-steps", type=int, default=4, help="DDIM steps of the final-image parity")
    parser.add_argument("--calibration", default=None, help="calibration directory (md-export calibrate)")
    parser.add_argument("--checkpoint-dir", default=None, help="teacher weights (default: seeded random)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--runs", type=int, default=5, help="timed onnxruntime runs per UNet")
    parser.add_argument("--fidelity-prompts", type=int, default=0,
                        help="trained weights only (e.g. mobilediffusion-micro): score teacher, pruned and "
                             "distilled pictures with md-export quality's fidelity scorer on this many held-out "
                             "prompts x 2 seeds")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    parser.add_argument("--retime", action="store_true",
                        help="only re-export and re-time the UNets of an earlier run's --out (rows from its --json)")
    args = parser.parse_args()

    teacher_name = args.preset
    preset = get_preset(teacher_name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    variants = [(method, amount) for method in ("magnitude", "channels", "heads", "blocks")
                for amount in _floats(getattr(args, method))]
    teacher_onnx = out / "teacher-onnx"
    if not (args.retime and (teacher_onnx / "manifest.json").exists()):  # --retime reuses the teacher's export
        log(f"teacher {teacher_name}: export UNet to ONNX")
        export_preset(preset, ["unet"], ["onnx"], ["fp32"], teacher_onnx, checkpoint_dir=args.checkpoint_dir)

    def fidelity_of(model: str | Path, checkpoint_dir: str | None = None) -> float | None:
        """Fraction of the prompts' attributes (colour, shape, position, digit) the pictures get right."""
        if args.fidelity_prompts < 1:
            return None
        from md_export.quality import SamplingSettings, measure, quality_prompts, torch_generate

        generate, source = torch_generate(get_preset(str(model)), checkpoint_dir, SamplingSettings())
        return round(measure(generate, quality_prompts("held-out", args.fidelity_prompts), [0, 1], source).fidelity, 4)

    def time_against_teacher(model_dir: Path, name: str) -> dict:
        """Export the UNet of `model_dir`, time it alternating with the teacher's, drop the export."""
        export_preset(get_preset(str(model_dir)), ["unet"], ["onnx"], ["fp32"], out / f"{name}-onnx")
        teacher_ms, ms = paired_unet_p50_ms(teacher_onnx, out / f"{name}-onnx", "onnx", args.runs,
                                            threads=args.threads)
        shutil.rmtree(out / f"{name}-onnx", ignore_errors=True)  # 1.2-1.6 GB each; the model dir stays
        return {"ort_ms": round(ms, 2), "teacher_ort_ms": round(teacher_ms, 2),
                "ort_speedup": round(teacher_ms / ms, 3)}

    def write_json(extra: dict) -> None:
        if args.json:
            write_text_atomic(Path(args.json), json.dumps(
                {"preset": teacher_name, "distill_steps": args.distill_steps, "batch_size": args.batch_size,
                 "learning_rate": args.lr, "ort_threads": args.threads, **extra, "rows": rows}, indent=2) + "\n")

    if args.retime:
        if not args.json or not Path(args.json).exists():
            raise SystemExit("--retime needs the --json of an earlier run")
        earlier = json.loads(Path(args.json).read_text())
        rows = earlier["rows"]
        for row in rows[1:]:
            log(f"{row['variant']}: re-export and time against the teacher")
            row.update(time_against_teacher(out / row["variant"], row["variant"]))
        teacher_ms_from_pairs(rows)
        write_json({"image_parity": earlier.get("image_parity")})
        print_table(rows, teacher_name, preset, args, time.perf_counter() - start)
        return

    rows = []
    teacher_fidelity = fidelity_of(teacher_name, args.checkpoint_dir)
    for method, amount in variants:
        name = f"{method}-{amount:g}"
        model_dir = out / name
        log(f"{name}: prune")
        prune_preset(preset, method, amount, model_dir, args.checkpoint_dir, calibration=args.calibration)
        log(f"{name}: export UNet to ONNX and time it against the teacher")
        timing = time_against_teacher(model_dir, name)
        log(f"{name}: distill {args.distill_steps} steps")
        settings = DistillSettings(steps=args.distill_steps, batch_size=args.batch_size, learning_rate=args.lr,
                                   checkpoint_every=args.checkpoint_every)
        report = distill_preset(teacher_name, model_dir, out / f"{name}-distilled", settings,
                                teacher_checkpoint=args.checkpoint_dir, calibration=args.calibration,
                                image_prompts=args.image_prompts, image_steps=args.image_steps)
        teacher_stage, pruned, distilled = report["stages"]
        if not rows:
            rows.append({"variant": "teacher (unpruned)", "params": teacher_stage["params"],
                         "nonzero_params": teacher_stage["nonzero_params"], "gflops": teacher_stage["gflops"],
                         "ort_ms": timing["teacher_ort_ms"], "psnr_before": None, "cosine_before": None,
                         "image_psnr_before": None, "psnr_after": None, "cosine_after": None,
                         "image_psnr_after": None, "best_step": None, "fidelity": teacher_fidelity})
        rows.append({"variant": name, "params": pruned["params"], "nonzero_params": pruned["nonzero_params"],
                     "gflops": pruned["gflops"], **timing,
                     "psnr_before": pruned["parity_psnr_db"], "cosine_before": pruned["parity_cosine"],
                     "image_psnr_before": pruned.get("image_psnr_db"),
                     "psnr_after": distilled["parity_psnr_db"], "cosine_after": distilled["parity_cosine"],
                     "image_psnr_after": distilled.get("image_psnr_db"), "best_step": report["best_step"],
                     "fidelity_before": fidelity_of(model_dir),
                     "fidelity_after": fidelity_of(out / f"{name}-distilled")})
        log(f"{name}: {rows[-1]}")
        # The full-size training state (student, AdamW moments, best weights) is ~6 GB per variant;
        # the table does not need it, the pruned and distilled model directories stay.
        (out / f"{name}-distilled" / STATE_FILE).unlink(missing_ok=True)
        teacher_ms_from_pairs(rows)
        write_json({"image_parity": report["image_parity"]})
    print_table(rows, teacher_name, preset, args, time.perf_counter() - start)


def teacher_ms_from_pairs(rows: list[dict]) -> None:
    """The teacher row's latency: the median of the teacher's p50s across every pairing."""
    rows[0]["ort_ms"] = round(statistics.median(r["teacher_ort_ms"] for r in rows[1:]), 2)


def print_table(rows: list[dict], teacher_name: str, preset, args, seconds: float) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    with_fidelity = rows[0].get("fidelity") is not None
    print(f"\n{teacher_name} UNet at {preset.resolution}x{preset.resolution}, onnxruntime fp32 {args.threads} threads, "
          f"distillation {args.distill_steps} steps ({seconds:.0f} s in all)\n")
    print("| variant | params | nonzero | GFLOPs | ORT ms | speedup | PSNR before (dB) | cos before "
          "| image PSNR before (dB) | PSNR after (dB) | cos after | image PSNR after (dB) | kept step |"
          + (" fidelity before | fidelity after |" if with_fidelity else ""))
    print("|" + " --- |" + " ---: |" * (14 if with_fidelity else 12))
    for r in rows:
        line = (f"| {r['variant']} | {r['params']:,} | {r['nonzero_params']:,} | {r['gflops']:.3f} | "
                f"{r['ort_ms']:.1f} | {fmt(r.get('ort_speedup'), '.2f')} | {fmt(r['psnr_before'], '.2f')} | "
                f"{fmt(r['cosine_before'], '.4f')} | {fmt(r['image_psnr_before'], '.2f')} | "
                f"{fmt(r['psnr_after'], '.2f')} | {fmt(r['cosine_after'], '.4f')} | "
                f"{fmt(r['image_psnr_after'], '.2f')} | {fmt(r['best_step'], 'd')} |")
        if with_fidelity:
            before = r.get("fidelity", r.get("fidelity_before"))
            line += f" {fmt(before, '.1%')} | {fmt(r.get('fidelity_after'), '.1%')} |"
        print(line)


if __name__ == "__main__":
    main()
