"""Run one heavy stage in a child process, so its memory goes back to the OS when it ends.

The main job's stages each peak at several GB on the full preset (the LiteRT conversion of the
UNet 8.1 GB, onnxruntime's static quantization of it 8.9 GB), and in one process the allocator
kept what they had used: README command 1 peaked at 14.8 GB. Each stage in its own spawned child
costs an interpreter start and the imports (a few seconds) and leaves the job's peak at the
largest single stage.

    parent: run_isolated(fn, *args, progress=p) ──spawn──> child: fn(*args, progress=relay)
            p(message) <────────── ("progress", message) ─┘
            return value <─────── ("result", value) / raise <── ("error", exception)
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import threading
from typing import Any, Callable

from .errors import MdExportError


class IsolatedStageError(MdExportError):
    """The child process of a stage ended without a result (killed, out of memory, crashed)."""


class _Relay:
    """The child's progress callback: forwards each message to the parent. Stages that also pass
    counts (`progress(done, total, message)`) send their message, the last argument."""

    def __init__(self, channel):
        self._channel = channel

    def __call__(self, *parts) -> None:
        self._channel.put(("progress", str(parts[-1])))


def _child(channel, fn: Callable, args: tuple, kwargs: dict, with_progress: bool) -> None:
    try:
        if with_progress:
            kwargs = dict(kwargs, progress=_Relay(channel))
        channel.put(("result", fn(*args, **kwargs)))
    except BaseException as exc:  # handed to the parent, which raises it there
        try:
            channel.put(("error", exc))
        except Exception:  # an exception that does not pickle: its text still goes back
            channel.put(("error", MdExportError(f"{type(exc).__name__}: {exc}")))


LOW_DISK_BYTES = 2 * 2**30


def low_disk_note(paths: tuple[str, ...] | None = None) -> str:
    """A converter that cannot write exits without a word (the LiteRT conversion of the UNet ended
    with status 1 and no message on a disk with 400 KB left): say so when the disk is nearly full."""
    import os
    import shutil
    import tempfile

    notes = []
    for path in paths or (os.getcwd(), tempfile.gettempdir()):
        try:
            free = shutil.disk_usage(path).free
        except OSError:
            continue
        if free < LOW_DISK_BYTES and not any(path in note for note in notes):
            notes.append(f"{path} has {free / 2**20:.1f} MB free")
    return f"; the disk is nearly full ({', '.join(notes)})" if notes else ""


def run_isolated(fn: Callable, *args, progress: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, **kwargs) -> Any:
    """`fn(*args, **kwargs)` in a spawned child; `progress` (if given) receives the messages of
    the child's `progress=` callback. `fn`, its arguments, result and exceptions must pickle.
    `stop`: for a stage waited on in a thread beside other stages (the main job's export); once
    set, the child is ended and IsolatedStageError raised."""
    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    # Not a daemon: a stage may isolate its own phases in turn (onnxruntime's static quantization
    # of a large model); the parent still ends the child on any error or interrupt (below).
    child = context.Process(target=_child, args=(channel, fn, args, kwargs, progress is not None), daemon=False)
    child.start()
    try:
        while True:
            if stop is not None and stop.is_set():
                raise IsolatedStageError(f"{getattr(fn, '__name__', fn)} stopped: a stage beside it failed")
            try:
                kind, payload = channel.get(timeout=0.5)
            except queue_module.Empty:
                if not child.is_alive():
                    child.join()
                    raise IsolatedStageError(
                        f"{getattr(fn, '__name__', fn)} ended without a result (exit code {child.exitcode}; "
                        f"-9 is usually the out-of-memory killer){low_disk_note()}") from None
                continue
            if kind == "progress":
                if progress is not None:
                    progress(payload)
            elif kind == "error":
                child.join()
                raise payload
            else:
                child.join()
                return payload
    except BaseException:
        if child.is_alive():
            child.terminate()
            child.join()
        raise
