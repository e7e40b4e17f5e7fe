"""Manifest entry -> loaded runner, after checking the file is the one the manifest describes."""

from __future__ import annotations

from pathlib import Path

from .base import ArtifactLoadError, Runner


# (resolved path, inode, size, mtime_ns, ctime_ns) -> sha256 of files this process already hashed: a plan opens the
# same 1.5 GB UNet for every configuration it evaluates, and hashing it costs seconds each time.
# A rewritten or replaced file has a new inode, size or time stamps, so it is hashed again.
_HASHED: dict[tuple, str] = {}


def _sha256_once(path: Path) -> str:
    from ..export.manifest import sha256_of

    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_of(path)
    return _HASHED[key]


def verify_file(directory: Path, entry: dict) -> Path:
    path = Path(directory) / entry["file"]
    if not path.exists():
        raise ArtifactLoadError(f"{entry['file']} is listed in the manifest but missing from {directory}")
    if _sha256_once(path) != entry["sha256"]:
        raise ArtifactLoadError(f"{entry['file']} does not match its manifest sha256: "
                                "the file is corrupt, truncated or changed since export")
    return path


def open_artifact(directory: str | Path, entry: dict, threads: int | None = None, verify: bool = True,
                  ort_cache: bool = False, ort_cache_dir: str | Path | None = None) -> Runner:
    """`ort_cache`: load an .onnx through onnxruntime's optimized graph cached beside it (written on
    the first load; ort_cache.py). Off by default here, where parity and quantization open an
    artifact once; the pipeline (`artifact_networks`) and the benchmarks turn it on."""
    path = verify_file(Path(directory), entry) if verify else Path(directory) / entry["file"]
    fmt = entry["format"]
    if fmt == "onnx":
        from .onnx_runner import OnnxRunner
        from .ort_cache import disabled, plan_graph_cache

        # Unverified, the manifest's sha256 may not be the file's: the key then fingerprints the file.
        cache = (plan_graph_cache(path, verified_sha256=entry.get("sha256") if verify else None,
                                  cache_dir=ort_cache_dir) if ort_cache else disabled(path))
        return OnnxRunner(path, threads=threads or 0, cache=cache)
    if fmt == "tflite":
        from .litert_runner import LiteRTRunner

        return LiteRTRunner(path, entry.get("signature"), entry.get("runtime_names"), threads=threads)
    if fmt == "coreml":
        from .coreml_runner import CoreMLRunner

        return CoreMLRunner(path)
    raise ArtifactLoadError(f"{entry['file']}: unknown format {fmt!r}")
