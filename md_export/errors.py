"""Errors the CLI turns into one clear line on stderr and a non-zero exit (never a traceback)."""

from __future__ import annotations


class MdExportError(Exception):
    """Base of every user-facing error: bad input, not a bug."""


class BadArgumentError(MdExportError):
    """A flag value that cannot work (steps < 1, resolution not divisible, ...)."""


class OutputError(MdExportError):
    """The requested output cannot be written."""
