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

    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except ManifestError as exc:
        raise MdExportError(str(exc)) from None
    if runtime not in RUNTIME_FORMAT:
        raise MdExportError(f"runtime {runtime!r} does not run artifacts; choose from {', '.join(RUNTIME_FORMAT)}")
    entries = select_entries(manifest, RUNTIME_FORMAT[runtime], precision, resolution)
    return _load_networks({c: (directory, e) for c, e in entries.items()}, manifest.get("source") or {},
                          directory, resolution, settings)


def plan_pipeline_networks(plan_path: str | Path, settings: HostSettings) -> tuple[LoadedPipeline, dict]:
    """The shipping configuration that `md-export plan` (or README command 1) chose, each network
    from its recipe's directory, and the plan. A plan records its directories as its command named
    them: relative ones are looked up from here, then from each folder above the plan."""
    import json

    from md_export.export.manifest import ManifestError, read_manifest

    plan_path = Path(plan_path)
    try:
        plan = json.loads(plan_path.read_text())
    except (OSError, ValueError) as exc:
        raise MdExportError(f"cannot read plan {plan_path}: {exc}") from None
    if not isinstance(plan, dict) or "component_candidates" not in plan or "choice" not in plan:
        raise MdExportError(f"{plan_path} is not an md-export plan.json (no choice / component_candidates)")
    if plan["choice"] is None:
        raise MdExportError(f"{plan_path}: the plan chose nothing (no configuration passed its gates)")
    if plan.get("runtime") not in RUNTIME_FORMAT:
        raise MdExportError(f"{plan_path}: runtime {plan.get('runtime')!r} does not run artifacts")
    sources, source = {}, {}
    for component in COMPONENTS:
        recipe = plan["choice"].get(component)
        candidate = next((c for c in plan["component_candidates"]
                          if c["component"] == component and c["recipe"] == recipe and c.get("file")), None)
        if candidate is None:
            raise MdExportError(f"{plan_path}: no {component} candidate for the chosen recipe {recipe!r}")
        directory = _plan_directory(candidate["directory"], plan_path)
        try:
            manifest = read_manifest(directory)
        except ManifestError as exc:
            raise MdExportError(str(exc)) from None
        entry = next((e for e in manifest["artifacts"] if e["file"] == candidate["file"]), None)
        if entry is None:
            raise MdExportError(f"{directory}/manifest.json lists no {candidate['file']} (the plan's {component})")
        sources[component] = (directory, entry)
        source = source or manifest.get("source") or {}
    return _load_networks(sources, source, plan_path, None, settings), plan


def _plan_directory(recorded: str, plan_path: Path) -> Path:
    tried = [Path(recorded)] if Path(recorded).is_absolute() else (
        [Path.cwd() / recorded] + [parent / recorded for parent in plan_path.resolve().parents])
    for directory in tried:
        if (directory / "manifest.json").exists():
            return directory
    raise MdExportError(f"the plan's artifact directory {recorded!r} is not here (no manifest.json in {tried[0]} "
                        f"nor above {plan_path})")


def _load_networks(sources: dict[str, tuple[Path, dict]], source: dict, where: Path, resolution: int | None,
                   settings: HostSettings) -> LoadedPipeline:
    """The three networks (`sources`: component -> (directory, manifest entry)); their loads together
    are the timed init. Files are hashed before the clock starts: hashing is not init."""
    from md_export.runtimes.base import ArtifactLoadError
    from md_export.runtimes.open import verify_file
    from md_export.models import get_preset

    preset_name = source.get("preset")
    prediction_type = (source.get("unet_config") or {}).get("prediction_type")
    if prediction_type is None and preset_name:
        prediction_type = get_preset(preset_name).unet.prediction_type
    if prediction_type is None:
        raise MdExportError(f"{where}: the manifest does not say the UNet's prediction type (no preset source)")
    paths = {}
    for component, (directory, entry) in sources.items():
        try:
            paths[component] = verify_file(directory, entry)
        except ArtifactLoadError as exc:
            raise MdExportError(str(exc)) from None
    loads = {}
    for component, (_, entry) in sources.items():
        if entry["format"] == "onnx":  # planned here, before any clock: the key uses the checked sha256
            cache = graph_cache(paths[component], entry.get("sha256"), settings)
            loads[component] = CachedLoad(
                cache, lambda c=component, e=entry, g=cache: load_runner(paths[c], e["format"], e, settings, g),
                lambda c=component, e=entry: load_runner(paths[c], e["format"], e, settings))
    before = before_timed_load(loads) if loads else None
    start = time.perf_counter()
    runners = {component: (loads[component].load_cached() if component in loads
                           else load_runner(paths[component], entry["format"], entry, settings))
               for component, (_, entry) in sources.items()}
    init_ms = (time.perf_counter() - start) * 1e3
    res = sources["unet"][1].get("resolution") or resolution
    gflops = {c: component_gflops(preset_name, c, res, 1) for c in sources}
    return LoadedPipeline(Networks(**runners), init_ms, prediction_type, gflops, res,
                          {c: entry["precision"] for c, (_, entry) in sources.items()},
                          init_fields(before, runners, init_ms) if before is not None else {})
