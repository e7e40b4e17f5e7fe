import numpy as np
import onnx
import pytest
import torch
from torch import nn

from md_export import export_model
from md_export.export import onnx as onnx_backend
from md_export.export.onnx import gated_projections_split
from md_export.export.manifest import read_manifest
from md_export.parity import check_directory
from md_export.models.attention import GatedFeedForward
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


class FeedForward(nn.Module):
    def __init__(self, activation: str):
        super().__init__()
        self.ff = GatedFeedForward(32, 4, activation)

    def forward(self, tokens):
        return self.ff(tokens)


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_gated_projections_split_gives_the_same_output_and_restores_the_module(activation):
    torch.manual_seed(0)
    ff = GatedFeedForward(32, 4, activation).eval()
    keys = sorted(ff.state_dict())
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        expected = ff(x)
        with gated_projections_split([ff, ff]) as split:  # one module, listed twice: split once
            got = ff(x)
    assert split == 1
    # two GEMMs over the same rows, against one over both: fp32 rounding only (outputs ~0.3)
    assert (got - expected).abs().max() <= 1e-6
    assert "forward" not in vars(ff) and "forward" not in vars(ff.proj) and not hasattr(ff.proj, "value_weight")
    assert sorted(ff.state_dict()) == keys  # checkpoints keep one `proj`


@pytest.mark.parametrize("dynamo", [False, True])
def test_the_onnx_graph_runs_gated_projections_as_two_gemms_without_a_split(tmp_path, monkeypatch, dynamo):
    if dynamo:
        monkeypatch.setattr(onnx_backend, "DYNAMO_FROM_BYTES", 0)  # the path of the 1.56 GB UNet
    torch.manual_seed(0)
    module = FeedForward("gelu").eval()
    export_model(module, {"tokens": torch.randn(1, 10, 32)}, formats=["onnx"], out_dir=tmp_path)
    entry = read_manifest(tmp_path)["artifacts"][0]
    graph = onnx.load(str(tmp_path / entry["file"])).graph
    ops = [n.op_type for n in graph.node]
    assert "Split" not in ops and "Slice" not in ops, ops
    assert sum(op in ("MatMul", "Gemm") for op in ops) == 3, ops  # value, gate, out
    matmuls = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    # both halves in proj's scope: node names keep naming a module of the network
    assert sum("proj" in name.replace("/", ".").split(".") for name in matmuls) == 2, matmuls
    assert check_directory(tmp_path).passed  # fp32: >= 60 dB against the torch module
    assert not hasattr(module.ff.proj, "value_weight")
