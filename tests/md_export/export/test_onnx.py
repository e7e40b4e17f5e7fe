import numpy as np
import torch
from torch import nn

from md_export import export_model
from md_export.export import onnx as onnx_backend
from md_export.export.manifest import read_manifest
from md_export.parity import check_directory
from md_export.runtimes import open_artifact


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1)
        self.norm = nn.GroupNorm(4, 16)

    def forward(self, latent):
        return self.norm(self.conv(latent)).relu()


def test_dynamic_batch_axis_runs_other_batch_sizes(tmp_path):
    torch.manual_seed(0)
    module = Small().eval()
    export_model(module, {"latent": torch.randn(1, 4, 8, 8)}, formats=["onnx"], out_dir=tmp_path, dynamic_batch=True)
    entry = read_manifest(tmp_path)["artifacts"][0]
    assert entry["dynamic_batch"] is True and entry["file"] == "model.fp32.onnx"
    runner = open_artifact(tmp_path, entry)
    batch = torch.randn(3, 4, 8, 8)
    out = runner.run({"latent": batch.numpy()})["output"]
    with torch.no_grad():
        expected = module(batch).numpy()
    assert out.shape == (3, 16, 8, 8)
    assert np.abs(out - expected).max() < 1e-4  # fp32, another engine


def test_models_past_the_protobuf_limit_use_one_external_data_file(tmp_path, monkeypatch):
    # a 2 GB model has no place in a unit test: lower the limits instead, same code paths (fp32:
    # the dynamo exporter every network over DYNAMO_FROM_BYTES takes; fp16: the converter's save)
    monkeypatch.setattr(onnx_backend, "TWO_GB", 1000)
    monkeypatch.setattr(onnx_backend, "DYNAMO_FROM_BYTES", 1000)
    export_model(Small(), {"latent": torch.randn(1, 4, 8, 8)}, formats=["onnx"], out_dir=tmp_path,
                 precisions=["fp32", "fp16"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "model.fp32.onnx.data" in names and "model.fp16.onnx.data" in names
    entry = next(e for e in read_manifest(tmp_path)["artifacts"] if e["precision"] == "fp32")
    assert entry["size_bytes"] > (tmp_path / "model.fp32.onnx").stat().st_size  # counts the .data file
    assert check_directory(tmp_path).passed

