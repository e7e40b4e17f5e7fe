"""7-bit int8 weights exactly where onnxruntime's x86 kernels need them (x86 without VNNI), said in
the manifest; forced either way with MD_EXPORT_REDUCE_RANGE."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from md_export import export_model
from md_export.cli import main
from md_export.export.manifest import read_manifest
from md_export.quantize import onnx_recipes


class ConvMatMul(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.linear = torch.nn.Linear(64, 64)

    def forward(self, image, tokens):
        return self.conv(image), self.linear(tokens)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv_matmul")
    torch.manual_seed(0)
    export_model(ConvMatMul(), {"image": torch.randn(1, 16, 8, 8), "tokens": torch.randn(1, 64)},
                 formats=["onnx"], out_dir=out, precisions=["fp32"])
    return out


def _int8_weight_range(path) -> tuple[int, int]:
    model = onnx.load(str(path))
    values = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert values, "no int8 weights in the quantized model"
    return min(int(v.min()) for v in values), max(int(v.max()) for v in values)


@pytest.mark.parametrize("forced, reduced", [("1", True), ("0", False)])
def test_forced_weight_range_is_used_and_recorded(exported, tmp_path, monkeypatch, forced, reduced):
    monkeypatch.setenv(onnx_recipes.REDUCE_RANGE_ENV, forced)
    out = tmp_path / "q"
    assert main(["quantize", "--artifacts", str(exported), "--recipe", "onnx-dynamic-int8", "--out", str(out),
                 "--no-gate", "--speed-runs", "0"]) == 0
    entry = read_manifest(out)["artifacts"][0]
    assert entry["int8_weights"]["reduce_range"] is reduced
    # per-channel symmetric: each channel's largest weight maps to the end of its range, 7 or 8 bits
    assert _int8_weight_range(out / entry["file"]) == ((-64, 64) if reduced else (-127, 127))


@pytest.mark.parametrize("machine, flags, reduced", [
    ("x86_64", ("avx2", "fma"), True),                 # Zen 3: vpmaddubsw, saturating int16 pair sums
    ("x86_64", ("avx2", "avx512_vnni"), False),        # Zen 4 / Ice Lake: vpdpbusd adds in int32
    ("x86_64", ("avx2", "avx_vnni"), False),           # Alder Lake
    ("aarch64", ("asimd", "asimddp"), False),          # ARM: no such kernel
])
def test_host_decides(monkeypatch, machine, flags, reduced):
    monkeypatch.delenv(onnx_recipes.REDUCE_RANGE_ENV, raising=False)
    monkeypatch.setattr("platform.machine", lambda: machine)
    monkeypatch.setattr("md_export.runtimes.ort_cache.cpu_isa", lambda: tuple(sorted(flags)))
    decision = onnx_recipes.reduced_weight_range()
    assert decision["reduce_range"] is reduced, decision
    assert decision["reason"]


def test_bad_override_is_refused(monkeypatch):
    monkeypatch.setenv(onnx_recipes.REDUCE_RANGE_ENV, "yes")
    with pytest.raises(ValueError, match="must be 0 or 1"):
        onnx_recipes.reduced_weight_range()


def test_float_recipes_carry_no_weight_range(exported, tmp_path):
    out = tmp_path / "fp16"
    assert main(["quantize", "--artifacts", str(exported), "--recipe", "onnx-fp16", "--out", str(out),
                 "--no-gate", "--speed-runs", "0"]) == 0
    assert "int8_weights" not in read_manifest(out)["artifacts"][0]
