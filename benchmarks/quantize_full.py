"""Quantization recipes on a full preset: size, UNet step latency vs fp32, UNet PSNR, image PSNR/SSIM.

    python -m md_export.benchmarks.quantize_full --artifacts out/md --calibration out/calib --out out/quant \\
        --recipes onnx-dynamic-int8,onnx-static-int8,tflite-dynamic-int8 --prompts 8 --steps 2

`--artifacts` is an fp32 export (md-export export), `--calibration` a calibration directory
(md-export calibrate). Per recipe: artifact sizes, the UNet's p50 latency in its runtime and the
ratio to the fp32 UNet in the same runtime, the UNet output PSNR on real calibration inputs, and
the final-image PSNR / SSIM of the whole quantized pipeline against the fp32 torch pipeline over
`--prompts` prompts. Prints Markdown; `--json` keeps the numbers. Not a test: minutes per recipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from md_export.export.manifest import read_manifest
from md_export.parity import check_directory
from md_export.pipeline_parity import check_pipelines
from md_export.quantize.driver import QuantizeError, quantize_directory
from md_export.quantize.recipes import get_recipe

from .paired import paired_unet_p50_ms

RUNTIME_NAMES = {"onnx": "onnxruntime", "tflite": "litert"}


def _quantized(artifacts: Path, name: str, target: Path, args, target_psnr: float | None) -> list[dict]:
    if args.reuse and (target / "manifest.json").exists():
        return [e for e in read_manifest(target)["artifacts"] if e.get("recipe") == name]
    return quantize_directory(artifacts, name, target, args.calibration, target_psnr,
                              progress=lambda m: print(f"  {m}", flush=True),
                              gate=False, no_gate_reason="quantize_full reports each recipe's parity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", default="onnx-dynamic-int8,onnx-static-int8,onnx-w8a16,tflite-dynamic-int8,"
                                              "tflite-weight-only-int8,tflite-static-int8")
    parser.add_argument("--target-psnr", type=float, default=None, help="fallback target for the ONNX static recipe")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="keep recipe directories already in --out (re-measure only)")
    args = parser.parse_args()

    artifacts, out = Path(args.artifacts), Path(args.out)
    fp32_sizes = {(e["format"], e["component"]): e["size_bytes"] for e in read_manifest(artifacts)["artifacts"]
                  if e["precision"] == "fp32"}
    rows = []
    for name in args.recipes.split(","):
        recipe = get_recipe(name)
        target = out / name
        target_psnr = args.target_psnr if recipe.fallback else None
        try:
            entries = _quantized(artifacts, name, target, args, target_psnr)
        except QuantizeError as exc:  # a recipe the backend cannot apply is a row of the table too
            rows.append({"recipe": name, "error": str(exc)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        seconds = sum(e["quantize_seconds"] for e in {e["file"]: e for e in entries}.values())
        row = {"recipe": name, "quantize_s": round(seconds, 1), "sizes_mb": {}, "size_ratio": {}}
        for entry in entries:
            row["sizes_mb"][entry["component"]] = round(entry["size_bytes"] / 1e6, 1)
            row["size_ratio"][entry["component"]] = round(fp32_sizes[(recipe.format, entry["component"])]
                                                          / entry["size_bytes"], 2)
        report = check_directory(target)
        unet = next(a for a in report.artifacts if a.component == "unet")
        real = {k: v for k, v in unet.outputs.items() if k.endswith("@real")}
        row["unet_psnr_db_real"] = round(next(iter(real.values()))["psnr_db"], 2) if real else None
        row["tensor_parity"] = "passed" if report.passed else "failed"
        if recipe.format in RUNTIME_NAMES:
            fp32_p50, p50 = paired_unet_p50_ms(artifacts, target, recipe.format, args.runs)
            row["unet_p50_ms"] = round(p50, 1)
            row["unet_fp32_p50_ms"] = round(fp32_p50, 1)
            row["speedup_vs_fp32"] = round(fp32_p50 / p50, 2)
            pipelines = check_pipelines(target, args.prompts, args.steps)
            if pipelines:
                data = pipelines[0].as_dict()
                row["image_psnr_db_min"] = data["min_image_psnr_db"]
                row["image_psnr_db_mean"] = round(float(np.mean(pipelines[0].image_psnr_db)), 2)
                row["image_ssim_mean"] = data["mean_image_ssim"]
        if "fallback" in entries[0]:
            fb = next(e["fallback"] for e in entries if e["component"] == "unet")
            row["fallback"] = {"reached": fb["reached"], "plain_psnr_db": round(fb["plain_psnr_db"], 2),
                               "final_psnr_db": round(fb["final_psnr_db"], 2), "float_blocks": fb["float_blocks"]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print("\n| recipe | UNet MB (x smaller) | UNet p50 ms (fp32) | speedup | UNet PSNR dB (real) | image PSNR dB mean/min "
          "| SSIM | tensor parity |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        if "error" in row:
            print(f"| {row['recipe']} | failed: {row['error'][:200]} | | | | | | |")
            continue
        print(f"| {row['recipe']} | {row['sizes_mb'].get('unet')} ({row['size_ratio'].get('unet')}x) | "
              f"{row.get('unet_p50_ms', '-')} ({row.get('unet_fp32_p50_ms', '-')}) | {row.get('speedup_vs_fp32', '-')} | "
              f"{row['unet_psnr_db_real']} | {row.get('image_psnr_db_mean', '-')}/{row.get('image_psnr_db_min', '-')} | "
              f"{row.get('image_ssim_mean', '-')} | {row['tensor_parity']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
