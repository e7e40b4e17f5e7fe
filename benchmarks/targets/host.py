"""Benchmark jobs on this host: one per (component, runtime, precision), from an artifact directory,
a single artifact file, or a preset (torch eager). A job knows how to load its runner (that is what
init_ms times), its feeds, its FLOPs and what it is (file, sha256) for the result."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np

from md_export.errors import MdExportError
from md_export.runtimes.base import ArtifactLoadError, Runner, RuntimeUnavailableError

from md_export.runtimes.ort_cache import GraphCache, disabled, plan_graph_cache, unavailable

from ..init_cache import CachedLoad
from ..inputs import random_feeds, reference_feeds

FORMAT_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}
RUNTIME_FORMAT = {v: k for k, v in FORMAT_RUNTIME.items()}
RUNTIMES = ("torch", "onnxruntime", "litert", "coreml")
SUFFIX_FORMAT = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml"}


@dataclass
class HostSettings:
    threads: int
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    compute_units: str = "ALL"
    seed: int = 0
    # onnxruntime's optimized graphs cached beside the artifacts (md_export/runtimes/ort_cache.py);
    # --no-ort-cache turns it off, --ort-cache-dir puts the files elsewhere
    ort_cache: bool = True
    ort_cache_dir: str | None = None

    def result_settings(self, warmup: int, runs: int, min_seconds: float, levels: list[str]) -> dict:
        """The `settings` of a bench result timed with these settings."""
        return {"threads": self.threads, "warmup": warmup, "runs": runs, "min_seconds": min_seconds,
                "providers": list(self.providers), "compute_units": self.compute_units,
                "delegate": "xnnpack (CPU)", "seed": self.seed, "levels": levels, "ort_cache": self.ort_cache,
                "ort_cache_dir": os.path.abspath(self.ort_cache_dir) if self.ort_cache_dir else None}


@dataclass
class Job:
    name: str
    component: str
    runtime: str
    precision: str
    resolution: int | None
    batch: int
    load: Callable[[], Runner]
    feeds: Callable[[Runner], dict[str, np.ndarray]]  # given the loaded runner (random feeds need its specs)
    gflops: float | None
    extra: dict = field(default_factory=dict)
    # onnxruntime artifacts: the cache plan and an uncached load, for init_ms_cold (init_cache.py)
    cached_load: CachedLoad | None = None


@lru_cache(maxsize=None)
def _cost(preset_name: str, component: str, resolution: int | None) -> float:
    from md_export.summary import component_cost
    from md_export.models import get_preset

    return component_cost(get_preset(preset_name), component, resolution).gflops


def component_gflops(preset_name: str | None, component: str, resolution: int | None, batch: int) -> float | None:
    """FLOPs of one call: the summary counts batch 1, work scales with the batch."""
    if not preset_name:
        return None
    try:
        return _cost(preset_name, component, resolution) * batch
    except Exception:  # an unknown preset in a foreign manifest: report no FLOPs rather than guess
        return None


def graph_cache(path: Path, sha256: str | None, settings: HostSettings) -> GraphCache:
    """The optimized-graph cache of one .onnx, planned before any init clock starts. `sha256` is
    the file's, already checked (verify_file) or computed; never hashed here."""
    if not settings.ort_cache:
        return disabled(path)
    return plan_graph_cache(path, verified_sha256=sha256, providers=settings.providers,
                            cache_dir=settings.ort_cache_dir)


def load_runner(path: Path, fmt: str, entry: dict | None, settings: HostSettings,
                cache: GraphCache | None = None) -> Runner:
    """Open one artifact with the benchmark's settings (threads, provider, compute units); an .onnx
    through `cache` when given (see graph_cache)."""
    try:
        if fmt == "onnx":
            from md_export.runtimes.onnx_runner import OnnxRunner

            return OnnxRunner(path, providers=settings.providers, threads=settings.threads, cache=cache)
        if fmt == "tflite":
            from md_export.runtimes.litert_runner import LiteRTRunner

            entry = entry or {}
            return LiteRTRunner(path, entry.get("signature"), entry.get("runtime_names"), threads=settings.threads)
        if fmt == "coreml":
            from ..targets.mac import coreml_runner

            return coreml_runner(path, settings.compute_units)
    except (ArtifactLoadError, RuntimeUnavailableError) as exc:
        raise MdExportError(str(exc)) from None
    raise MdExportError(f"{path.name}: unknown format {fmt!r}")


def _batch_of(entry: dict) -> int:
    for spec in entry.get("inputs") or []:
        shape = spec.get("shape") or []
        if shape and isinstance(shape[0], int) and shape[0] > 0:
            return shape[0]
    return 1


def _job_name(component: str, resolution: int | None, runtime: str, precision: str, batch: int) -> str:
    where = f"@{resolution}" if resolution and component != "text_encoder" else ""
    return f"{component}{where}/{runtime}/{precision}" + (f"/b{batch}" if batch != 1 else "")


def artifact_dir_jobs(directory: str | Path, settings: HostSettings, runtimes: list[str] | None = None,
                      precisions: list[str] | None = None, components: list[str] | None = None,
                      resolution: int | None = None) -> tuple[list[Job], dict]:
    from md_export.export.manifest import ManifestError, read_manifest
    from md_export.runtimes.open import verify_file

    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except ManifestError as exc:
        raise MdExportError(str(exc)) from None
    source = manifest.get("source") or {}
    preset_name = source.get("preset") if source.get("kind") == "preset" else source.get("preset")
    for runtime in runtimes or []:
        if runtime not in RUNTIME_FORMAT:
            raise MdExportError(f"runtime {runtime!r} does not run artifacts; choose from {', '.join(RUNTIME_FORMAT)}")
    if "coreml" in (runtimes or []) and platform.system() != "Darwin":
        raise MdExportError("Core ML packages run only on macOS (this is "
                            f"{platform.system()}); use `--runtime onnxruntime,litert` here or run on a Mac")
    jobs = []
    for entry in manifest["artifacts"]:
        runtime = FORMAT_RUNTIME.get(entry["format"])
        if runtime is None:
            continue
        if runtimes and runtime not in runtimes:
            continue
        if not runtimes and runtime == "coreml" and platform.system() != "Darwin":
            continue  # listed, but nothing can execute it here; asked for explicitly it is an error above
        if precisions and entry["precision"] not in precisions:
            continue
        if components and entry["component"] not in components:
            continue
        if resolution and entry.get("resolution") not in (None, resolution) and entry["component"] != "text_encoder":
            continue

        # The file is checked against its manifest sha256 here, before any timing: hashing a 1.5 GB
        # UNet takes seconds, and init_ms is what the runtime needs to load, not what we need to check.
        try:
            path = verify_file(directory, entry)
        except ArtifactLoadError as exc:
            raise MdExportError(str(exc)) from None

        cached_load = None
        if entry["format"] == "onnx":
            cache = graph_cache(path, entry.get("sha256"), settings)
            cached_load = CachedLoad(cache, partial(load_runner, path, "onnx", entry, settings, cache),
                                     partial(load_runner, path, "onnx", entry, settings))

        def load(entry=entry, path=path):
            return load_runner(path, entry["format"], entry, settings)

        def feeds(runner, entry=entry):
            return reference_feeds(directory, entry) or random_feeds(runner.inputs, settings.seed)

        batch = _batch_of(entry)
        res = entry.get("resolution")
        jobs.append(Job(
            name=_job_name(entry["component"], res, runtime, entry["precision"], batch),
            component=entry["component"], runtime=runtime, precision=entry["precision"], resolution=res, batch=batch,
            load=cached_load.load_cached if cached_load else load, feeds=feeds,
            gflops=component_gflops(preset_name, entry["component"], res, batch),
            extra={"format": entry["format"], "file": entry["file"], "sha256": entry.get("sha256"),
                   "inputs": "reference" if reference_feeds(directory, entry) else f"random (seed {settings.seed})"},
            cached_load=cached_load,
        ))
    if not jobs:
        raise MdExportError(f"nothing to benchmark in {directory} with the chosen runtime/precision/component filters")
    return jobs, manifest


def artifact_file_jobs(path: str | Path, settings: HostSettings) -> tuple[list[Job], dict | None]:
    """One file: described by the manifest beside it when there is one, else benchmarked on its own."""
    from md_export.export.manifest import MANIFEST, read_manifest, sha256_of

    path = Path(path)
    if not path.exists():
        raise MdExportError(f"{path} does not exist")
    fmt = SUFFIX_FORMAT.get(path.suffix)
    if fmt is None:
        raise MdExportError(f"{path.name}: not a model file (.onnx, .tflite or .mlpackage)")
    if (path.parent / MANIFEST).is_file():
        manifest = read_manifest(path.parent)
        entries = [e for e in manifest["artifacts"] if Path(e["file"]).name == path.name]
        if entries:
            jobs, manifest = artifact_dir_jobs(path.parent, settings, [FORMAT_RUNTIME[fmt]],
                                               [entries[0]["precision"]], [entries[0]["component"]],
                                               entries[0].get("resolution"))
            return [j for j in jobs if j.extra["file"] == entries[0]["file"]], manifest
    runtime = FORMAT_RUNTIME[fmt]
    sha256 = sha256_of(path)
    cached_load = None
    if fmt == "onnx":
        # Beside a file outside an md-export artifact directory nothing is ours to write.
        cache = (graph_cache(path, sha256, settings) if settings.ort_cache_dir or not settings.ort_cache else
                 unavailable(path, "not in an md-export artifact directory (pass --ort-cache-dir to cache it)"))
        cached_load = CachedLoad(cache, partial(load_runner, path, fmt, None, settings, cache),
                                 partial(load_runner, path, fmt, None, settings))
    job = Job(name=f"{path.stem}/{runtime}", component=path.stem, runtime=runtime, precision="unknown",
              resolution=None, batch=1,
              load=cached_load.load_cached if cached_load else lambda: load_runner(path, fmt, None, settings),
              feeds=lambda runner: random_feeds(runner.inputs, settings.seed), gflops=None,
              extra={"format": fmt, "file": path.name, "sha256": sha256, "inputs": f"random (seed {settings.seed})"},
              cached_load=cached_load)
    return [job], None


def preset_jobs(preset_name: str, settings: HostSettings, components: list[str] | None = None,
                resolution: int | None = None, unet_batch: int = 1) -> list[Job]:
    """Torch eager on a preset's randomly initialised networks (weights seeded, inputs seeded)."""
    import torch

    from md_export.runtimes.torch_runner import TorchRunner
    from md_export.models import build_component, component_example_inputs, get_preset
    from md_export.models.presets import UnknownPresetError

    try:
        preset = get_preset(preset_name)
    except UnknownPresetError as exc:
        raise MdExportError(str(exc)) from None
    resolution = resolution or preset.resolution
    factor = preset.vae.downsample_factor * preset.unet.downsample_factor
    if resolution % factor:
        raise MdExportError(f"resolution {resolution} is not a multiple of {factor} for preset {preset.name}")
    jobs = []
    for component in components or ["text_encoder", "unet", "vae_decoder"]:
        if component not in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
            raise MdExportError(f"unknown component {component!r}")
        batch = unet_batch if component == "unet" else 1
        examples = component_example_inputs(preset, component, resolution, batch=batch)

        def load(component=component, examples=examples):
            torch.set_num_threads(settings.threads)
            return TorchRunner(build_component(preset, component, seed=settings.seed), examples)

        def feeds(runner, examples=examples):
            return {spec.name: t.numpy() for spec, t in zip(runner.inputs, examples)}

        jobs.append(Job(
            name=_job_name(component, resolution, "torch", "fp32", batch), component=component, runtime="torch",
            precision="fp32", resolution=resolution if component != "text_encoder" else None, batch=batch,
            load=load, feeds=feeds, gflops=component_gflops(preset.name, component, resolution, batch),
            extra={"format": "torch", "file": None, "sha256": None, "preset": preset.name,
                   "inputs": "models.component_example_inputs (seed 0)"},
        ))
    return jobs
