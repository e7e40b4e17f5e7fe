"""Cross-check: the harness's median on one .tflite against ai-edge-litert's own `litert-benchmark`
CLI, same threads / warm-up / runs. Agreement within the tolerance (15% by default) says the harness
measures the model and not itself; exit 1 when they disagree.

The two do not run the same code path (the harness uses the Interpreter with XNNPACK, the CLI the
CompiledModel API) and the harness feeds the exporter's reference inputs: a small gap is expected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from md_export.errors import MdExportError

from .harness import make_item, time_runner
from .parsers import parse_litert_benchmark_json
from .progress import BenchProgress
from .schema import add_item, new_result
from .targets.host import HostSettings, artifact_file_jobs

TOOL = "litert-benchmark"


def litert_benchmark(model: Path, threads: int, warmup: int, runs: int, signature: str | None = None) -> dict:
    tool = shutil.which(TOOL) or (str(Path(sys.executable).parent / TOOL)
                                  if (Path(sys.executable).parent / TOOL).exists() else None)
    if tool is None:
        raise MdExportError(f"{TOOL} not found: it ships with ai-edge-litert (pip install ai-edge-litert)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [tool, "--model", str(model), "--num_runs", str(runs), "--warmup_runs", str(warmup),
                   "--num_threads", str(threads), "--result_json", str(out)]
        if signature:
            command += ["--signature", signature]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise MdExportError(f"{TOOL} failed on {model.name}: {' | '.join(tail)}")
        return parse_litert_benchmark_json(json.loads(out.read_text()))


def crosscheck(model: Path, threads: int, warmup: int, runs: int, tolerance: float, progress: BenchProgress) -> dict:
    if model.suffix != ".tflite":
        raise MdExportError(f"the cross-check runs a .tflite, not {model.name}")
    settings = HostSettings(threads=threads)
    jobs, _ = artifact_file_jobs(model, settings)
    job = jobs[0]
    result = new_result({"kind": "artifact", "path": str(model.resolve())},
                        {"threads": threads, "warmup": warmup, "runs": runs, "delegate": "xnnpack (CPU)",
                         "tolerance": tolerance})
    with progress.item(f"harness {job.name}", warmup + runs) as tick:
        timing = time_runner(job.load, job.feeds, warmup, runs, 0.0, tick)
    item = make_item(name=job.name, level="component", component=job.component, runtime="litert",
                     precision=job.precision, threads=threads, timing=timing, gflops=job.gflops,
                     resolution=job.resolution, batch=job.batch, **job.extra)
    add_item(result, item)
    signature = None
    from md_export.export.manifest import MANIFEST

    if (model.parent / MANIFEST).is_file():
        entry = next((e for e in json.loads((model.parent / MANIFEST).read_text())["artifacts"]
                      if e["file"] == model.name), None)
        signature = entry.get("signature") if entry else None
    with progress.item(f"{TOOL} {model.name}", None):
        tool = litert_benchmark(model, threads, warmup, runs, signature)
    ratio = item["latency_ms"]["p50"] / tool["latency_ms"]["p50"]
    result["crosscheck"] = {
        "tool": TOOL, "tool_result": tool, "harness_p50_ms": item["latency_ms"]["p50"],
        "tool_median_ms": tool["latency_ms"]["p50"], "ratio": round(ratio, 4), "tolerance": tolerance,
        "agrees": abs(ratio - 1.0) <= tolerance,
    }
    return result


def run_crosscheck(args) -> int:
    from .cli import _check_outputs, _write_outputs

    _check_outputs(args)

    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise MdExportError("--runs and --threads must be >= 1, --warmup >= 0")
    model = Path(args.model)
    if not model.is_file():
        raise MdExportError(f"{model} does not exist")
    with BenchProgress(enabled=not args.no_progress) as progress:
        result = crosscheck(model, args.threads, args.warmup, args.runs, args.tolerance, progress)
    _write_outputs(args, result)
    check = result["crosscheck"]
    print(f"harness median {check['harness_p50_ms']:.3f} ms, {TOOL} median {check['tool_median_ms']:.3f} ms: "
          f"ratio {check['ratio']:.3f} -> {'agree' if check['agrees'] else 'DISAGREE'} within {check['tolerance']:.0%}")
    return 0 if check["agrees"] else 1
