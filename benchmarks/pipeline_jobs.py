"""Networks for the end-to-end level: torch eager from a preset, or one runtime x precision from an
artifact directory (loaded with the bench's threads and provider; the load is timed as init)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from md_export.errors import MdExportError
from md_export.pipeline import Networks

from .init_cache import CachedLoad, before_timed_load, init_fields
from .targets.host import RUNTIME_FORMAT, HostSettings, component_gflops, graph_cache, load_runner

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


@dataclass
class LoadedPipeline:
    networks: Networks
    init_ms: float  # the three loads together
    prediction_type: str
    gflops: dict[str, float | None]  # per batch-1 call of each component
    resolution: int
    precisions: dict[str, str]  # the manifest precision of each network that was loaded
    init_fields: dict = field(default_factory=dict)  # onnxruntime: init_ms_cold, ort_cache, ... (init_cache.py)


def torch_pipeline_networks(preset_name: str, resolution: int | None, settings: HostSettings) -> LoadedPipeline:
    import torch

    from md_export.torch_networks import torch_networks
    from md_export.models import get_preset
    from md_export.models.presets import UnknownPresetError

    try:
        preset = get_preset(preset_name)
    except UnknownPresetError as exc:
        raise MdExportError(str(exc)) from None
    resolution = resolution or preset.resolution
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    networks, _ = torch_networks(preset, resolution, seed=settings.seed)
    init_ms = (time.perf_counter() - start) * 1e3
    gflops = {c: component_gflops(preset.name, c, resolution, 1) for c in COMPONENTS}
    return LoadedPipeline(networks, init_ms, preset.unet.prediction_type, gflops, resolution,
                          {c: "fp32" for c in COMPONENTS})


def artifact_pipeline_networks(directory: str | Path, runtime: str, precision: str, resolution: int | None,
                               settings: HostSettings) -> LoadedPipeline:
    from md_export.artifacts import select_entries
    from md_export.export.manifest import ManifestError, read_manifest
    from md_export.runtimes.base import ArtifactLoadError
    from md_export.runtimes.open import verify_file
    from md_export.models import get_preset

    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except ManifestError as exc:
        raise MdExportError(str(exc)) from None
    if runtime not in RUNTIME_FORMAT:
        raise MdExportError(f"runtime {runtime!r} does not run artifacts; choose from {', '.join(RUNTIME_FORMAT)}")
    entries = select_entries(manifest, RUNTIME_FORMAT[runtime], precision, resolution)
    source = manifest.get("source") or {}
    preset_name = source.get("preset")
    prediction_type = (source.get("unet_config") or {}).get("prediction_type")
    if prediction_type is None and preset_name:
        prediction_type = get_preset(preset_name).unet.prediction_type
    if prediction_type is None:
        raise MdExportError(f"{directory}/manifest.json does not say the UNet's prediction type (no preset source)")
    paths = {}
    for component, entry in entries.items():  # checked before the clock starts: hashing is not init
        try:
            paths[component] = verify_file(directory, entry)
        except ArtifactLoadError as exc:
            raise MdExportError(str(exc)) from None
    loads = {}
    for component, entry in entries.items():
        if entry["format"] == "onnx":  # planned here, before any clock: the key uses the checked sha256
            cache = graph_cache(paths[component], entry.get("sha256"), settings)
            loads[component] = CachedLoad(
                cache, lambda c=component, e=entry, g=cache: load_runner(paths[c], e["format"], e, settings, g),
                lambda c=component, e=entry: load_runner(paths[c], e["format"], e, settings))
    before = before_timed_load(loads) if loads else None
    start = time.perf_counter()
    runners = {component: (loads[component].load_cached() if component in loads
                           else load_runner(paths[component], entry["format"], entry, settings))
               for component, entry in entries.items()}
    init_ms = (time.perf_counter() - start) * 1e3
    res = entries["unet"].get("resolution") or resolution
    gflops = {c: component_gflops(preset_name, c, res, 1) for c in entries}
    return LoadedPipeline(Networks(**runners), init_ms, prediction_type, gflops, res,
                          {c: entry["precision"] for c, entry in entries.items()},
                          init_fields(before, runners, init_ms) if before is not None else {})
