"""`md-export quantize`: one recipe over every matching artifact of an export directory.

  1. pick the recipe's source artifacts (fp32 ONNX / fp32 LiteRT / fp16-or-fp32 Core ML)
  2. load calibration feeds per component (checked against each artifact's input shapes)
  3. quantize (ONNX static: optional --target-psnr fallback with per-block sensitivity; Core ML W8A8:
     the PyTorch module rebuilt from the manifest's source, calibrated in torch, converted again)
  4. references: the export's seeded PyTorch references, plus real calibration inputs with the
     fp32 artifact's outputs (itself within the fp32 gate of PyTorch)
  5. what the runtime really runs: quantized kernels vs float ops in the runtime's optimized graph
     (kernels.py), and the artifact's latency against its float source, timed in alternation
     (speed.py): a quantized artifact slower than its source is reported as such
  6. manifest entries with the recipe's tolerances; staged, then moved into --out
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from md_export.calibration.builders import CalibrationError, calibration_feeds, read_calibration_manifest

from ..errors import BadArgumentError, MdExportError
from ..export.manifest import (MANIFEST, check_output_dir, make_output_dir, merge_entries, read_manifest,
                               remove_created_dir, replace_path, sha256_of, size_of, tool_versions,
                               write_json_atomic)
from ..parity import ParityFailure, check_artifact, load_reference
from ..runtimes import open_artifact
from . import conv_route, coreml_recipes, coreml_w8a8, onnx_recipes, tflite_recipes
from .kernels import kernel_report
from .recipes import Recipe, get_recipe
from .sensitivity import static_with_fallback
from .speed import SPEED_RUNS, paired_speed

Progress = Callable[[str], None]


class QuantizeError(MdExportError):
    """A recipe's backend failed on an artifact."""


class QuantizeGateFailure(ParityFailure):
    """A quantized artifact missed its recipe's tolerance (the artifacts are written, and say so)."""

REAL_REFERENCE_SAMPLES = 4
FP16_SCAN_SAMPLES = 8  # real inputs the fp16 overflow scan runs on


def _sources(manifest: dict, recipe: Recipe) -> list[dict]:
    entries = [e for e in manifest["artifacts"] if e["format"] == recipe.format]
    preferred = ("fp16", "fp32") if recipe.format == "coreml" else ("fp32",)
    for precision in preferred:
        chosen = [e for e in entries if e["precision"] == precision]
        if chosen:
            return chosen
    raise BadArgumentError(f"{recipe.name} needs {' or '.join(preferred)} {recipe.format} artifacts; "
                           f"the directory has none (export with --formats {recipe.format})")


def _feeds(calibration: Path | None, entry: dict, limit: int | None = None) -> list[dict]:
    shapes = {i["name"]: i["shape"] for i in entry["inputs"]}
    return calibration_feeds(calibration, entry["component"], shapes, limit)


def quantize_directory(artifacts: str | Path, recipe_name: str, out: str | Path, calibration: str | Path | None = None,
                       target_psnr: float | None = None, progress: Progress | None = None,
                       speed_runs: int = SPEED_RUNS, gate: bool = True,
                       no_gate_reason: str = "--no-gate", activation_ranges: str = "auto") -> list[dict]:
    """`speed_runs`: alternating timed calls of each artifact against its float source (0: skip
    the speed check; the manifest then says it was skipped). `gate`: check every new artifact
    against its recipe's tolerance and raise QuantizeGateFailure on a miss, after writing (the
    manifest records each verdict); without it the manifest records `no_gate_reason`.
    `activation_ranges`: auto or one of onnx_recipes.RANGE_METHODS (the static ONNX recipes)."""
    recipe = get_recipe(recipe_name)
    if activation_ranges != "auto" and activation_ranges not in onnx_recipes.RANGE_METHODS:
        raise BadArgumentError(f"--activation-ranges must be auto or one of {', '.join(onnx_recipes.RANGE_METHODS)}, "
                               f"got {activation_ranges!r}")
    if speed_runs < 0:
        raise BadArgumentError(f"--speed-runs must be >= 0, got {speed_runs}")
    progress = progress or (lambda message: None)
    artifacts, out = Path(artifacts), Path(out)
    calibration = Path(calibration) if calibration else None
    if recipe.calibration and calibration is None:
        raise BadArgumentError(f"{recipe.name} calibrates activations: pass --calibration DIR (md-export calibrate)")
    if target_psnr is not None and not recipe.fallback:
        raise BadArgumentError(f"--target-psnr works with {', '.join(r for r in _fallback_recipes())}, not {recipe.name}")
    if target_psnr is not None and calibration is None:
        raise BadArgumentError("--target-psnr measures the error on calibration inputs: pass --calibration DIR")
    if out.resolve() == artifacts.resolve():
        raise BadArgumentError("--out must differ from --artifacts (quantized artifacts get their own manifest)")
    check_output_dir(out)
    manifest = read_manifest(artifacts)
    sources = _sources(manifest, recipe)
    if calibration is not None:
        _check_calibration_preset(calibration, manifest, artifacts)
    created = make_output_dir(out)  # removed again if this call fails: a failed call leaves no empty --out
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        entries = []
        for file in dict.fromkeys(e["file"] for e in sources):  # LiteRT: one file, several signatures
            group = [e for e in sources if e["file"] == file]
            entries += _quantize_file(recipe, artifacts, group, staging, calibration, target_psnr, progress,
                                      activation_ranges)
            _inspect(entries[-len(group):], artifacts, group[0], staging, speed_runs, progress)
        references = sorted({r for e in entries for r in (e["reference"], e.get("real_reference")) if r})
        for reference in references:  # beside the staged artifacts, so the gate runs on them there
            if not (staging / reference).exists():
                (staging / reference).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(artifacts / reference, staging / reference)
        missed = _gate(staging, entries, gate, no_gate_reason, progress)
        progress("writing manifest")
        for file in sorted({e["file"] for e in entries}):
            replace_path(staging / file, out / file)
        for reference in references:
            (out / reference).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(staging / reference, out / reference)
        source = dict(manifest.get("source", {}))
        source["quantization"] = {"recipe": recipe.name, "from": str(artifacts.resolve()),
                                  "calibration": str(calibration.resolve()) if calibration else None,
                                  "target_psnr_db": target_psnr}
        previous = read_manifest(out)["artifacts"] if (out / MANIFEST).exists() else []
        write_json_atomic(out / MANIFEST, {
            "md_export_version": tool_versions()["md-export"],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": source, "tools": tool_versions(), "artifacts": merge_entries(previous, entries)})
    except CalibrationError as exc:
        remove_created_dir(created)
        raise BadArgumentError(str(exc)) from None
    except BaseException:
        remove_created_dir(created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if missed:
        raise QuantizeGateFailure(f"{recipe.name} missed its gate: {'; '.join(missed)}; the artifacts were written to "
                                  f"{out} (manifest 'gate'), inspect or delete them; --no-gate keeps going")
    return entries


def _gate(staging: Path, entries: list[dict], gate: bool, no_gate_reason: str, progress: Progress) -> list[str]:
    """The recipe's tolerances on every new artifact (seeded and real references); returns the misses.
    A Core ML package off macOS is validated, not run: the verdict says so. Core ML W8A8's own
    fake-quant torch parity counts too."""
    missed = []
    for entry in entries:
        if not gate:
            entry["gate"] = {"checked": False, "reason": no_gate_reason}
            continue
        progress(f"gate: {entry['file']}" + (f" [{entry['signature']}]" if entry.get("signature") else ""))
        result = check_artifact(staging, entry)
        violations = list(result.violations) + list(entry.get("torch_parity", {}).get("violations", []))
        if result.status == "error" and not violations:
            violations = [result.note or "could not be run"]
        entry["gate"] = {"checked": result.status != "validated", "status": result.status,
                         "passed": not violations, "violations": violations}
        if result.status == "validated":
            entry["gate"]["reason"] = result.note or "validated, not run, on this OS"
        if violations:
            missed.append(f"{entry['file']}" + (f" [{entry['signature']}]" if entry.get("signature") else "")
                          + f": {', '.join(violations)}")
    return missed


def _check_calibration_preset(calibration: Path, manifest: dict, artifacts: Path) -> None:
    """Inputs recorded on another preset's networks calibrate the wrong ranges, and may even have
    the right shapes: refuse them before any work."""
    recorded = read_calibration_manifest(calibration).get("preset")  # also refuses an unknown format_version
    source = manifest.get("source", {})
    if source.get("kind") != "preset":
        return  # a module's export has no preset to compare; its feeds are checked by shape
    if recorded != source.get("preset"):
        raise BadArgumentError(f"calibration {calibration} was recorded with preset {recorded}, but the artifacts in "
                               f"{artifacts} were exported from preset {source.get('preset')}: calibrate with "
                               f"--preset {source.get('preset')}")


def _inspect(entries: list[dict], artifacts: Path, source: dict, staging: Path, speed_runs: int,
             progress: Progress) -> None:
    """Kernel counts and the speed check, recorded on every entry of one file."""
    first = entries[0]
    report = kernel_report(staging / first["file"], first["format"])
    if report is not None:
        progress(f"{first['component']}: {report.summary()}")
    if first["format"] == "coreml":
        speed = {"skipped": "Core ML packages run on macOS only: time them with md-export bench run --device mac"}
    elif speed_runs == 0:
        speed = {"skipped": "--speed-runs 0"}
    else:
        progress(f"{first['component']}: timing against {source['file']}")
        feeds, _ = load_reference(artifacts, source)
        check = paired_speed(artifacts, source, staging, first, feeds, speed_runs)
        progress(f"{first['component']}: {check.describe()}")
        speed = check.as_dict()
    for entry in entries:
        entry["kernels"] = report.as_dict() if report is not None else None
        entry["speed_vs_source"] = speed


def _fallback_recipes() -> list[str]:
    from .recipes import RECIPES

    return [name for name, r in RECIPES.items() if r.fallback]


def _quantize_file(recipe: Recipe, artifacts: Path, group: list[dict], staging: Path, calibration: Path | None,
                   target_psnr: float | None, progress: Progress, activation_ranges: str = "auto") -> list[dict]:
    first = group[0]
    source_path = artifacts / first["file"]
    stem = first["file"].split(".")[0]
    suffix = Path(first["file"]).suffix
    file = f"{stem}.{recipe.label}{suffix}"
    progress(f"{recipe.name}: {first['file']}")
    start = time.perf_counter()
    model_outputs: dict[int, dict | None] = {}  # the fp32 outputs a calibration pass computed, by feed index
    try:
        extra = _apply(recipe, first, group, source_path, staging / file, calibration, target_psnr, progress,
                       model_outputs, activation_ranges)
    except (BadArgumentError, CalibrationError):
        raise
    except Exception as exc:  # converters raise anything; name the recipe, the file and the reason
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise QuantizeError(f"{recipe.name} failed on {first['file']}: {reason}") from exc
    seconds = time.perf_counter() - start
    if not _changed_anything(recipe.format, staging / file):
        # a recipe whose policy matched no op writes the float model back: say so, do not ship it
        raise QuantizeError(f"{recipe.name} quantized nothing in {first['file']} (size unchanged): "
                            "no op of this model is supported by the recipe")
    return _finish(recipe, group, file, staging, seconds, extra, artifacts, calibration, model_outputs)


def _apply(recipe: Recipe, first: dict, group: list[dict], source_path: Path, target: Path, calibration: Path | None,
           target_psnr: float | None, progress: Progress, model_outputs: dict,
           activation_ranges: str = "auto") -> dict | None:
    """Run the recipe's backend; returns extra manifest fields (the fallback report of --target-psnr,
    the fp16 overflow scan, the W8A8 torch parity)."""
    if recipe.format == "onnx":
        weights = onnx_recipes.reduced_weight_range() if recipe.kind in INTEGER_ONNX_KINDS else None
        # before the quantization, so a bad MD_EXPORT_INT8_CONV_ROUTE stops the recipe at once
        route = conv_route.choose_route() if recipe.kind in CONV_ROUTED_KINDS else None
        extra = _apply_onnx(recipe, first, source_path, target, calibration, target_psnr, progress, model_outputs,
                            activation_ranges)
        if route is not None:
            counts = conv_route.route_convs_through_gemm(target) if route["route"] == "gemm" else {}
            extra = (extra or {}) | {"int8_convs": route | counts}
        return (extra or {}) | ({"int8_weights": weights} if weights else {})
    if recipe.format == "tflite":
        signature_feeds = None
        if recipe.calibration:
            signature_feeds = {}
            for entry in group:
                names = entry["runtime_names"]
                signature_feeds[entry["signature"]] = [
                    {names[k]: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in feed.items()}
                    for feed in _feeds(calibration, entry)]
        tflite_recipes.quantize(recipe.kind, source_path, target, signature_feeds)
    elif recipe.kind == "w8a8":  # calibrated on the PyTorch module the export came from
        source = read_manifest(source_path.parent).get("source", {})
        coreml_w8a8.require_preset_source(source)
        tolerance = recipe.tolerances.lookup(first["component"], recipe.label)
        feeds = _feeds(calibration, first)
        return coreml_w8a8.quantize(first, source, source_path.parent, target, feeds, tolerance, progress)
    else:
        coreml_recipes.compress(recipe.kind, source_path, target)
    return None


# The uint8-activation static recipe: its QLinearConvs run on onnxruntime's CPU kernels, whose
# faster route for a conv depends on the host (conv_route.py). The symmetric-activation recipe is
# an NPU layout and keeps zero-point-0 weights.
CONV_ROUTED_KINDS = ("static_int8",)

# ONNX recipe kinds whose int8 weights meet 8-bit activations in onnxruntime's integer kernels
INTEGER_ONNX_KINDS = ("dynamic_int8", "static_int8", "static_int8_symmetric")


def _apply_onnx(recipe: Recipe, first: dict, source_path: Path, target: Path, calibration: Path | None,
                target_psnr: float | None, progress: Progress, model_outputs: dict,
                activation_ranges: str = "auto") -> dict | None:
    ranges = onnx_recipes.range_method(first.get("component"), recipe.kind, activation_ranges)
    # The manifest says how a calibrated artifact's activation ranges were set.
    calibrated = ({"activation_ranges": {"method": ranges, "percentile": onnx_recipes.PERCENTILE}
                   if ranges == "percentile" else {"method": ranges}} if recipe.kind in CALIBRATION_PASS_KINDS else {})
    if recipe.calibration:
        feeds = _feeds(calibration, first)
    elif recipe.kind == "fp16" and calibration is not None:
        feeds = _feeds(calibration, first, limit=FP16_SCAN_SAMPLES)
    else:
        feeds = None
    if target_psnr is not None:
        result = static_with_fallback(source_path, target, feeds, feeds[:: max(1, len(feeds) // 8)],
                                      target_psnr, recipe.kind,
                                      progress=lambda m: progress(f"{first['component']}: {m}"), ranges=ranges)
        return {"fallback": dataclasses.asdict(result)} | calibrated
    if recipe.kind == "fp16":
        # the overflow scan runs on real inputs when given, else on the export's reference inputs
        scan = onnx_recipes.fp16(source_path, target, feeds or [load_reference(source_path.parent, first)[0]])
        return {"fp16_overflow": scan.as_dict()}
    if recipe.kind in CALIBRATION_PASS_KINDS:
        # the calibration pass runs the fp32 model on every feed: it keeps the real reference's outputs
        model_outputs.update({i: None for i in _real_reference_picks(len(feeds))})
        getattr(onnx_recipes, recipe.kind)(source_path, target, feeds, model_outputs=model_outputs, ranges=ranges)
        return calibrated
    else:
        getattr(onnx_recipes, recipe.kind)(source_path, target, feeds)
    return None


CALIBRATION_PASS_KINDS = ("static_int8", "static_int8_symmetric", "w8a16")


_QUANTIZED_ONNX_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                       "ConvInteger", "QLinearConv", "QLinearMatMul"}


def _changed_anything(fmt: str, path: Path) -> bool:
    """Did the recipe quantize at least one tensor? (A policy that matches no op copies the model.)"""
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return (any(n.op_type in _QUANTIZED_ONNX_OPS for n in model.graph.node)
                or any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer))
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_tensor_details()
        return any(len(d["quantization_parameters"]["scales"]) or d["dtype"] == np.float16 for d in details)
    return True  # coremltools raises when nothing can be compressed


def _finish(recipe: Recipe, group: list[dict], file: str, staging: Path, seconds: float, extra: dict | None,
            artifacts: Path, calibration: Path | None, model_outputs: dict | None = None) -> list[dict]:
    results = []
    for entry in group:
        new = dict(entry)
        new.update({"file": file, "precision": recipe.label, "recipe": recipe.name, "quantized_from": entry["file"],
                    "quantize_seconds": round(seconds, 2), "size_bytes": size_of(staging / file),
                    "sha256": sha256_of(staging / file),
                    "tolerance": recipe.tolerances.lookup(entry["component"], recipe.label).as_dict()})
        new.update(extra or {})
        if calibration is not None and recipe.format != "coreml":
            new["real_reference"], new["real_reference_from"] = _real_reference(artifacts, entry, calibration,
                                                                                 staging, model_outputs)
        results.append(new)
    return results


def _real_reference_picks(count: int) -> list[int]:
    return [int(i) for i in np.linspace(0, count - 1, min(REAL_REFERENCE_SAMPLES, count)).round().astype(int)]


def _real_reference(artifacts: Path, entry: dict, calibration: Path, staging: Path,
                    model_outputs: dict | None = None) -> tuple[str, str]:
    """A few real calibration inputs with the fp32 model's outputs on them: the ones its
    calibration pass kept (onnxruntime over the same fp32 graph with graph optimisations off, the
    same inputs: the artifact's own outputs to float rounding), else the fp32 artifact run again.
    Returns the file and where its outputs came from."""
    feeds = _feeds(calibration, entry)
    picks = _real_reference_picks(len(feeds))
    names = [output["name"] for output in entry["outputs"]]
    kept = model_outputs or {}
    if all(kept.get(i) is not None and set(names) <= set(kept[i]) for i in picks):
        outputs = {name: [kept[i][name] for i in picks] for name in names}
        source = "the fp32 graph in its calibration pass (onnxruntime, graph optimizations off)"
    else:
        runner = open_artifact(artifacts, entry)
        results = [runner.run(feeds[i]) for i in picks]
        outputs = {name: [result[name] for result in results] for name in names}
        source = "the fp32 artifact"
    arrays = {}
    for name in entry["inputs"]:
        arrays[f"input:{name['name']}"] = np.concatenate([feeds[i][name["name"]] for i in picks])
    for name in names:
        arrays[f"output:{name}"] = np.concatenate(outputs[name])
    tag = Path(entry["reference"]).stem
    relative = f"reference/{tag}.real.npz"
    (staging / "reference").mkdir(exist_ok=True)
    np.savez(staging / relative, **arrays)
    return relative, source


def quantize_summary(entry: dict) -> str:
    """One line: the kernels the runtime runs and the speed against the float source."""
    parts = []
    if entry.get("kernels"):
        from .kernels import KernelReport

        parts.append(KernelReport(**entry["kernels"]).summary())
    convs = entry.get("int8_convs") or {}
    if convs.get("routed"):  # said only where a conv moved: the symmetric kernel is onnxruntime's default
        parts.append(f"convs: {convs['routed']} through the int8 GEMM, {convs['kept']} on the symmetric kernel "
                     f"({convs['reason']})")
    speed = entry.get("speed_vs_source") or {}
    if "speedup" in speed:
        verdict = "SLOWER than its float source" if speed["slower"] else "vs its float source"
        parts.append(f"{speed['speedup']:.2f}x {verdict} ({speed['p50_ms']:.1f} vs {speed['source_p50_ms']:.1f} ms)")
    elif speed.get("skipped"):
        parts.append(f"speed not checked: {speed['skipped']}")
    return "; ".join(parts)
