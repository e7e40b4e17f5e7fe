"""Export the full `mobilediffusion` preset to every format and precision, then check parity.

    python -m md_export.benchmarks.export_full --out out/mobilediffusion --json out/export_full.json

Prints one row per artifact: export seconds, size, and parity (max abs error, PSNR, status).
Not a test: full-size conversions take minutes and gigabytes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from md_export.export import export_preset
from md_export.parity import check_directory
from md_export.models import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilediffusion")
    parser.add_argument("--components", default="text_encoder,unet,vae_decoder")
    parser.add_argument("--formats", default="onnx,coreml,tflite")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--out", default="out/export_full")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args()

    start = time.perf_counter()
    entries = export_preset(get_preset(args.preset), args.components.split(","), args.formats.split(","),
                            args.precisions.split(","), args.out,
                            [args.resolution] if args.resolution else None,
                            progress=lambda m: print(f"[{time.perf_counter() - start:7.1f}s] {m}", flush=True))
    export_seconds = time.perf_counter() - start
    report = check_directory(args.out)
    parity = {(a.file, a.signature): a for a in report.artifacts}
    rows = []
    for entry in entries:
        result = parity[(entry["file"], entry.get("signature"))]
        metrics = next(iter(result.outputs.values()), {})
        rows.append({
            "artifact": entry["file"] + (f" [{entry['signature']}]" if entry.get("signature") else ""),
            "component": entry["component"], "format": entry["format"], "precision": entry["precision"],
            "export_s": entry["export_seconds"], "size_mb": round(entry["size_bytes"] / 1e6, 1),
            "max_abs": metrics.get("max_abs"), "psnr_db": metrics.get("psnr_db"), "cosine": metrics.get("cosine"),
            "status": result.status,
        })
    print(f"\n{args.preset}: {len(entries)} artifacts in {export_seconds:.0f} s; parity "
          f"{'PASSED' if report.passed else 'FAILED'}\n")
    print("| artifact | format | precision | export s | size MB | max abs | PSNR dB | status |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        max_abs = f"{row['max_abs']:.3g}" if row["max_abs"] is not None else "-"
        psnr = f"{row['psnr_db']:.1f}" if row["psnr_db"] is not None else "-"
        print(f"| {row['artifact']} | {row['format']} | {row['precision']} | {row['export_s']:.1f} | "
              f"{row['size_mb']:.1f} | {max_abs} | {psnr} | {row['status']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"preset": args.preset, "export_seconds": export_seconds,
                                               "passed": report.passed, "artifacts": rows}, indent=2))


if __name__ == "__main__":
    main()
