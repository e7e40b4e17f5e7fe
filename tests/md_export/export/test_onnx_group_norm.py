"""ONNX export writes GroupNorm as LayerNormalization over each group (export/onnx_group_norm.py),
which onnxruntime runs on all its threads, with the scale of ones as one ConstantOfShape per length."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from md_export import export_model
from md_export.export.manifest import read_manifest
from md_export.export.onnx_group_norm import share_layer_norm_scales


class TwoNorms(nn.Module):
    """Two norms on tensors of one size (one shared scale) and one on another size."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(4, 32, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, 32)
        self.norm2 = nn.GroupNorm(8, 32, eps=1e-6)
        self.down = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.norm3 = nn.GroupNorm(4, 64, affine=False)

    def forward(self, image):
        x = nn.functional.silu(self.norm2(nn.functional.silu(self.norm1(self.conv_in(image)))))
        return self.norm3(self.down(x))


def _export(tmp_path, module, image, **kwargs):
    export_model(module, {"image": image}, formats=["onnx"], out_dir=tmp_path, precisions=["fp32"], **kwargs)
    entry = read_manifest(tmp_path)["artifacts"][0]
    return tmp_path / entry["file"]


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_onnx_graph_has_layer_norms_with_shared_scales_and_matches_torch(tmp_path, dynamic_batch):
    torch.manual_seed(0)
    module = TwoNorms().eval()
    for norm in (module.norm1, module.norm2):
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    path = _export(tmp_path, module, torch.randn(1, 4, 32, 32), dynamic_batch=dynamic_batch)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("LayerNormalization") == 3 and "InstanceNormalization" not in ops
    # one scale per group length: 32/8 x 32 x 32 = 4096 for norm1 and norm2, 64/4 x 16 x 16 = 4096
    # for norm3 too, so all three read one ConstantOfShape; no bias inputs
    ones = [node for node in graph.node if node.op_type == "ConstantOfShape"]
    assert len(ones) == 1
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            assert list(node.input[1:]) == [ones[0].output[0]]
    # nothing of the group's length stored: the file holds the two convs' weights and small vectors
    large = [t.name for t in graph.initializer if np.prod(t.dims) >= 4096]
    large += [n.output[0] for n in graph.node if n.op_type == "Constant" and np.prod(n.attribute[0].t.dims) >= 4096]
    assert large == ["down.weight"], large

    batch = 3 if dynamic_batch else 1
    image = torch.randn(batch, 4, 32, 32)
    with torch.no_grad():
        expected = module(image).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": image.numpy()})[0]
    # fp32 in another engine, outputs of magnitude up to 5: measured 1.9e-6 (batch 1), 2.0e-6 (3)
    assert np.abs(got - expected).max() <= 1e-4, np.abs(got - expected).max()


def _layer_norm_model(scale: np.ndarray, bias: np.ndarray | None, as_initializer: bool):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, len(scale)])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, len(scale)])
    nodes, initializers, inputs = [], [], ["x"]
    for name, array in (("scale", scale), ("bias", bias)):
        if array is None:
            continue
        if as_initializer:
            initializers.append(numpy_helper.from_array(array, name))
        else:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array)))
        inputs.append(name)
    nodes.append(helper.make_node("LayerNormalization", inputs, ["y"], axis=-1))
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializers),
                             opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("scale,bias,as_initializer", [
    (np.full(8, 2.0, np.float32), None, False),  # a real scale
    (np.ones(8, np.float32), np.full(8, 0.5, np.float32), False),  # a real bias
    (np.ones(8, np.float32), np.zeros(8, np.float32), True),  # parameters (nn.LayerNorm at init)
])
def test_layer_norms_with_a_real_scale_bias_or_parameters_are_left_alone(scale, bias, as_initializer):
    model = _layer_norm_model(scale, bias, as_initializer)
    before = model.SerializeToString()
    assert share_layer_norm_scales(model) == 0
    assert model.SerializeToString() == before


def test_ones_and_zeros_constants_become_one_constant_of_shape_with_the_same_output():
    model = _layer_norm_model(np.ones(8, np.float32), np.zeros(8, np.float32), as_initializer=False)
    x = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert share_layer_norm_scales(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["ConstantOfShape", "LayerNormalization"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(got, expected)
