"""Pick the pipeline's three networks out of an artifact directory, as runners."""

from __future__ import annotations

from pathlib import Path

from .errors import MdExportError
from .export.manifest import read_manifest
from .pipeline import Networks
from .runtimes import open_artifact

RUNTIME_FORMATS = {"onnx": "onnx", "tflite": "tflite", "coreml": "coreml"}


def select_entries(manifest: dict, fmt: str, precision: str, resolution: int | None) -> dict[str, dict]:
    chosen = {}
    for component in ("text_encoder", "unet", "vae_decoder"):
        candidates = [e for e in manifest["artifacts"]
                      if e["component"] == component and e["format"] == fmt and e["precision"] == precision]
        if component != "text_encoder" and resolution is not None:
            candidates = [e for e in candidates if e.get("resolution") == resolution]
        if not candidates:
            raise MdExportError(f"no {fmt} {precision} {component}"
                                + (f" at {resolution}" if resolution and component != "text_encoder" else "")
                                + " in the artifact directory; export it first")
        if len(candidates) > 1:
            options = sorted(str(e.get("resolution")) for e in candidates)
            raise MdExportError(f"several {fmt} {component} artifacts (resolutions {', '.join(options)}): pass --resolution")
        chosen[component] = candidates[0]
    return chosen


def artifact_networks(directory: str | Path, runtime: str, precision: str = "fp32", resolution: int | None = None,
                      threads: int | None = None, ort_cache: bool = True) -> tuple[Networks, dict]:
    """Runners for text_encoder, unet and vae_decoder, and the manifest they came from.

    `ort_cache` (on by default: the pipeline loads the same artifacts again and again) keeps
    onnxruntime's optimized graphs in `<directory>/.ort_cache` so that later loads skip the
    optimizer; a read-only directory just goes without (runtimes/ort_cache.py)."""
    if runtime not in RUNTIME_FORMATS:
        raise MdExportError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIME_FORMATS)}")
    manifest = read_manifest(Path(directory))
    entries = select_entries(manifest, RUNTIME_FORMATS[runtime], precision, resolution)
    runners = {component: open_artifact(directory, entry, threads, ort_cache=ort_cache)
               for component, entry in entries.items()}
    return Networks(**runners), manifest
