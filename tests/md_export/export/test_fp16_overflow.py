"""The fp16 overflow check: values past the fp16 range keep their nodes in fp32."""

import numpy as np
import pytest
import torch
from torch import nn

from md_export import export_model
from md_export.export import onnx as onnx_backend
from md_export.export.fp16_overflow import FP16_MAX, scan
from md_export.export.manifest import read_manifest


class Overflowing(nn.Module):
    """An activation of ~1e5 in the middle (a residual stream gone large), scaled back down after."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(8, 8)
        self.down = nn.Linear(8, 8)

    def forward(self, x):
        large = torch.relu(self.up(x) * 1e5)
        return self.down(large * 1e-5)


def _exported(tmp_path):
    torch.manual_seed(0)
    module = Overflowing().eval()
    sample = torch.randn(2, 8)
    export_model(module, {"x": sample}, formats=["onnx"], out_dir=tmp_path / "fp32")
    with torch.no_grad():
        expected = module(sample).numpy()
    return tmp_path / "fp32" / "model.fp32.onnx", {"x": sample.numpy()}, expected


def _run(path, feed):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_scan_names_the_overflowing_node_and_its_consumer(tmp_path):
    fp32, feed, _ = _exported(tmp_path)
    result = scan(fp32, [feed])
    assert result.tensors and max(result.tensors.values()) > FP16_MAX
    # the 1e5 constant (itself past fp16), the Mul making the large values, the Relu and Mul reading them
    assert set(result.blocked_nodes) == {"/Constant", "/Mul", "/Relu", "/Mul_1"}, result.blocked_nodes


def test_plain_fp16_overflows_and_the_checked_conversion_does_not(tmp_path):
    fp32, feed, expected = _exported(tmp_path)
    onnx_backend.to_fp16(fp32, tmp_path / "plain.onnx")
    plain = _run(tmp_path / "plain.onnx", feed)
    # the failure the check exists for: inf/NaN, or (if the runtime fused the scale away) wrong values
    assert not np.all(np.isfinite(plain)) or np.abs(plain - expected).max() > 0.1 * np.abs(expected).max()
    overflow = onnx_backend.to_fp16(fp32, tmp_path / "checked.onnx", scan_feeds=[feed])
    out = _run(tmp_path / "checked.onnx", feed)
    assert overflow.blocked_nodes
    assert np.all(np.isfinite(out))
    # fp16 on the small-valued tail only: relative error well under 1%
    assert np.abs(out - expected).max() <= 1e-2 * np.abs(expected).max()


def test_export_records_the_fp32_nodes_of_an_fp16_artifact(tmp_path):
    torch.manual_seed(0)
    export_model(Overflowing().eval(), {"x": torch.randn(2, 8)}, formats=["onnx"], precisions=["fp32", "fp16"],
                 out_dir=tmp_path)
    fp16 = next(e for e in read_manifest(tmp_path)["artifacts"] if e["precision"] == "fp16")
    assert fp16["fp16_overflow"]["fp32_nodes"]


def test_scan_refuses_unnamed_nodes(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="named nodes"):
        scan(tmp_path / "m.onnx", [{"x": np.ones(2, np.float32)}])
