"""manifest.json beside the artifacts: what each file is, how to feed it, where its reference is.

    {"md_export_version", "created", "source": {...}, "tools": {...},
     "artifacts": [{"file", "component", "format", "precision", "resolution", "signature",
                    "multi_resolution", "inputs": [{"name","shape","dtype"}], "outputs": [...],
                    "runtime_names": {...}, "size_bytes", "sha256", "export_seconds",
                    "reference", "tolerance": {...}}]}
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
TOOLS = ("torch", "onnx", "onnxruntime", "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
         "numpy", "md-export")


class ManifestError(Exception):
    pass


def tool_versions(tools: tuple[str, ...] = TOOLS) -> dict[str, str]:
    versions = {}
    for tool in tools:
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            versions[tool] = "not installed"
    return versions


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory (an .mlpackage) as its files' names and bytes in order."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for file in files:
        if Path(path).is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    size = path.stat().st_size
    sidecar = path.with_name(path.name + ".data")  # ONNX external data
    return size + (sidecar.stat().st_size if sidecar.exists() else 0)


def check_output_path(path: str | Path) -> None:
    """Fail before any work when `path` cannot be written (missing or read-only folder, a directory)."""
    from ..errors import OutputError

    path = Path(path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory {parent} is not writable")
    if path.is_dir():
        raise OutputError(f"output {path} is a directory")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temp name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{directory} has no {MANIFEST}: not an md-export artifact directory")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest.get("artifacts"), list):
        raise ManifestError(f"{path} has no 'artifacts' list")
    return manifest


def merge_entries(old: list[dict], new: list[dict]) -> list[dict]:
    """Re-exporting an artifact replaces its entry; others stay."""
    files = {e["file"] for e in new}  # a rewritten file invalidates all of its old signatures
    return [e for e in old if e["file"] not in files] + new
