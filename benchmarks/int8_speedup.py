"""Does int8 pay on this host? Each network's int8 speedup over its fp32 source, held against the
int8/fp32 GEMM probe ratio measured in the same run, and int8 picture quality on trained weights.

    python -m md_export.benchmarks.int8_speedup --artifacts out/md --calibration out/calib --out out/int8 \\
        [--extra out/taesd,out/taesd-calib] [--micro-out out/micro] [--runs 5] [--json out/int8.json]

Per fp32 ONNX network of each artifact directory (quantized with `--recipe` into `--out`, or
reused from there):
- p50 of fp32 and int8, timed in alternation (background load weighs on both alike), and the
  speedup;
- the probe ratio (int8 GOP/s / fp32 GFLOP/s of pre-packed GEMMs, measured before and after the
  networks; the higher of the two reads is kept for each) and the speedup as a share of it;
- the Amdahl bound: the fp32 profile's share of time in Conv/MatMul/Gemm, sped up by the probe
  ratio, the rest not: 1 / ((1 - g) + g / ratio). On a host whose int8 GEMMs run 15x faster (AMX)
  the float ops left (normalization, activations, Q/DQ) set the limit, not the GEMMs;
- the kernel bound: the same with the Conv share sped up by the conv probe's ratio instead
  (machine_peak.CONV_PROBE: onnxruntime's int8 convs do not run on its GEMM), what a network can
  reach when every Conv/MatMul/Gemm runs at its probe's int8 speed and nothing else changes;
- the kernels onnxruntime runs (quantized / all) from the quantize step.

`--micro-out`: the trained `mobilediffusion-micro` weights exported, calibrated on training-split
captions and quantized the same way; final-image PSNR of the int8 pipeline against the fp32 torch
pipeline, and the fidelity gate (held-out prompts) against fp32 torch. Not a test: minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from md_export.export.manifest import read_manifest, write_json_atomic
from md_export.parity import load_reference
from md_export.quantize.driver import quantize_directory
from md_export.quantize.speed import paired_speed

from .machine_peak import describe_peak, measure_machine_peak
from .profile import profile

CONV_OPS = ("Conv", "FusedConv")
MATMUL_OPS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm")
GEMM_OPS = CONV_OPS + MATMUL_OPS


def _quantized(artifacts: Path, target: Path, recipe: str, calibration: Path) -> Path:
    if not (target / "manifest.json").exists():
        quantize_directory(artifacts, recipe, target, calibration, progress=lambda m: print(f"  {m}", flush=True),
                              gate=False, no_gate_reason="the benchmark reports speed, not the gate")
    return target


def gemm_shares(path: Path, runs: int) -> tuple[float, float]:
    """Shares of the fp32 network's kernel time in Conv and in MatMul/Gemm (onnxruntime's profiler)."""
    result = profile(path, runs=runs, warmup=1)
    conv = sum(row["share"] for row in result["by_op_type"] if row["op_type"] in CONV_OPS)
    matmul = sum(row["share"] for row in result["by_op_type"] if row["op_type"] in MATMUL_OPS)
    return conv, matmul


def hold_against(row: dict, ratio: float, conv_ratio: float | None = None) -> None:
    """The row's speedup against the probe ratio and the Amdahl bound that ratio implies; with
    `conv_ratio` (the conv probe's), also the kernel bound: Conv time sped up by the conv ratio,
    MatMul/Gemm time by the GEMM ratio, the rest not, since onnxruntime runs int8 convs through
    direct-convolution kernels that do not reach its GEMM's throughput."""
    share = row["fp32_gemm_time_share"]
    bound = 1.0 / ((1.0 - share) + share / ratio)
    row.update({"probe_ratio": round(ratio, 2), "share_of_probe_ratio": round(row["speedup"] / ratio, 3),
                "amdahl_bound": round(bound, 2), "share_of_amdahl_bound": round(row["speedup"] / bound, 3)})
    if conv_ratio is not None and "fp32_conv_time_share" in row:
        conv = row["fp32_conv_time_share"]
        matmul = share - conv
        kernel_bound = 1.0 / ((1.0 - share) + conv / conv_ratio + matmul / ratio)
        row.update({"conv_probe_ratio": round(conv_ratio, 2), "kernel_bound": round(kernel_bound, 2),
                    "share_of_kernel_bound": round(row["speedup"] / kernel_bound, 3)})


def measure_directory(artifacts: Path, quantized: Path, runs: int) -> list[dict]:
    fp32 = {e["component"]: e for e in read_manifest(artifacts)["artifacts"]
            if e["format"] == "onnx" and e["precision"] == "fp32"}
    rows = []
    for entry in read_manifest(quantized)["artifacts"]:
        source = fp32[entry["component"]]
        print(f"timing {entry['file']} against {source['file']}", flush=True)
        feeds, _ = load_reference(artifacts, source)
        check = paired_speed(artifacts, source, quantized, entry, feeds, runs)
        fp32_ms, int8_ms = check.source_p50_ms, check.p50_ms
        conv_share, matmul_share = gemm_shares(artifacts / source["file"], runs=1)
        kernels = entry.get("kernels") or {}
        rows.append({
            "artifact": entry["file"], "component": entry["component"], "fp32_p50_ms": round(fp32_ms, 1),
            "int8_p50_ms": round(int8_ms, 1), "speedup": round(fp32_ms / int8_ms, 2),
            "fp32_gemm_time_share": round(conv_share + matmul_share, 3),
            "fp32_conv_time_share": round(conv_share, 3),
            "kernels": {c: f"{kernels['quantized'].get(c, 0)}/{n}" for c, n in kernels.get("total", {}).items()},
            "qdq_left": kernels.get("qdq_left")})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def micro_quality(out: Path, recipe: str, prompts: int, seeds: int) -> dict:
    """Trained micro weights: int8 pipeline image PSNR vs fp32 torch, and the fidelity gate."""
    from md_export.calibration.builders import CalibrationSettings, build_calibration
    from md_export.export import export_preset
    from md_export.pipeline_parity import check_pipelines
    from md_export.quality import (QUALITY_MARGIN, GateResult, SamplingSettings, artifact_generate, measure,
                                   quality_prompts, torch_generate)
    from md_export.models import get_preset

    preset = get_preset("mobilediffusion-micro")
    if not (out / "fp" / "manifest.json").exists():
        export_preset(preset, ["text_encoder", "unet", "vae_decoder"], ["onnx"], ["fp32"], out / "fp")
    if not (out / "calib" / "calibration.json").exists():
        captions = out / "train_captions.txt"
        captions.write_text("\n".join(quality_prompts("train", 48)) + "\n")
        build_calibration(preset, out / "calib", CalibrationSettings(num_prompts=48, steps=preset.default_steps,
                                                                     prompts_file=str(captions)))
    target = _quantized(out / "fp", out / recipe, recipe, out / "calib")
    pipelines = check_pipelines(target, prompts=8, steps=preset.default_steps)
    images = pipelines[0].as_dict()
    held_out = quality_prompts("held-out", prompts)
    seed_list = list(range(seeds))
    sampling = SamplingSettings()
    generate, source, _, checkpoint = artifact_generate(target, "onnx", None, sampling)
    artifacts = measure(generate, held_out, seed_list, source)
    reference_generate, reference_source = torch_generate(preset, checkpoint, sampling)
    gate = GateResult(artifacts, measure(reference_generate, held_out, seed_list, reference_source), QUALITY_MARGIN)
    return {"recipe": recipe, "image_psnr_db_min": images["min_image_psnr_db"],
            "image_psnr_db_mean": round(sum(pipelines[0].image_psnr_db) / len(pipelines[0].image_psnr_db), 2),
            "image_gate_passed": pipelines[0].passed,
            "fidelity_int8": round(artifacts.fidelity, 4), "fidelity_fp32_torch": round(gate.reference.fidelity, 4),
            "fidelity_gate_passed": gate.passed, "fidelity_margin": QUALITY_MARGIN, "pictures": artifacts.n}


def markdown(result: dict) -> str:
    lines = [f"Machine peak: {describe_peak(result['peak_before'])}.", "",
             "| network | fp32 p50 ms | int8 p50 ms | speedup | probe ratio | share of probe | fp32 GEMM share "
             "| Amdahl bound | share of bound | fp32 conv share | kernel bound | share of kernel bound "
             "| kernels quantized | Q/DQ left |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for row in result["rows"]:
        kernels = ", ".join(f"{c} {v}" for c, v in row["kernels"].items())
        lines.append(f"| {row['artifact']} | {row['fp32_p50_ms']} | {row['int8_p50_ms']} | {row['speedup']}x | "
                     f"{row['probe_ratio']} | {row['share_of_probe_ratio']:.0%} | {row['fp32_gemm_time_share']:.0%} | "
                     f"{row['amdahl_bound']}x | {row['share_of_amdahl_bound']:.0%} | "
                     f"{row['fp32_conv_time_share']:.0%} | {row['kernel_bound']}x | {row['share_of_kernel_bound']:.0%} | "
                     f"{kernels} | {row['qdq_left']} |")
    micro = result.get("micro")
    if micro:
        lines += ["", f"Trained mobilediffusion-micro, {micro['recipe']}: final image PSNR vs fp32 torch "
                      f"{micro['image_psnr_db_mean']} dB mean / {micro['image_psnr_db_min']} dB min "
                      f"(gate {'passed' if micro['image_gate_passed'] else 'FAILED'}); fidelity {micro['fidelity_int8']:.1%} "
                      f"vs fp32 torch {micro['fidelity_fp32_torch']:.1%} over {micro['pictures']} pictures "
                      f"(gate {'passed' if micro['fidelity_gate_passed'] else 'FAILED'}, margin {micro['fidelity_margin']:.0%})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True, help="fp32 ONNX export (md-export export)")
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--out", required=True, help="quantized directories go here (reused when present)")
    parser.add_argument("--extra", action="append", default=[], metavar="ARTIFACTS,CALIBRATION",
                        help="another fp32 export and its preset's calibration (e.g. mobilediffusion-taesd's "
                             "decoder); repeatable")
    parser.add_argument("--recipe", default="onnx-static-int8")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--micro-out", default=None, help="also measure int8 quality on the trained micro weights here")
    parser.add_argument("--micro-prompts", type=int, default=20)
    parser.add_argument("--micro-seeds", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    out = Path(args.out)
    print("machine peak ...", flush=True)
    peaks = [measure_machine_peak()]

    def ratio_of(int8: str = "int8_gops", fp32: str = "fp32_gflops") -> float:
        return max(p[int8] for p in peaks) / max(p[fp32] for p in peaks)

    rows = []
    pairs = [(args.artifacts, args.calibration)] + [tuple(extra.split(",", 1)) for extra in args.extra]
    for index, (directory, calibration) in enumerate(pairs):
        target = _quantized(Path(directory), out / f"{index}-{args.recipe}", args.recipe, Path(calibration))
        rows += measure_directory(Path(directory), target, args.runs)
    peaks.append(measure_machine_peak())
    for row in rows:  # the probe read after the networks too: hold every row against the best reads
        hold_against(row, ratio_of(), ratio_of("conv_int8_gops", "conv_fp32_gflops"))
    result = {"peak_before": peaks[0], "peak_after": peaks[1], "rows": rows}
    if args.micro_out:
        result["micro"] = micro_quality(Path(args.micro_out), args.recipe, args.micro_prompts, args.micro_seeds)
    print(markdown(result))
    if args.json:
        write_json_atomic(Path(args.json), result)


if __name__ == "__main__":
    main()
