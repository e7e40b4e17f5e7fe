"""Android over adb: push the .tflite (or .onnx) and the benchmark binary the user points to, run it
on the phone with the chosen threads / delegate, parse its output into the shared schema.

    md-export bench run --artifacts DIR --device adb:SERIAL --binary ./benchmark_model --delegate gpu
    md-export bench run --model m.onnx --device adb:SERIAL --binary ./onnxruntime_perf_test

The tool is told apart by the binary's name (`*perf_test*` is onnxruntime's, anything else LiteRT's
benchmark_model). Every adb failure becomes one clear MdExportError: adb missing, device unreachable,
binary missing, device gone mid-run, the tool failing on the phone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from md_export.errors import MdExportError

from ..parsers import parse_benchmark_model, parse_perf_test
from ..schema import add_item, new_result, tool_versions

REMOTE_DIR = "/data/local/tmp/md_bench"
ADB_TIMEOUT_S = 600
# adb's own words when the device is gone (as opposed to the command on the device failing).
_GONE = re.compile(r"error: (device '.*' not found|device offline|closed|no devices|device unauthorized|"
                   r"protocol fault|device still authorizing)", re.IGNORECASE)
DELEGATE_FLAGS = {"cpu": ["--use_xnnpack=true"], "xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                  "nnapi": ["--use_nnapi=true"]}


class AdbError(MdExportError):
    pass


class Adb:
    def __init__(self, serial: str, executable: str = "adb"):
        self.serial = serial
        self.path = shutil.which(executable)
        if self.path is None:
            raise AdbError("adb not found on PATH: install Android platform-tools (or add adb to PATH)")
        self.reachable = False

    def _run(self, args: list[str], what: str) -> str:
        try:
            done = subprocess.run([self.path, "-s", self.serial, *args], capture_output=True, text=True,
                                  timeout=ADB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AdbError(f"adb {what} on {self.serial} did not finish in {ADB_TIMEOUT_S} s") from None
        if done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
            gone = bool(_GONE.search(done.stderr) or _GONE.search(message))
            if gone and self.reachable:
                raise AdbError(f"device {self.serial} disconnected during {what}: {message}")
            if gone:
                raise AdbError(f"device {self.serial} is not reachable: {message} (check `adb devices`)")
            raise AdbError(f"{what} failed on {self.serial}: {message}")
        return done.stdout

    def ensure_reachable(self) -> None:
        state = self._run(["get-state"], "get-state").strip()
        if state != "device":
            raise AdbError(f"device {self.serial} is {state or 'in an unknown state'}, not ready (check `adb devices`)")
        self.reachable = True

    def getprop(self, name: str) -> str:
        return self._run(["shell", "getprop", name], f"getprop {name}").strip()

    def push(self, local: Path, remote: str) -> None:
        self._run(["push", str(local), remote], f"push {local.name}")

    def shell(self, command: list[str], what: str) -> str:
        return self._run(["shell", " ".join(shlex.quote(c) for c in command)], what)


def _models(args) -> list[tuple[Path, dict | None]]:
    """(local file, manifest entry or None) for the chosen format; each entry carries the manifest's
    preset under `_preset` so the phone's items get FLOPs too."""
    from md_export.export.manifest import ManifestError, read_manifest

    fmt = "onnx" if "perf_test" in Path(args.binary).name else "tflite"
    if args.model:
        path = Path(args.model)
        if not path.is_file():
            raise MdExportError(f"{path} does not exist")
        if path.suffix != f".{fmt}":
            raise MdExportError(f"{Path(args.binary).name} runs .{fmt} models, not {path.name}")
        entry = None
        try:
            manifest = read_manifest(path.parent)
            entry = next((dict(e, _preset=(manifest.get("source") or {}).get("preset"))
                          for e in manifest["artifacts"] if e["file"] == path.name), None)
        except ManifestError:
            pass
        return [(path, entry)]
    if not args.artifacts:
        raise MdExportError("--device adb:SERIAL needs --model FILE or --artifacts DIR")
    try:
        manifest = read_manifest(Path(args.artifacts))
    except ManifestError as exc:
        raise MdExportError(str(exc)) from None
    precisions = [p for p in (args.precision or "").split(",") if p]
    components = [c for c in (args.components or "").split(",") if c]
    preset = (manifest.get("source") or {}).get("preset")
    chosen = [(Path(args.artifacts) / e["file"], dict(e, _preset=preset)) for e in manifest["artifacts"]
              if e["format"] == fmt and (not precisions or e["precision"] in precisions)
              and (not components or e["component"] in components)]
    if not chosen:
        raise MdExportError(f"no .{fmt} artifact in {args.artifacts} matches the filters")
    return chosen


def _tool_command(tool: str, remote_binary: str, remote_model: str, args) -> list[str]:
    if tool == "perf_test":
        if args.delegate not in ("cpu", "xnnpack"):
            raise MdExportError("onnxruntime_perf_test on a phone: only --delegate cpu is wired here")
        return [remote_binary, "-m", "times", "-r", str(args.runs), "-x", str(args.threads), "-I", "-s", remote_model]
    return [remote_binary, f"--graph={remote_model}", f"--num_threads={args.threads}",
            f"--warmup_runs={args.warmup}", f"--num_runs={args.runs}", "--report_peak_memory_footprint=true",
            *DELEGATE_FLAGS[args.delegate]]


def run_on_adb(args) -> dict:
    serial = args.device.split(":", 1)[1] if ":" in args.device else ""
    if not serial:
        raise MdExportError("--device adb:SERIAL needs the serial `adb devices` lists")
    if not args.binary:
        raise MdExportError("--device adb:SERIAL needs --binary PATH: LiteRT's benchmark_model or onnxruntime_perf_test "
                            "built for the phone's ABI")
    binary = Path(args.binary)
    if not binary.is_file():
        raise MdExportError(f"benchmark binary {binary} not found")
    tool = "perf_test" if "perf_test" in binary.name else "benchmark_model"
    models = _models(args)
    adb = Adb(serial)
    adb.ensure_reachable()
    device = {"name": f"adb:{serial}", "kind": "android", "machine": adb.getprop("ro.product.cpu.abi"),
              "cpu": adb.getprop("ro.product.model"), "cores": None}
    os_info = {"system": "Android", "release": adb.getprop("ro.build.version.release"),
               "version": adb.getprop("ro.build.version.sdk")}
    runtime = "onnxruntime" if tool == "perf_test" else "litert"
    versions = tool_versions(("md-export",))
    versions["phone_tool"] = binary.name
    result = new_result({"kind": "artifact" if args.model else "artifacts",
                         "path": os.path.abspath(args.model or args.artifacts)},
                        {"threads": args.threads, "warmup": args.warmup, "runs": args.runs, "delegate": args.delegate,
                         "providers": ["CPUExecutionProvider"] if tool == "perf_test" else None, "tool": tool},
                        device=device, os_info=os_info, versions=versions)
    adb.shell(["mkdir", "-p", REMOTE_DIR], "mkdir")
    remote_binary = f"{REMOTE_DIR}/{binary.name}"
    adb.push(binary, remote_binary)
    adb.shell(["chmod", "755", remote_binary], "chmod")
    from md_export.export.manifest import sha256_of

    from ..targets.host import _job_name, component_gflops

    try:
        for path, entry in models:
            remote_model = f"{REMOTE_DIR}/{path.name}"
            adb.push(path, remote_model)
            output = adb.shell(_tool_command(tool, remote_binary, remote_model, args), f"{binary.name} {path.name}")
            parsed = parse_perf_test(output) if tool == "perf_test" else parse_benchmark_model(output)
            component = entry["component"] if entry else path.stem
            precision = entry["precision"] if entry else "unknown"
            name = (_job_name(component, entry.get("resolution"), runtime, precision, 1) if entry
                    else f"{path.stem}/{runtime}")
            gflops = component_gflops(entry.get("_preset"), component, entry.get("resolution"), 1) if entry else None
            typical = parsed["latency_ms"]["p50"] or parsed["latency_ms"]["mean"]
            achieved = gflops / (typical / 1e3) if gflops and typical else None
            add_item(result, {
                "name": name, "level": "component", "component": component, "runtime": runtime,
                "precision": precision, "threads": args.threads, "init_ms": parsed.get("init_ms"),
                "first_ms": parsed.get("first_ms"), "peak_rss_mb": parsed.get("peak_rss_mb"),
                "runs": parsed.get("runs"), "latency_ms": parsed["latency_ms"],
                "gflops": round(gflops, 4) if gflops else None,
                # The phone's own GEMM peak is not measured: no fraction of peak for phone items.
                "achieved_gflops_per_s": round(achieved, 2) if achieved else None, "fraction_of_peak": None,
                "interrupted": False,
                "format": path.suffix.lstrip("."), "file": path.name,
                "sha256": entry.get("sha256") if entry else sha256_of(path),
                "delegate": args.delegate, "tool_output": parsed,
            })
    except KeyboardInterrupt:
        result["interrupted"] = True
    return result
