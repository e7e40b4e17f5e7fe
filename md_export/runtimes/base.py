from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..errors import MdExportError


class ArtifactLoadError(MdExportError):
    """A model file that a runtime cannot load: corrupt, truncated, or not what it claims to be."""


class RuntimeUnavailableError(MdExportError):
    """The runtime cannot run on this machine (Core ML off macOS)."""


class InputMismatchError(MdExportError, ValueError):
    """Feeds that do not match the model's inputs (a missing name, a wrong shape)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "int64", ...


class Runner(abc.ABC):
    """A loaded network: `run({"name": array}) -> {"name": array}`."""

    runtime: str = "abstract"
    # Set by each implementation's constructor from what its runtime reports.
    _inputs: tuple[TensorSpec, ...] = ()
    _outputs: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Fail on a missing input or a wrong shape before the runtime does, with the names in the message."""
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InputMismatchError(f"{self.runtime} runner: missing input {spec.name!r}; "
                                         f"the model takes {[s.name for s in self.inputs]}")
            shape = tuple(feeds[spec.name].shape)
            if len(shape) != len(spec.shape) or any(s != e for s, e in zip(shape, spec.shape) if e > 0):
                raise InputMismatchError(f"{self.runtime} runner: input {spec.name!r} has shape {shape}, "
                                         f"the model takes {spec.shape}")
