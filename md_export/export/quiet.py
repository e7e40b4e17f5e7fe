"""Silence converters while they run: coremltools, litert-torch and ai-edge-quantizer print
per-pass progress bars, per-tensor warnings and C++ log lines that would bury our own progress.
Both the Python streams and the process's file descriptors 1 and 2 are redirected (the C++ parts
write straight to the descriptors)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def _descriptors_to_file():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):  # no real descriptors (embedded interpreters): Python-level only
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def quiet():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), _descriptors_to_file():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
