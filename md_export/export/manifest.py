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
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import MdExportError

MANIFEST = "manifest.json"
TOOLS = ("torch", "onnx", "onnxruntime", "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
         "numpy", "md-export")


class ManifestError(MdExportError):
    """A manifest.json that is missing, unreadable or not what md-export writes."""


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


def _probe_writable(directory: Path) -> None:
    """Create and remove a file in `directory`: os.access says yes to root even where nothing can be
    created (/proc, read-only mounts), and only a real write tells."""
    from ..errors import OutputError

    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".md-export-write-probe-")
    except OSError as exc:
        raise OutputError(f"output directory {directory} is not writable: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | Path) -> None:
    """Fail before any work when file `path` cannot be written (missing or read-only folder, a directory)."""
    from ..errors import OutputError

    path = Path(path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist")
    _probe_writable(parent)
    if path.is_dir():
        raise OutputError(f"output {path} is a directory")


def check_output_dir(path: str | Path, *, must_be_empty: bool = False) -> None:
    """Fail before any work when directory `path` cannot be created or written: an existing file
    there or above it, a place where nothing can be created, or (`must_be_empty`) a directory that
    already holds something, which the caller would replace."""
    from ..errors import OutputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} exists and is not a directory")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create output directory {path}: {existing} is a file")
    _probe_writable(existing)
    if must_be_empty and path.is_dir() and any(path.iterdir()):
        raise OutputError(f"output directory {path} is not empty; pass --overwrite to replace it")


def make_output_dir(path: str | Path) -> Path | None:
    """`mkdir -p path`; returns the topmost directory this call created (None when `path` existed),
    which `remove_created_dir` takes away again when the command fails: a failed command leaves
    nothing where nothing was, and never touches what was there before."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def remove_created_dir(created: Path | None) -> None:
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)


def write_file_atomic(path: str | Path, write: Callable[[str], object], *, mode: int | None = 0o644) -> Path:
    """`write(tmp)` fills a temp file beside `path` (a library's save-to-path: torch.save, PIL,
    safetensors), which is then renamed to `path`: readers never see half a file, and a failed
    write leaves `path` as it was. `mode` None keeps mkstemp's owner-only 0o600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int | None = 0o644) -> None:
    """Write to a temp name beside `path`, then rename: readers never see half a file."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    write_file_atomic(path, write, mode=mode)


def write_text_atomic(path: str | Path, text: str, *, mode: int | None = 0o644) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def replace_path(src: str | Path, dst: str | Path) -> None:
    """Rename the finished file or directory `src` (staged on `dst`'s file system) to `dst`,
    replacing what is there. A file over a file (or over nothing) is one atomic rename; otherwise
    (a directory on either side) the old `dst` is moved aside first and deleted only after the
    rename succeeded, so a failure puts it back where it was."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(dst) or not (dst.is_dir() or src.is_dir()):
        os.replace(src, dst)
        return
    aside = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.replaced-"))
    os.replace(dst, aside / dst.name)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(aside / dst.name, dst)
        os.rmdir(aside)
        raise
    shutil.rmtree(aside, ignore_errors=True)


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
