"""Networks for the end-to-end level: torch eager from a preset, or one runtime x precision from an
artifact directory (loaded with the bench's threads and provider; the load is timed as init)."""

from __future__ import annotations

import time
from pathlib import Path

from md_export.errors import MdExportError
from md_export.pipeline import Networks

from .targets.host import RUNTIME_FORMAT, HostSettings, component_gflops, load_runner


def torch_pipeline_networks(preset_name: str, resolution: int | None, settings: HostSettings):
    """(networks, init_ms, prediction_type, gflops per component, resolution)."""
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
    gflops = {c: component_gflops(preset.name, c, resolution, 1) for c in ("text_encoder", "unet", "vae_decoder")}
    return networks, init_ms, preset.unet.prediction_type, gflops, resolution


def artifact_pipeline_networks(directory: str | Path, runtime: str, precision: str, resolution: int | None,
                               settings: HostSettings):
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
    start = time.perf_counter()
    runners = {component: load_runner(paths[component], entry["format"], entry, settings)
               for component, entry in entries.items()}
    init_ms = (time.perf_counter() - start) * 1e3
    res = entries["unet"].get("resolution") or resolution
    gflops = {c: component_gflops(preset_name, c, res, 1) for c in entries}
    return Networks(**runners), init_ms, prediction_type, gflops, res
