"""conv_route.py: static int8 convs moved to onnxruntime's int8 GEMM by a weight zero point of -1,
with the same output, and the convs it must leave on the symmetric kernel."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from md_export.quantize import conv_route, onnx_recipes


class ThreeConvs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.short = torch.nn.Conv2d(4, 32, 3, padding=1)  # reduction 4 x 9 = 36: stays
        self.regular = torch.nn.Conv2d(32, 32, 3, padding=1)  # reduction 288: routed
        self.depthwise = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)  # grouped: stays

    def forward(self, x):
        return self.depthwise(torch.relu(self.regular(torch.relu(self.short(x)))))


def _weight_zero_points(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    return {node.name: initializers[producers[node.input[1]].input[2]]
            for node in model.graph.node if node.op_type == "Conv"}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("route")
    torch.manual_seed(0)
    fp32 = root / "three_convs.onnx"
    torch.onnx.export(ThreeConvs().eval(), (torch.randn(1, 4, 16, 16),), str(fp32), input_names=["x"],
                      output_names=["y"], dynamo=False)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)} for _ in range(4)]
    return onnx_recipes.static_int8(fp32, root / "symmetric.onnx", feeds), feeds[0]


def test_routed_convs_give_the_same_output_and_only_regular_convs_move(quantized, tmp_path):
    symmetric, feed = quantized
    routed = tmp_path / "routed.onnx"
    routed.write_bytes(symmetric.read_bytes())
    assert conv_route.route_convs_through_gemm(routed) == {"routed": 1, "kept": 2}
    zero_points = _weight_zero_points(routed)
    assert sorted(int(z.min()) for z in zero_points.values()) == [-1, 0, 0]
    assert all(np.all(z == 0) for z in _weight_zero_points(symmetric).values())
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
               for p in (symmetric, routed)]
    # exact: the integer kernels add the same products (the 512 UNet and decoder: max abs diff 0.0)
    assert np.array_equal(outputs[0], outputs[1])


def test_route_is_forced_by_the_environment_and_refuses_unknown_values(monkeypatch):
    for route in conv_route.ROUTES:
        monkeypatch.setenv(conv_route.CONV_ROUTE_ENV, route)
        assert conv_route.choose_route() == {"route": route, "reason": f"{conv_route.CONV_ROUTE_ENV}={route}"}
    monkeypatch.setenv(conv_route.CONV_ROUTE_ENV, "fastest")
    with pytest.raises(ValueError, match="symmetric, gemm, auto"):
        conv_route.choose_route()
    monkeypatch.delenv(conv_route.CONV_ROUTE_ENV)
    from md_export.runtimes.ort_cache import cpu_isa

    chosen = conv_route.choose_route()
    assert chosen["route"] == ("gemm" if "amx_int8" in cpu_isa() else "symmetric"), chosen
