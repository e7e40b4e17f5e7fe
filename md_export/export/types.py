"""What an exporter takes (a module + named sample inputs) and what it declares (tolerances)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import MdExportError

FORMATS = ("onnx", "coreml", "tflite")
PRECISIONS = ("fp32", "fp16")
EXTENSIONS = {"onnx": ".onnx", "coreml": ".mlpackage", "tflite": ".tflite"}


@dataclass
class ExportTarget:
    """One network at one input shape: what every backend converts."""

    component: str  # artifact name stem: "unet", "text_encoder", or any name for a user's module
    module: nn.Module
    sample_inputs: dict[str, torch.Tensor]  # ordered as forward()'s positional arguments
    output_names: tuple[str, ...]
    resolution: int | None = None  # image side the shapes correspond to (None: not an image model)

    @property
    def tag(self) -> str:
        return self.component if self.resolution is None else f"{self.component}_{self.resolution}"

    def args(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.sample_inputs.values())


@dataclass(frozen=True)
class Tolerance:
    """A parity gate. Every bound that is set must hold; `max_abs_rel` scales with max(1, max|ref|)."""

    min_psnr_db: float
    min_cosine: float
    max_abs_rel: float | None = None

    def violations(self, metrics: dict[str, float]) -> list[str]:
        failures = []
        if metrics["psnr_db"] < self.min_psnr_db:
            failures.append(f"PSNR {metrics['psnr_db']:.2f} dB < {self.min_psnr_db} dB")
        if metrics["cosine"] < self.min_cosine:
            failures.append(f"cosine {metrics['cosine']:.6f} < {self.min_cosine}")
        if self.max_abs_rel is not None:
            bound = self.max_abs_rel * max(1.0, metrics["ref_max_abs"])
            if metrics["max_abs"] > bound:
                failures.append(f"max abs error {metrics['max_abs']:.3g} > {bound:.3g}")
        return failures

    def as_dict(self) -> dict:
        return {"min_psnr_db": self.min_psnr_db, "min_cosine": self.min_cosine, "max_abs_rel": self.max_abs_rel}

    @classmethod
    def from_dict(cls, data: dict) -> "Tolerance":
        return cls(data["min_psnr_db"], data["min_cosine"], data.get("max_abs_rel"))


@dataclass(frozen=True)
class ToleranceTable:
    """Tolerances per (component, precision); component "*" is the default for any network."""

    entries: dict[tuple[str, str], Tolerance] = field(default_factory=dict)

    def lookup(self, component: str, precision: str) -> Tolerance:
        for key in ((component, precision), ("*", precision)):
            if key in self.entries:
                return self.entries[key]
        raise KeyError(f"no tolerance declared for {component} at {precision}")


class ExportError(MdExportError):
    """A conversion failed; the message names the format, the network and the converter's reason."""
