"""LiteRT export computes GroupNorm from per-channel moments (export/tflite.py), so the converter
keeps the norm channels-last instead of wrapping it in two full-size transposes."""

import numpy as np
import pytest
import torch
from torch import nn

from md_export import export_model
from md_export.export.manifest import read_manifest
from md_export.export.tflite import group_norms_channels_last


@pytest.mark.parametrize("groups,channels,affine", [(32, 512, True), (8, 64, False), (1, 16, True)])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_moments_give_group_norms_output(groups, channels, affine, offset):
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=affine)
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    x = torch.randn(2, channels, 16, 16) * 3 + offset
    expected = norm(x)
    with group_norms_channels_last([norm]) as switched:
        got = norm(x)
    assert switched == 1
    assert "forward" not in vars(norm)  # restored: the class's forward again
    # E[x^2] - E[x]^2 in fp32, outputs of magnitude 4-12: measured at most 1.9e-6 with zero-mean
    # channels, 1.1e-4 to 2.1e-4 with every channel's mean at 50 (cancellation; variance 9)
    assert (got - expected).abs().max() <= (2e-5 if offset == 0 else 1e-3), (got - expected).abs().max()


class ConvNormConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(8, 64, 3, padding=1)
        self.norm = nn.GroupNorm(8, 64)
        self.conv_out = nn.Conv2d(64, 64, 3, padding=1)

    def forward(self, image):
        return self.conv_out(nn.functional.silu(self.norm(self.conv_in(image))))


def test_litert_graph_has_no_full_size_transpose_around_the_norm(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    torch.manual_seed(0)
    export_model(ConvNormConv().eval(), {"image": torch.randn(1, 8, 32, 32)}, formats=["tflite"], out_dir=tmp_path,
                 precisions=["fp32"])
    entry = read_manifest(tmp_path)["artifacts"][0]
    interpreter = Interpreter(model_path=str(tmp_path / entry["file"]))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    full_size = [op for op in interpreter._get_ops_details() if op["op_name"] == "TRANSPOSE"
                 and np.prod(tensors[op["outputs"][0]]["shape"]) >= 32 * 32]
    # the graph's NCHW input and output are transposed once each; nn.GroupNorm added two more
    assert len(full_size) == 2, [tensors[op["outputs"][0]]["shape"] for op in full_size]
