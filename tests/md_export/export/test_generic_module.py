"""The export API takes any nn.Module, not only our presets."""

import pytest
import torch
from torch import nn

from md_export import export_model
from md_export.parity import check_directory


class TwoInputBlock(nn.Module):
    """Not one of ours: named inputs that are not forward()'s first names, two outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8)
        self.proj = nn.Linear(5, 8)

    def forward(self, pixels, conditioning):
        h = torch.relu(self.norm(self.conv(pixels)))
        h = h + self.proj(conditioning)[:, :, None, None]
        return h, h.mean(dim=(2, 3))


def test_user_module_exports_to_every_format_and_passes_parity(tmp_path):
    torch.manual_seed(0)
    module = TwoInputBlock()
    sample = {"image": torch.randn(1, 3, 16, 16), "cond": torch.randn(1, 5)}
    entries = export_model(module, sample, formats=["onnx", "tflite", "coreml"], out_dir=tmp_path, name="block")
    assert {e["format"] for e in entries} == {"onnx", "tflite", "coreml"}
    assert all(e["component"] == "block" for e in entries)
    assert entries[0]["outputs"][0]["name"] == "output_0" and entries[0]["outputs"][1]["name"] == "output_1"
    report = check_directory(tmp_path)
    assert report.passed, [(a.file, a.violations) for a in report.artifacts]
    runnable = [a for a in report.artifacts if a.status == "passed"]
    assert len(runnable) == 2 and all(len(a.outputs) == 2 for a in runnable)


class UsesSVD(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x).S


def test_unsupported_op_is_a_clear_export_error(tmp_path):
    from md_export.export import ExportError

    with pytest.raises(ExportError, match="onnx export of model failed.*svd"):
        export_model(UsesSVD(), {"x": torch.randn(1, 4, 4)}, formats=["onnx"], out_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written
