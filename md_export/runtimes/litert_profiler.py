"""Per-op times of a .tflite model from LiteRT's own profiler, through the C API of the
ai-edge-litert wheel's libLiteRt.so (ctypes): the operators a CPU CompiledModel really runs,
XNNPACK's included, with no native tool to build.

    env ─> model (file) ─> options: CPU, opaque "runtime_options_string" (TOML: enable_profiling)
                                     + opaque "xnnpack" (TOML: num_threads)
        ─> CompiledModel ─> its Profiler ─> managed input/output buffers (seeded random inputs)
        ─> warm-up runs ─> reset + start ─> timed runs, the events each run added ─> stop

Checked against ai-edge-litert 2.3.0, whose C API differs from the headers of other LiteRT
revisions in ways a wrong guess would not report, only misread:
- LiteRtCreateModelFromFile takes the environment first (three arguments; checked by
  disassembly, since older headers show two);
- LiteRtGetProfilerEvents(profiler, count, events) writes 104-byte records where the C header
  declares 88 (its MemoryUsage is 32 bytes, not 16): the record size is inferred from what the
  call wrote and must be one of the known layouts, else the profile is refused;
- the identifiers "runtime_options_string" and "xnnpack" (the newer "runtime" / "cpu_delegate"
  are ignored silently by this build: profiling would stay off, threads at the default).
XNNPACK's operators carry their own names ("Fully Connected (NC, QD8, F32, QC8W) GEMM") and no
TFLite node index or tensor name: these times are per operator and op type, not per module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MdExportError

_OK = 0
_CPU = 1  # kLiteRtHwAcceleratorCpu
_LOCK_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
# LiteRtElementType (TfLiteType values) -> numpy
_DTYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8,
           10: np.float16, 11: np.float64}
# tflite::Profiler::EventType bits
_OPERATOR, _DELEGATE_OPERATOR, _DELEGATE_PROFILED_OPERATOR = 2, 4, 8
_TYPE_BLOB = 256  # LiteRtRankedTensorType is 72 bytes in 2.3.0: over-allocated, only its head is read
_SENTINEL = 0xA5
_MAX_RANK = 8

_p, _size, _int, _str = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p
_P = ctypes.POINTER
_SIGNATURES = {  # name: (restype, argtypes); None: void
    "LiteRtCreateEnvironment": (_int, [_int, _p, _P(_p)]),
    "LiteRtDestroyEnvironment": (None, [_p]),
    "LiteRtCreateModelFromFile": (_int, [_p, _str, _P(_p)]),
    "LiteRtDestroyModel": (None, [_p]),
    "LiteRtGetNumModelSignatures": (_int, [_p, _P(_size)]),
    "LiteRtGetModelSignature": (_int, [_p, _size, _P(_p)]),
    "LiteRtGetSignatureKey": (_int, [_p, _P(_str)]),
    "LiteRtGetNumSignatureInputs": (_int, [_p, _P(_size)]),
    "LiteRtGetNumSignatureOutputs": (_int, [_p, _P(_size)]),
    "LiteRtGetSignatureInputTensorByIndex": (_int, [_p, _size, _P(_p)]),
    "LiteRtGetSignatureOutputTensorByIndex": (_int, [_p, _size, _P(_p)]),
    "LiteRtGetRankedTensorType": (_int, [_p, _p]),
    "LiteRtCreateOptions": (_int, [_P(_p)]),
    "LiteRtDestroyOptions": (None, [_p]),
    "LiteRtSetOptionsHardwareAccelerators": (_int, [_p, _int]),
    "LiteRtCreateOpaqueOptions": (_int, [_str, _p, _p, _P(_p)]),
    "LiteRtDestroyOpaqueOptions": (None, [_p]),
    "LiteRtAddOpaqueOptions": (_int, [_p, _p]),
    "LiteRtCreateCompiledModel": (_int, [_p, _p, _p, _P(_p)]),
    "LiteRtDestroyCompiledModel": (None, [_p]),
    "LiteRtGetCompiledModelInputBufferRequirements": (_int, [_p, _size, _size, _P(_p)]),
    "LiteRtGetCompiledModelOutputBufferRequirements": (_int, [_p, _size, _size, _P(_p)]),
    "LiteRtRunCompiledModel": (_int, [_p, _size, _size, _P(_p), _size, _P(_p)]),
    "LiteRtCompiledModelGetProfiler": (_int, [_p, _P(_p)]),
    "LiteRtCreateManagedTensorBufferFromRequirements": (_int, [_p, _p, _p, _P(_p)]),
    "LiteRtDestroyTensorBuffer": (None, [_p]),
    "LiteRtGetTensorBufferSize": (_int, [_p, _P(_size)]),
    "LiteRtLockTensorBuffer": (_int, [_p, _P(_p), _int]),
    "LiteRtUnlockTensorBuffer": (_int, [_p]),
    "LiteRtStartProfiler": (_int, [_p]),
    "LiteRtStopProfiler": (_int, [_p]),
    "LiteRtResetProfiler": (_int, [_p]),
    "LiteRtGetNumProfilerEvents": (_int, [_p, _P(_int)]),
    "LiteRtGetProfilerEvents": (_int, [_p, _int, _p]),
}


class LiteRtProfileError(MdExportError):
    """The wheel's LiteRT C API refused a call, or its profile is not in a known layout."""


@dataclass(frozen=True)
class OpEvent:
    op_type: str  # XNNPACK's operator name, or the TFLite builtin op that ran outside the delegate
    run: int  # index of the timed run
    ms: float
    delegated: bool  # inside XNNPACK (True) or a TFLite builtin kernel (False)


@dataclass(frozen=True)
class Profile:
    events: list[OpEvent]
    wall_ms: list[float]  # per timed run, the whole LiteRtRunCompiledModel call
    signature: str


def library_path() -> Path:
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise LiteRtProfileError("ai-edge-litert is not installed: no libLiteRt.so to profile with")
    path = Path(list(spec.submodule_search_locations)[0]) / "libLiteRt.so"
    if not path.is_file():
        raise LiteRtProfileError(f"{path} is missing: this ai-edge-litert has no LiteRT C library")
    return path


class _Api:
    def __init__(self) -> None:
        lib = ctypes.CDLL(str(library_path()))
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise LiteRtProfileError(f"libLiteRt.so exports no {name}: this ai-edge-litert's C API is not "
                                         "the one md-export profiles with (2.3.0)") from None
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self.strdup, self.free = libc.strdup, libc.free
        self.strdup.restype, self.strdup.argtypes = _p, [_str]
        self.free.restype, self.free.argtypes = None, [_p]
        self.free_address = ctypes.cast(libc.free, _p).value  # the opaque payloads' destructor

    def __call__(self, name: str, *args) -> None:
        status = getattr(self, name)(*args)
        if status != _OK:
            raise LiteRtProfileError(f"LiteRT {name} failed (status {status})")


def _record_layout(raw: bytes, count: int) -> int:
    """Bytes per ProfiledEventData, from how far GetProfilerEvents wrote into a sentinel-filled
    buffer: 56 + 2 x sizeof(MemoryUsage); the last record may leave its 8 bytes of padding unwritten."""
    written = len(raw.rstrip(bytes([_SENTINEL])))
    strides = [56 + 2 * m for m in (16, 24, 32, 40, 48) if count * (56 + 2 * m) - 8 <= written <= count * (56 + 2 * m)]
    if len(strides) != 1:
        raise LiteRtProfileError(f"LiteRT profiler events are in no known layout ({written} bytes for {count} events)")
    return strides[0]


def _read_events(api: _Api, profiler, stride: int | None) -> tuple[list[tuple[str, int, int]], int]:
    """(tag, event type, elapsed us) of every event so far, and the record size."""
    count = _int(0)
    api("LiteRtGetNumProfilerEvents", profiler, ctypes.byref(count))
    if count.value <= 0:
        return [], stride
    capacity = (count.value + 1) * 512
    buffer = (ctypes.c_ubyte * capacity)()
    ctypes.memset(buffer, _SENTINEL, capacity)
    api("LiteRtGetProfilerEvents", profiler, count.value, buffer)
    raw = bytes(buffer)
    if stride is None:
        if count.value < 2:
            raise LiteRtProfileError("LiteRT profiled fewer than 2 events: cannot check their layout")
        stride = _record_layout(raw, count.value)
    events = []
    for i in range(count.value):
        at = i * stride
        tag = int.from_bytes(raw[at:at + 8], "little")
        kind = int.from_bytes(raw[at + 8:at + 12], "little", signed=True)
        elapsed = int.from_bytes(raw[at + 24:at + 32], "little")
        events.append((ctypes.string_at(tag).decode("utf-8", "replace") if tag else "", kind, elapsed))
    return events, stride


def _leaf(tag: str, kind: int) -> bool | None:
    """Delegated (True) or builtin (False) operator; None for what is not one (the delegate's
    own node, whose time holds its operators', and runtime instrumentation)."""
    if kind in (_DELEGATE_OPERATOR, _DELEGATE_PROFILED_OPERATOR):
        return True
    if kind == _OPERATOR and "delegate" not in tag.lower():
        return False
    return None


def profile_tflite(path: str | Path, signature: str | None = None, runs: int = 3, warmup: int = 1,
                   threads: int = 2, seed: int = 0) -> Profile:
    """Warm-up runs, then `runs` profiled runs of one signature on seeded random inputs (op times
    do not depend on the values; token ids are drawn below 1000)."""
    api = _Api()
    rng = np.random.default_rng(seed)
    env, model, options, compiled = _p(), _p(), _p(), _p()
    buffers: list[int] = []
    try:
        no_options = (ctypes.c_ubyte * 64)()
        api("LiteRtCreateEnvironment", 0, ctypes.cast(no_options, _p), ctypes.byref(env))
        api("LiteRtCreateModelFromFile", env, str(path).encode(), ctypes.byref(model))
        index, handle, key = _signature(api, model, signature)
        api("LiteRtCreateOptions", ctypes.byref(options))
        api("LiteRtSetOptionsHardwareAccelerators", options, _CPU)
        _add_toml(api, options, "runtime_options_string", "enable_profiling = true\n")
        _add_toml(api, options, "xnnpack", f"num_threads = {int(threads)}\n")
        api("LiteRtCreateCompiledModel", env, model, options, ctypes.byref(compiled))
        profiler = _p()
        api("LiteRtCompiledModelGetProfiler", compiled, ctypes.byref(profiler))
        if not profiler.value:
            raise LiteRtProfileError("LiteRT compiled the model without a profiler (profiling option not taken)")
        inputs = _buffers(api, env, compiled, handle, index, True, rng, buffers)
        outputs = _buffers(api, env, compiled, handle, index, False, rng, buffers)
        ins, outs = (_p * len(inputs))(*inputs), (_p * max(len(outputs), 1))(*outputs)

        def run() -> float:
            import time

            start = time.perf_counter()
            api("LiteRtRunCompiledModel", compiled, index, len(inputs), ins, len(outputs), outs)
            return (time.perf_counter() - start) * 1e3

        for _ in range(warmup):
            run()
        api("LiteRtResetProfiler", profiler)
        api("LiteRtStartProfiler", profiler)
        events, walls, seen, stride = [], [], 0, None
        for number in range(runs):
            walls.append(run())
            so_far, stride = _read_events(api, profiler, stride)
            if len(so_far) < seen:
                raise LiteRtProfileError("LiteRT's profiler dropped events (its buffer wrapped): use fewer --runs")
            for tag, kind, elapsed_us in so_far[seen:]:
                delegated = _leaf(tag, kind)
                if delegated is not None:
                    events.append(OpEvent(tag, number, elapsed_us / 1e3, delegated))
            seen = len(so_far)
        api("LiteRtStopProfiler", profiler)
        if not events:
            raise LiteRtProfileError(f"LiteRT profiled no operator of {Path(path).name}")
        return Profile(events, walls, key)
    finally:
        for buffer in buffers:
            api.LiteRtDestroyTensorBuffer(buffer)
        if compiled.value:
            api.LiteRtDestroyCompiledModel(compiled)  # owns the profiler
        if options.value:
            api.LiteRtDestroyOptions(options)  # owns the opaque options
        if model.value:
            api.LiteRtDestroyModel(model)
        if env.value:
            api.LiteRtDestroyEnvironment(env)


def _signature(api: _Api, model, wanted: str | None) -> tuple[int, object, str]:
    count = _size(0)
    api("LiteRtGetNumModelSignatures", model, ctypes.byref(count))
    found = []
    for i in range(count.value):
        handle, key = _p(), _str()
        api("LiteRtGetModelSignature", model, i, ctypes.byref(handle))
        api("LiteRtGetSignatureKey", handle, ctypes.byref(key))
        found.append((i, handle, key.value.decode()))
    if not found:
        raise LiteRtProfileError("the model has no signature to run")
    if wanted is None:
        return found[0]
    for item in found:
        if item[2] == wanted:
            return item
    raise LiteRtProfileError(f"signature {wanted!r} is not in the model (it has {[k for _, _, k in found]})")


def _add_toml(api: _Api, options, identifier: str, toml: str) -> None:
    payload = api.strdup(toml.encode())
    opaque = _p()
    status = api.LiteRtCreateOpaqueOptions(identifier.encode(), payload, api.free_address, ctypes.byref(opaque))
    if status != _OK:
        api.free(payload)
        raise LiteRtProfileError(f"LiteRT LiteRtCreateOpaqueOptions({identifier}) failed (status {status})")
    status = api.LiteRtAddOpaqueOptions(options, opaque)  # the options own it from here
    if status != _OK:
        api.LiteRtDestroyOpaqueOptions(opaque)
        raise LiteRtProfileError(f"LiteRT LiteRtAddOpaqueOptions({identifier}) failed (status {status})")


def _buffers(api: _Api, env, compiled, signature, index: int, inputs: bool, rng, owned: list[int]) -> list[int]:
    count = _size(0)
    api("LiteRtGetNumSignatureInputs" if inputs else "LiteRtGetNumSignatureOutputs", signature, ctypes.byref(count))
    made = []
    for i in range(count.value):
        tensor, requirements, buffer = _p(), _p(), _p()
        blob = (ctypes.c_ubyte * _TYPE_BLOB)()
        api("LiteRtGetSignatureInputTensorByIndex" if inputs else "LiteRtGetSignatureOutputTensorByIndex",
            signature, i, ctypes.byref(tensor))
        api("LiteRtGetRankedTensorType", tensor, blob)
        api("LiteRtGetCompiledModelInputBufferRequirements" if inputs
            else "LiteRtGetCompiledModelOutputBufferRequirements", compiled, index, i, ctypes.byref(requirements))
        api("LiteRtCreateManagedTensorBufferFromRequirements", env, blob, requirements, ctypes.byref(buffer))
        owned.append(buffer.value)
        made.append(buffer.value)
        if inputs:
            _fill(api, buffer, bytes(blob), rng)
    return made


def _fill(api: _Api, buffer, blob: bytes, rng) -> None:
    element = int.from_bytes(blob[0:4], "little", signed=True)
    rank = int.from_bytes(blob[4:8], "little") & 0x7F  # a 7-bit field
    if element not in _DTYPES or not 0 < rank <= _MAX_RANK:
        raise LiteRtProfileError(f"an input of element type {element}, rank {rank}: not one md-export can fill")
    shape = [max(1, int.from_bytes(blob[8 + 4 * k:12 + 4 * k], "little", signed=True)) for k in range(rank)]
    dtype = np.dtype(_DTYPES[element])
    if dtype.kind in "iu":
        array = rng.integers(0, 1000, size=shape).astype(dtype)
    elif dtype.kind == "b":
        array = rng.integers(0, 2, size=shape).astype(dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    size = _size(0)
    api("LiteRtGetTensorBufferSize", buffer, ctypes.byref(size))
    if array.nbytes > size.value:
        raise LiteRtProfileError(f"an input of shape {shape} needs {array.nbytes} bytes; LiteRT's buffer has {size.value}")
    address = _p()
    api("LiteRtLockTensorBuffer", buffer, ctypes.byref(address), _LOCK_WRITE)
    try:
        ctypes.memmove(address.value, array.ctypes.data, array.nbytes)
    finally:
        api("LiteRtUnlockTensorBuffer", buffer)


def environment_note() -> str:
    return f"LiteRT C API profiler ({library_path().parent.name} {_wheel_version()}), XNNPACK on: what a CompiledModel runs"


def _wheel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "?"


__all__ = ["LiteRtProfileError", "OpEvent", "Profile", "profile_tflite", "library_path", "environment_note"]
