"""SIGTERM (what `timeout` and CI send) handled like Ctrl-C, so a stopped run still writes what it
measured instead of dying silently."""

from __future__ import annotations

import signal
from contextlib import contextmanager


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
