"""LiteRT export computes GroupNorm from per-channel moments (export/tflite.py), so the converter
keeps the norm channels-last instead of wrapping it in two full-size transposes."""

import numpy as np
import torch
from torch import nn

from md_export import export_model
from md_export.export.manifest import read_manifest


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
