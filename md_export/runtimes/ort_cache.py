"""onnxruntime's optimized graph, cached beside the artifact, so that a second load does not
optimize again.

The first load optimizes the artifact at ORT_ENABLE_ALL (the level every session here runs at) and
writes the result (`SessionOptions.optimized_model_filepath`) to
`<artifact dir>/.ort_cache/<artifact stem>.<key>.ort.onnx`; later loads open that file with graph
optimizations off (ORT_DISABLE_ALL): the graph is already optimized, and it gave bit-identical
outputs to the original on the tiny UNet fp32, dynamic int8 and fp16 (measured with onnxruntime
1.32). Loading it at ORT_ENABLE_BASIC / EXTENDED / ALL gave the same outputs too, only slower.

The file is specific to this host: at ORT_ENABLE_ALL the NchwcTransformer lays Convs out in blocks
of the CPU's vector width (onnxruntime warns "the generated model may contain hardware specific
optimizations" when it serializes one). So the key holds everything that makes it specific: the
artifact's content (its verified sha256, or a cheap fingerprint), onnxruntime's version, the CPU's
instruction-set flags, the optimization level and the execution providers. Planning a cache
(`plan_graph_cache`) never hashes a whole artifact, and callers plan before any init clock starts.

Writes are atomic (a private temp folder in the cache folder, then os.replace, the model file
last), so a crash never leaves a half-written cache under the final name. A cached file that does
not load is removed and rebuilt, silently; the runner's `cache_status` says what happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_DIRNAME = ".ort_cache"
CACHE_SUFFIX = ".ort.onnx"
# Bump when what is written (or how it is opened) changes: old files then stop matching.
CACHE_FORMAT = 1
CPU_PROVIDER = "CPUExecutionProvider"
# Artifacts this large (model plus its `.data` sidecar) cache their initializers in a sidecar too:
# protobuf cannot serialize a message over 2 GB, and optimizations may grow a graph a little.
EXTERNAL_DATA_THRESHOLD_BYTES = 1 << 30
EXTERNAL_DATA_MIN_TENSOR_BYTES = 1024  # small tensors (shapes, scales) stay inside the graph
# Instruction-set flags that change what onnxruntime's optimizers emit or which kernels they pick
# (NCHWc block size, int8 / fp16 / bf16 fusions): x86 /proc/cpuinfo "flags", ARM "Features".
ISA_FLAGS = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx_vnni", "avx_vnni_int8", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
    "amx_bf16", "amx_fp16", "asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2",
})
STALE_TEMP_SECONDS = 3600  # a temp folder this old belongs to a writer that died


@dataclass(frozen=True)
class GraphCache:
    """Where one artifact's optimized graph is cached, decided before any timing.

    `file` is None when this load uses no cache; `skipped` then says why (disabled, a read-only
    folder, a provider whose optimized graph is not portable)."""

    artifact: Path
    file: Path | None = None
    key: str | None = None
    external_data: bool = False
    skipped: str | None = None
    off: bool = False  # the caller turned caching off (as opposed to: it cannot be used here)
    # Only a cache folder beside the artifact is ours to tidy: a shared --ort-cache-dir may hold
    # files of other artifacts with the same stem.
    remove_stale: bool = True

    @property
    def data_file(self) -> Path | None:
        return self.file.with_name(self.file.name + ".data") if self.file and self.external_data else None


def disabled(artifact: str | Path) -> GraphCache:
    """No cache, by choice (--no-ort-cache, ort_cache=False)."""
    return GraphCache(Path(artifact), skipped="disabled by the caller", off=True)


def unavailable(artifact: str | Path, reason: str) -> GraphCache:
    """No cache, because this load cannot have one; `reason` goes into the results."""
    return GraphCache(Path(artifact), skipped=reason)


def cpu_isa() -> tuple[str, ...]:
    """The instruction-set flags of this CPU that matter to the optimized graph, sorted."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the processor string is the best identity there is
        return (platform.processor() or "unknown",)
    match = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    return tuple(sorted(ISA_FLAGS & set(match.group(1).split()))) if match else ()


def quick_fingerprint(path: Path) -> str:
    """Size, mtime and the sha256 of the first and last MiB: milliseconds where a full sha256 of a
    1.5 GB UNet takes seconds. For files whose sha256 nobody has verified."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        if stat.st_size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return f"size={stat.st_size};mtime_ns={stat.st_mtime_ns};ends={digest.hexdigest()}"


def _sidecar(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".data")  # the exporter's external-data file


def cache_key(artifact: Path, content_id: str, providers: tuple[str, ...], level: str) -> str:
    """16 hex digits over everything that makes an optimized graph valid only here."""
    import onnxruntime as ort

    sidecar = _sidecar(artifact)
    fields = {
        "format": CACHE_FORMAT,
        "content": content_id,
        # The manifest's sha256 covers the .onnx only; a changed sidecar changes size or mtime.
        "external_data": ([sidecar.stat().st_size, sidecar.stat().st_mtime_ns] if sidecar.exists() else None),
        "onnxruntime": ort.__version__,
        "machine": platform.machine(),
        "isa": cpu_isa(),
        "level": level,
        "providers": list(providers),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _writable(folder: Path) -> str | None:
    """None when a file can be created in `folder` (made if missing), else why not. A real write
    tells: os.access says yes to root on read-only mounts."""
    try:
        folder.mkdir(exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError as exc:
        return f"cannot write {folder}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None


def plan_graph_cache(artifact: str | Path, *, verified_sha256: str | None = None,
                     providers: tuple[str, ...] = (CPU_PROVIDER,), cache_dir: str | Path | None = None,
                     level: str = "ORT_ENABLE_ALL") -> GraphCache:
    """Where `artifact`'s optimized graph goes. `verified_sha256` is the artifact's sha256 when the
    caller has checked it against the file (the manifest's, after `verify_file`); otherwise the key
    uses `quick_fingerprint`. `cache_dir` replaces `<artifact dir>/.ort_cache`."""
    artifact = Path(artifact)
    if tuple(providers) != (CPU_PROVIDER,):
        # Other providers partition (and some compile) the graph at load: what they serialize is
        # not a graph a later session can take as is.
        return unavailable(artifact, f"providers {', '.join(providers)}: only the CPU provider's graph is cached")
    if artifact.suffix != ".onnx" or not artifact.is_file():
        return unavailable(artifact, f"{artifact.name} is not an .onnx file")
    folder = Path(cache_dir) if cache_dir else artifact.parent / CACHE_DIRNAME
    reason = _writable(folder)
    if reason:
        return unavailable(artifact, reason)
    content_id = f"sha256={verified_sha256}" if verified_sha256 else quick_fingerprint(artifact)
    key = cache_key(artifact, content_id, tuple(providers), level)
    size = artifact.stat().st_size + (_sidecar(artifact).stat().st_size if _sidecar(artifact).exists() else 0)
    return GraphCache(artifact, folder / f"{artifact.stem}.{key}{CACHE_SUFFIX}", key,
                      external_data=size >= EXTERNAL_DATA_THRESHOLD_BYTES, remove_stale=cache_dir is None)


def status(cache: GraphCache, state: str, reason: str | None = None) -> dict:
    """What a load did, for results: state is hit, written, rebuilt, skipped or off."""
    return {"state": state, "reason": reason, "file": cache.file.name if cache.file else None, "key": cache.key}


def _remove(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)


def _remove_stale(cache: GraphCache) -> None:
    """One cache per artifact: drop files of the same artifact with another key, and temp folders
    left by writers that died."""
    pattern = re.compile(re.escape(cache.artifact.stem) + r"\.[0-9a-f]{16}" + re.escape(CACHE_SUFFIX) + r"(\.data)?")
    keep = {cache.file.name, cache.file.name + ".data"}
    for path in cache.file.parent.iterdir():
        try:
            if pattern.fullmatch(path.name) and path.name not in keep:
                path.unlink()
            elif (path.name.startswith(".tmp-") and path.is_dir()
                  and time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # another process tidied first


def open_session(cache: GraphCache, make_options, providers: tuple[str, ...]):
    """(session, status). `make_options(level_name)` returns fresh SessionOptions at that level.

    Errors on the artifact itself propagate (the caller turns them into ArtifactLoadError); the
    cache's own failures (unreadable cached file, a write that fails) fall back to the artifact."""
    import onnxruntime as ort

    if cache.file is None:
        options = make_options("ORT_ENABLE_ALL")
        return ort.InferenceSession(str(cache.artifact), options, providers=list(providers)), status(
            cache, "off" if cache.off else "skipped", cache.skipped)
    state, reason = "written", None
    if cache.file.exists():
        try:
            options = make_options("ORT_DISABLE_ALL")
            return ort.InferenceSession(str(cache.file), options, providers=list(providers)), status(cache, "hit")
        except Exception as exc:  # truncated, corrupt, or its sidecar gone: rebuild from the artifact
            state, reason = "rebuilt", f"cached graph did not load ({str(exc).splitlines()[0][:200]})"
            _remove(cache.file, cache.data_file)
    try:
        work = Path(tempfile.mkdtemp(dir=cache.file.parent, prefix=".tmp-"))
    except OSError as exc:
        return _uncached(cache, make_options, providers, f"cannot write the cache: {exc.strerror or exc}")
    try:
        options = make_options("ORT_ENABLE_ALL")
        options.optimized_model_filepath = str(work / cache.file.name)
        options.add_session_config_entry("session.save_model_format", "ONNX")
        if cache.external_data:
            # The sidecar's name is stored relative to the graph, so it survives the move below.
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             cache.data_file.name)
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             str(EXTERNAL_DATA_MIN_TENSOR_BYTES))
        try:
            session = ort.InferenceSession(str(cache.artifact), options, providers=list(providers))
        except Exception as exc:
            # The artifact or the write: a plain load tells which (and raises if it is the artifact).
            return _uncached(cache, make_options, providers,
                             f"writing the optimized graph failed ({str(exc).splitlines()[0][:200]})")
        try:
            if cache.external_data:
                os.replace(work / cache.data_file.name, cache.data_file)
            os.replace(work / cache.file.name, cache.file)  # last: its presence means complete
        except OSError as exc:
            _remove(cache.file)
            return session, status(cache, "skipped", f"moving the optimized graph into place failed: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if cache.remove_stale:
        _remove_stale(cache)
    return session, status(cache, state, reason)


def _uncached(cache: GraphCache, make_options, providers, reason: str):
    import onnxruntime as ort

    session = ort.InferenceSession(str(cache.artifact), make_options("ORT_ENABLE_ALL"), providers=list(providers))
    return session, status(cache, "skipped", reason)
