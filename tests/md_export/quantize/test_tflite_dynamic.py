"""tflite-dynamic-int8 keeps depthwise convs float: XNNPACK has no dynamic-range depthwise kernel,
so an int8-weight depthwise conv would leave the delegate for TFLite's builtin hybrid kernel."""

import numpy as np
import torch

from md_export import export_model
from md_export.cli import main
from md_export.export.manifest import read_manifest
from md_export.quantize.kernels import tflite_kernel_report


class SeparableBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.depthwise = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.pointwise = torch.nn.Conv2d(64, 128, 1)
        self.regular = torch.nn.Conv2d(128, 128, 3, padding=1)

    def forward(self, image):
        return self.regular(torch.relu(self.pointwise(self.depthwise(image))))


def test_depthwise_convs_stay_float_and_the_rest_is_int8(tmp_path):
    torch.manual_seed(0)
    fp32 = tmp_path / "fp32"
    export_model(SeparableBlock().eval(), {"image": torch.randn(1, 64, 16, 16)}, formats=["tflite"], out_dir=fp32,
                 precisions=["fp32"])
    out = tmp_path / "dynamic"
    assert main(["quantize", "--artifacts", str(fp32), "--recipe", "tflite-dynamic-int8", "--out", str(out)]) == 0
    entry = read_manifest(out)["artifacts"][0]
    report = tflite_kernel_report(out / entry["file"])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(out / entry["file"]))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    weight_dtypes = {op["op_name"]: tensors[op["inputs"][1]]["dtype"] for op in interpreter._get_ops_details()
                     if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")}
    assert weight_dtypes["DEPTHWISE_CONV_2D"] == np.float32, weight_dtypes
    assert weight_dtypes["CONV_2D"] == np.int8, weight_dtypes
    assert report.quantized["Conv"] == report.total["Conv"] - 1  # the depthwise one is the float island
