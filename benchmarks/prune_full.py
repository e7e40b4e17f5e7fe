"""Pruning x (params, GFLOPs, UNet latency on onnxruntime, parity to the teacher before/after distillation).

    python -m benchmarks.prune_full --preset mobilediffusion --out out/prune_full --json out/prune_full.json

For each variant (the unpruned teacher, magnitude sparsity, channel and head fractions, block counts):
prune into a model directory, export its UNet to ONNX fp32 and time it with onnxruntime on the
export's reference inputs, then distill a few steps toward the teacher; parity (output PSNR /
cosine to the teacher's UNet, on seeded inputs the pruning never saw, and the final image PSNR of
a DDIM pipeline with only the UNet swapped) is measured before and after. Distillation keeps its
best held-out checkpoint (the step is in the table). The JSON is rewritten after every variant, so
an interrupted run keeps the rows it finished.
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


def ort_latency_ms(export_dir: Path, threads: int, runs: int) -> float:
    """Median onnxruntime latency of the exported UNet (fp32, batch 1) on its reference inputs."""
    from benchmarks.harness import time_calls
    from md_export.export.manifest import read_manifest
    from md_export.parity import load_reference
    from md_export.runtimes.onnx_runner import OnnxRunner

    entry = next(e for e in read_manifest(export_dir)["artifacts"] if e["component"] == "unet")
    feeds, _ = load_reference(export_dir, entry)
    runner = OnnxRunner(export_dir / entry["file"], threads=threads)
    _, samples, _ = time_calls(lambda: runner.run(feeds), warmup=1, runs=runs)
    return statistics.median(samples)


def main() -> None:
    from md_export.export import export_preset
    from md_export.export.manifest import write_text_atomic
    from md_export.prune.distill import STATE_FILE, DistillSettings
    from md_export.prune.workflow import distill_preset, prune_preset
    from models import get_preset

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
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
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
    rows = []
    log(f"teacher {teacher_name}: export UNet to ONNX")
    export_preset(preset, ["unet"], ["onnx"], ["fp32"], out / "teacher-onnx", checkpoint_dir=args.checkpoint_dir)
    teacher_ms = ort_latency_ms(out / "teacher-onnx", args.threads, args.runs)
    for method, amount in variants:
        name = f"{method}-{amount:g}"
        model_dir = out / name
        log(f"{name}: prune")
        prune_preset(preset, method, amount, model_dir, args.checkpoint_dir, calibration=args.calibration)
        log(f"{name}: export UNet to ONNX and time it")
        export_preset(get_preset(str(model_dir)), ["unet"], ["onnx"], ["fp32"], out / f"{name}-onnx")
        latency = ort_latency_ms(out / f"{name}-onnx", args.threads, args.runs)
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
                         "ort_ms": round(teacher_ms, 2), "psnr_before": None, "cosine_before": None,
                         "image_psnr_before": None, "psnr_after": None, "cosine_after": None,
                         "image_psnr_after": None, "best_step": None})
        rows.append({"variant": name, "params": pruned["params"], "nonzero_params": pruned["nonzero_params"],
                     "gflops": pruned["gflops"], "ort_ms": round(latency, 2),
                     "psnr_before": pruned["parity_psnr_db"], "cosine_before": pruned["parity_cosine"],
                     "image_psnr_before": pruned.get("image_psnr_db"),
                     "psnr_after": distilled["parity_psnr_db"], "cosine_after": distilled["parity_cosine"],
                     "image_psnr_after": distilled.get("image_psnr_db"), "best_step": report["best_step"]})
        log(f"{name}: {rows[-1]}")
        # Full-size training state (student, AdamW moments, best weights) and the timed ONNX copy are
        # ~9 GB per variant; the table needs neither, the pruned and distilled model directories stay.
        (out / f"{name}-distilled" / STATE_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / f"{name}-onnx", ignore_errors=True)
        if args.json:
            write_text_atomic(Path(args.json), json.dumps(
                {"preset": teacher_name, "distill_steps": args.distill_steps, "batch_size": args.batch_size,
                 "learning_rate": args.lr, "image_parity": report["image_parity"], "rows": rows}, indent=2) + "\n")

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    print(f"\n{teacher_name} UNet at {preset.resolution}x{preset.resolution}, onnxruntime fp32 {args.threads} threads, "
          f"distillation {args.distill_steps} steps ({time.perf_counter() - start:.0f} s in all)\n")
    print("| variant | params | nonzero | GFLOPs | ORT ms | PSNR before (dB) | cos before | image PSNR before (dB) "
          "| PSNR after (dB) | cos after | image PSNR after (dB) | kept step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['nonzero_params']:,} | {r['gflops']:.3f} | "
              f"{r['ort_ms']:.1f} | {fmt(r['psnr_before'], '.2f')} | {fmt(r['cosine_before'], '.4f')} | "
              f"{fmt(r['image_psnr_before'], '.2f')} | {fmt(r['psnr_after'], '.2f')} | "
              f"{fmt(r['cosine_after'], '.4f')} | {fmt(r['image_psnr_after'], '.2f')} | {fmt(r['best_step'], 'd')} |")


if __name__ == "__main__":
    main()
