"""The ONNX and LiteRT exports run a gated feed-forward's projection as two matmuls
(export/split_projections.py): no copy of its output into halves, the same numbers, the module
restored, node names that still name modules of the network."""

import onnx
import pytest
import torch
from torch import nn

from md_export import export_model
from md_export.export import onnx as onnx_backend
from md_export.export.manifest import read_manifest
from md_export.export.split_projections import gated_projections_split
from md_export.models.attention import GatedFeedForward
from md_export.parity import check_directory


class FeedForward(nn.Module):
    def __init__(self, activation: str = "gelu"):
        super().__init__()
        self.ff = GatedFeedForward(32, 4, activation)

    def forward(self, tokens):
        return self.ff(tokens)


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_the_split_gives_the_same_output_and_restores_the_module(activation):
    torch.manual_seed(0)
    ff = GatedFeedForward(32, 4, activation).eval()
    keys = sorted(ff.state_dict())
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        expected = ff(x)
        with gated_projections_split([ff, ff]) as split:  # one module, listed twice: split once
            got = ff(x)
    assert split == 1
    # two GEMMs over the same rows against one over both: fp32 rounding only (outputs ~0.3)
    assert (got - expected).abs().max() <= 1e-6
    assert "halves" not in vars(ff) and "forward" not in vars(ff.proj) and not hasattr(ff.proj, "value_weight")
    assert sorted(ff.state_dict()) == keys  # checkpoints keep one `proj`


def test_the_whole_weight_is_empty_inside_and_put_back_bit_for_bit():
    torch.manual_seed(0)
    ff = GatedFeedForward(32, 4, "silu").eval()
    weight, bias = ff.proj.weight.detach().clone(), ff.proj.bias.detach().clone()
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        expected = ff(x)
        with gated_projections_split([ff]):
            assert ff.proj.weight.numel() == 0 and ff.proj.bias.numel() == 0  # the converter sees halves only
            assert torch.equal(torch.cat([ff.proj.value_weight, ff.proj.gate_weight]), weight)
        assert torch.equal(ff.proj.weight, weight) and torch.equal(ff.proj.bias, bias)
        assert torch.equal(ff(x), expected)


def test_weights_released_inside_stay_released():
    from md_export.export.driver import release_weights

    ff = GatedFeedForward(32, 4, "gelu")
    with gated_projections_split([ff]):
        release_weights([ff])  # what the LiteRT export does before writing the flatbuffer
    assert ff.proj.weight.numel() == 0 and not hasattr(ff.proj, "value_weight")


@pytest.mark.parametrize("dynamo", [False, True])
def test_the_onnx_graph_has_two_matmuls_in_projs_scope_and_no_split(tmp_path, monkeypatch, dynamo):
    if dynamo:
        monkeypatch.setattr(onnx_backend, "DYNAMO_FROM_BYTES", 0)  # the path of the 1.56 GB UNet
    torch.manual_seed(0)
    module = FeedForward().eval()
    export_model(module, {"tokens": torch.randn(1, 10, 32)}, formats=["onnx"], out_dir=tmp_path)
    entry = read_manifest(tmp_path)["artifacts"][0]
    graph = onnx.load(str(tmp_path / entry["file"])).graph
    ops = [n.op_type for n in graph.node]
    assert "Split" not in ops and "Slice" not in ops, ops
    matmuls = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    assert len(matmuls) == 3, ops  # value, gate, out
    # both halves in proj's scope: node names keep naming a module of the network
    assert sum("proj" in name.replace("/", ".").split(".") for name in matmuls) == 2, matmuls
    assert check_directory(tmp_path).passed  # fp32: >= 60 dB against the torch module
    assert not hasattr(module.ff.proj, "value_weight")


def test_the_litert_graph_has_three_fully_connected_ops_and_no_slice(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    torch.manual_seed(0)
    module = FeedForward().eval()
    export_model(module, {"tokens": torch.randn(1, 10, 32)}, formats=["tflite"], out_dir=tmp_path,
                 precisions=["fp32"])
    entry = read_manifest(tmp_path)["artifacts"][0]
    ops = [op["op_name"] for op in Interpreter(model_path=str(tmp_path / entry["file"]))._get_ops_details()]
    assert not any("SLICE" in op or op == "SPLIT" for op in ops), ops
    assert ops.count("FULLY_CONNECTED") == 3, ops
    assert check_directory(tmp_path).passed  # fp32 against the torch module
    assert not hasattr(module.ff.proj, "value_weight")
