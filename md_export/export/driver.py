"""Export driver: networks x formats x precisions -> artifacts + references + manifest, atomically.

Steps (each reported to `progress`):
  1. run every target through PyTorch on its seeded sample inputs -> reference/<tag>.npz
  2. convert each (format, precision): one file per target for ONNX / Core ML, one multi-signature
     file per network for LiteRT
  3. hash, size and describe each artifact; move everything into the output directory; merge and
     write manifest.json last. Everything is built in a staging directory first, so a failure
     leaves the output directory as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import json
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from . import coreml as coreml_backend
from . import onnx as onnx_backend
from . import tflite as tflite_backend
from .manifest import (MANIFEST, check_output_dir, make_output_dir, merge_entries, read_manifest, remove_created_dir,
                       replace_path, sha256_of, size_of, tool_versions, write_json_atomic)
from .types import EXTENSIONS, FORMATS, PRECISIONS, ExportError, ExportTarget

Progress = Callable[[str], None]
BACKENDS = {"onnx": onnx_backend, "coreml": coreml_backend, "tflite": tflite_backend}
MULTI_RESOLUTION = {"onnx": "separate files", "coreml": "separate packages", "tflite": "signatures in one file"}


def planned_steps(targets: list[ExportTarget], formats: list[str], precisions: list[str]) -> int:
    """How many progress messages `export_targets` will send (for a progress bar's total)."""
    components = {t.component for t in targets}
    fp16 = "fp16" in precisions
    steps = len(targets) + 1  # references + manifest
    for fmt in formats:
        if fmt == "onnx":
            steps += len(targets) * (1 + fp16)
        elif fmt == "coreml":
            steps += len(targets) * (1 + len(precisions))
        else:
            steps += len(components) * (1 + fp16)
    return steps


def tolerance_for(fmt: str, component: str, precision: str):
    return BACKENDS[fmt].TOLERANCES.lookup(component, precision)


def _dtype_name(array) -> str:
    return str(array.dtype).removeprefix("torch.")


def _io(tensors: dict) -> list[dict]:
    return [{"name": name, "shape": list(t.shape), "dtype": _dtype_name(t)} for name, t in tensors.items()]


def write_reference(target: ExportTarget, directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Run the PyTorch module once on the sample inputs; keep inputs and outputs for parity."""
    with torch.inference_mode():
        out = target.module(*target.args())
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) != len(target.output_names):
        raise ExportError(f"{target.tag}: module returned {len(outs)} outputs, {len(target.output_names)} names given")
    outputs = {name: t.detach().float().numpy() for name, t in zip(target.output_names, outs)}
    arrays = {f"input:{k}": v.numpy() for k, v in target.sample_inputs.items()}
    arrays.update({f"output:{k}": v for k, v in outputs.items()})
    path = directory / "reference" / f"{target.tag}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path, outputs


def export_targets(targets: list[ExportTarget], formats: Iterable[str], precisions: Iterable[str], out_dir: str | Path,
                   source: dict | None = None, dynamic_batch: bool = False,
                   progress: Progress | None = None, release_modules: bool = False) -> list[dict]:
    """`release_modules`: the modules are this export's own (export_preset built them), so the
    networks are converted one at a time (every format of one before the next), each network's
    weights are freed once its last format is converted, and a LiteRT conversion that is the last
    frees them before the converter writes its flatbuffer. On the 512 `mobilediffusion` UNet that
    write held the torch weights, the converted MLIR module and the flatbuffer at once: 7.7 GB in
    a process converting only the UNet, 6.2 GB with the weights freed first."""
    formats, precisions = list(formats), list(precisions)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ExportError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    progress = progress or (lambda message: None)
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    created = make_output_dir(out_dir)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    try:
        references, reference_files = {}, {}
        for target in targets:
            progress(f"reference {target.tag} (torch)")
            target.module.eval()
            path, outputs = write_reference(target, staging)
            references[target.tag], reference_files[target.tag] = outputs, path

        by_component: OrderedDict[str, list[ExportTarget]] = OrderedDict()
        for target in targets:
            by_component.setdefault(target.component, []).append(target)

        entries = []
        trim_memory()  # the reference forward passes' activations
        # Networks the export owns go one at a time, every format of one before the next, so the
        # text encoder's weights are gone before the UNet's exporters run.
        order = ([(fmt, c) for c in by_component for fmt in formats] if release_modules
                 else [(fmt, c) for fmt in formats for c in by_component])
        for fmt, component in order:
            group = by_component[component]
            last = release_modules and fmt == formats[-1]
            entries += _convert_group(fmt, precisions, component, group, staging, references,
                                      dynamic_batch, progress, release=last)
            if last:
                release_weights(target.module for target in group)
            else:
                trim_memory()

        progress("writing manifest")
        for file in sorted({e["file"] for e in entries}):
            replace_path(staging / file, out_dir / file)
            sidecar = staging / (file + ".data")
            if sidecar.exists():
                replace_path(sidecar, out_dir / sidecar.name)
        for tag, path in reference_files.items():
            replace_path(path, out_dir / "reference" / path.name)
        source = source or {"kind": "module"}
        previous = read_manifest(out_dir) if (out_dir / MANIFEST).exists() else {"artifacts": []}
        # Artifacts of another source were checked against references this export overwrites.
        same = same_model(previous.get("source"), source)
        kept = previous["artifacts"] if same else []
        if same and "weights" in source:  # the networks of both exports, each with its weights' origin
            source = dict(source, weights={**previous["source"].get("weights", {}), **source["weights"]})
        manifest = {
            "md_export_version": tool_versions()["md-export"],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "tools": tool_versions(),
            "artifacts": merge_entries(kept, entries),
        }
        write_json_atomic(out_dir / MANIFEST, manifest)
        return entries
    except BaseException:
        remove_created_dir(created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def same_model(previous: dict | None, source: dict) -> bool:
    """Is an earlier export's source the model this one exports? The same source, where
    `weights` (component -> where its weights came from) only has to agree on the components both
    exported: a preset's networks may be exported in several calls into one directory (the main
    job converts LiteRT's UNet on its own, after the rest)."""
    if previous is None:
        return False
    def strip(s: dict) -> dict:  # as JSON: a preset's config has tuples, the manifest read back lists
        return json.loads(json.dumps({k: v for k, v in s.items() if k != "weights"}))

    if strip(previous) != strip(source):
        return False
    mine, theirs = source.get("weights", {}), previous.get("weights", {})
    return all(theirs[c] == w for c, w in mine.items() if c in theirs)


def release_weights(modules: Iterable[nn.Module]) -> None:
    """Free the parameters and buffers of modules nobody will run again, and hand the memory back
    to the OS (glibc keeps freed arenas otherwise)."""
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = torch.empty(0, dtype=tensor.dtype)
    trim_memory()


def trim_memory() -> None:
    """Collect, then hand glibc's free heap back to the OS: after a converter or a forward pass
    at 512 the process otherwise keeps gigabytes it no longer uses (no-op off glibc)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _convert_group(fmt: str, precisions: list[str], component: str, group: list[ExportTarget], staging: Path,
                   references: dict, dynamic_batch: bool, progress: Progress, release: bool = False) -> list[dict]:
    """All precisions of one network in one format. fp16 derives from the fp32 artifact (ONNX,
    LiteRT) or from the same torch.export program (Core ML), so nothing is traced twice."""
    multi = MULTI_RESOLUTION[fmt] if len(group) > 1 else None

    def entry(target: ExportTarget, precision: str, file: str, seconds: float, signature: str | None,
              runtime_names: dict) -> dict:
        outputs = references[target.tag]
        path = staging / file
        return {
            "file": file, "component": component, "format": fmt, "precision": precision,
            "resolution": target.resolution, "signature": signature, "multi_resolution": multi,
            "inputs": _io(target.sample_inputs),
            "outputs": [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()],
            "runtime_names": runtime_names, "export_seconds": round(seconds, 2),
            "size_bytes": size_of(path), "sha256": sha256_of(path),
            "reference": f"reference/{target.tag}.npz",
            "tolerance": tolerance_for(fmt, component, precision).as_dict(),
            "dynamic_batch": dynamic_batch and fmt == "onnx",
        }

    def name(stem: str, precision: str) -> str:
        return f"{stem}.{precision}{EXTENSIONS[fmt]}"

    results = []
    if fmt == "tflite":
        fp32_file = name(component, "fp32")
        progress(f"tflite fp32 {component}" + (f" ({len(group)} signatures)" if multi else ""))
        start = time.perf_counter()
        before_write = (lambda: release_weights(target.module for target in group)) if release else None
        signatures = tflite_backend.convert(group, staging / fp32_file, before_write)
        fp32_seconds = time.perf_counter() - start
        for precision in precisions:
            file, seconds = fp32_file, fp32_seconds
            if precision == "fp16":
                progress(f"tflite fp16 {component}")
                start = time.perf_counter()
                file = name(component, "fp16")
                tflite_backend.to_fp16(staging / fp32_file, staging / file)
                seconds += time.perf_counter() - start
            for target in group:
                names = tflite_backend.runtime_names(staging / file, signatures[target.tag], target)
                results.append(entry(target, precision, file, seconds, signatures[target.tag], names))
        if "fp32" not in precisions:
            (staging / fp32_file).unlink()
        return results

    for target in group:
        identity = {n: n for n in list(target.sample_inputs) + list(target.output_names)}
        start = time.perf_counter()
        if fmt == "onnx":
            progress(f"onnx fp32 {target.tag}")
            workdir = staging / f".work-{target.tag}"  # the exporter may spill tensors beside the model
            workdir.mkdir()
            fp32_file = name(target.tag, "fp32")
            onnx_backend.convert(target, workdir / fp32_file, dynamic_batch)
            fp32_seconds = time.perf_counter() - start
            for precision in sorted(precisions, key=lambda p: p == "fp32"):  # derive first, move fp32 last
                start = time.perf_counter()
                file = name(target.tag, precision)
                if precision == "fp16":
                    progress(f"onnx fp16 {target.tag}")
                    # the overflow check scans the export's own seeded inputs; `md-export quantize
                    # --recipe onnx-fp16 --calibration` rescans on real sampler inputs
                    scan_feeds = [{k: v.numpy() for k, v in target.sample_inputs.items()}]
                    overflow = onnx_backend.to_fp16(workdir / fp32_file, staging / file, scan_feeds=scan_feeds)
                else:
                    for produced in (workdir / file, workdir / (file + ".data")):
                        if produced.exists():
                            shutil.move(str(produced), str(staging / produced.name))
                seconds = fp32_seconds + (time.perf_counter() - start if precision == "fp16" else 0.0)
                results.append(entry(target, precision, file, seconds, None, identity))
                if precision == "fp16":
                    results[-1]["fp16_overflow"] = overflow.as_dict()
            shutil.rmtree(workdir)
        else:
            progress(f"coreml trace {target.tag}")
            program = coreml_backend.trace(target)
            trace_seconds = time.perf_counter() - start
            for precision in precisions:
                progress(f"coreml {precision} {target.tag}")
                start = time.perf_counter()
                file = name(target.tag, precision)
                coreml_backend.convert(target, program, staging / file, precision)
                results.append(entry(target, precision, file, trace_seconds + time.perf_counter() - start,
                                     None, identity))
    return results


def export(module: nn.Module, sample_inputs: dict[str, torch.Tensor], formats: Iterable[str] = ("onnx",),
           out_dir: str | Path = "export", precisions: Iterable[str] = ("fp32",), name: str = "model",
           output_names: Iterable[str] | None = None, dynamic_batch: bool = False,
           progress: Progress | None = None) -> list[dict]:
    """Export any nn.Module: `sample_inputs` maps forward()'s argument names to example tensors.

    Returns the manifest entries written to `out_dir/manifest.json`; `md-export parity out_dir`
    then checks every artifact against the outputs this module gave on the same inputs.
    """
    if not isinstance(sample_inputs, dict) or not sample_inputs:
        raise ExportError("sample_inputs must be a non-empty dict of input name -> tensor")
    if output_names is None:
        output_names = getattr(module, "output_names", None)
    if output_names is None:
        with torch.inference_mode():
            out = module.eval()(*sample_inputs.values())
        count = len(out) if isinstance(out, tuple) else 1
        output_names = ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))
    target = ExportTarget(name, module.eval(), dict(sample_inputs), tuple(output_names))
    return export_targets([target], formats, precisions, out_dir, {"kind": "module", "class": type(module).__name__},
                          dynamic_batch, progress)
