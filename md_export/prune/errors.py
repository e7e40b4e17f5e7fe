"""Errors of pruning and training: bad input, reported as one line by the CLI."""

from __future__ import annotations

from ..errors import MdExportError


class PruneError(MdExportError):
    """A pruning / distillation / training request that cannot work (bad amount, wrong model ...)."""
