"""md_export/quantize/ort_weights.py: per-channel int8 weights as array operations must be onnxruntime's
per-channel loops bit for bit (scales, zero points, weights, whole quantized models)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from md_export.export import export_preset
from md_export.export.manifest import read_manifest
from md_export.models import get_preset
from md_export.quantize import onnx_recipes, ort_weights


def _weights(shape, axis, seed=0) -> np.ndarray:
    """Random weights with channels (along `axis`) that take onnxruntime's special branches."""
    data = np.random.default_rng(seed).normal(0, 0.05, size=shape).astype(np.float32)
    rows = np.moveaxis(data, axis, 0)  # a view: writes land in data
    rows[0] = 0.0  # all zero: scale 1, zero point 0
    rows[1] = -np.abs(rows[1])  # negative only
    rows[2] = 1e-42  # subnormal: a scale under float32's tiny
    rows[3] *= 1e4  # large
    return data


@pytest.mark.parametrize("shape,axis", [((16, 8, 3, 3), 0), ((24, 40), 1), ((24, 40), 0), ((6, 5, 7), 2)])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_channel_scales_are_onnxruntimes_per_channel_loop(shape, axis, reduce_range):
    from onnxruntime.quantization.quant_utils import compute_data_quant_params

    data = _weights(shape, axis)
    zero_point, scale = ort_weights.channel_scales(data, axis, reduce_range)
    expected = [compute_data_quant_params(data.take(i, axis).ravel(), TensorProto.INT8, True, reduce_range=reduce_range)
                for i in range(data.shape[axis])]
    expected_zp, expected_scale = np.asarray([e[0] for e in expected]), np.asarray([e[1] for e in expected])
    assert zero_point.dtype == expected_zp.dtype == np.int8 and scale.dtype == expected_scale.dtype == np.float32
    np.testing.assert_array_equal(zero_point, expected_zp)
    assert scale.tobytes() == expected_scale.tobytes()  # bit for bit, the degenerate channels included
    assert scale[0] == 1.0 and zero_point[0] == 0 and scale[2] == 1.0


@pytest.mark.parametrize("shape,axis", [((16, 8, 3, 3), 0), ((24, 40), 1), ((6, 5, 7), 2)])
def test_quantize_channels_is_onnxruntimes_quantize_onnx_initializer(shape, axis):
    from onnxruntime.quantization.quant_utils import quantize_onnx_initializer

    data = _weights(shape, axis, seed=1)
    zero_point, scale = ort_weights.channel_scales(data, axis, reduce_range=False)
    proto = numpy_helper.from_array(data, "w")
    expected = quantize_onnx_initializer(proto, TensorProto.INT8, zero_point, scale, axis)
    fast = ort_weights._quantize_onnx_initializer(quantize_onnx_initializer)(proto, TensorProto.INT8, zero_point,
                                                                            scale, axis)
    assert fast.SerializeToString() == expected.SerializeToString()
    assert np.abs(numpy_helper.to_array(fast).astype(int)).max() == 127  # the range is used


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("ort_weights")
    export_preset(get_preset("mobilediffusion-tiny"), ["text_encoder", "vae_decoder"], ["onnx"], ["fp32"], root)
    rng = np.random.default_rng(0)
    models = {}
    for entry in read_manifest(root)["artifacts"]:
        feeds = []
        for _ in range(3):
            feed = {}
            for spec in entry["inputs"]:
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"]]
                feed[spec["name"]] = (rng.integers(0, 400, size=shape).astype(np.int64) if "int" in spec["dtype"]
                                      else rng.normal(size=shape).astype(np.float32))
            feeds.append(feed)
        models[entry["component"]] = (root / entry["file"], feeds)
    return models


@pytest.mark.parametrize("component", ["text_encoder", "vae_decoder"])
def test_static_int8_is_bit_identical_with_and_without_the_loops(tiny_exports, component, tmp_path, monkeypatch):
    fp32, feeds = tiny_exports[component]
    vectorized_calls = []
    channel_scales = ort_weights.channel_scales
    monkeypatch.setattr(ort_weights, "channel_scales",
                        lambda *args: vectorized_calls.append(1) or channel_scales(*args))
    fast = onnx_recipes.static_int8(fp32, tmp_path / "fast.onnx", feeds)
    assert len(vectorized_calls) >= 4  # the weights went through the array path
    monkeypatch.setattr(ort_weights, "ONNXRUNTIME_VERSION", "another")  # onnxruntime's own loops
    with ort_weights.vectorized_per_channel_weights() as active:
        assert not active
    stock = onnx_recipes.static_int8(fp32, tmp_path / "stock.onnx", feeds)
    assert len(vectorized_calls) >= 4
    a, b = onnx.load(str(fast)), onnx.load(str(stock))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    assert sum(n.op_type == "DequantizeLinear" for n in a.graph.node) >= 4


def test_the_patch_is_undone_on_exit():
    from onnxruntime.quantization import qdq_quantizer

    before = (qdq_quantizer.quantize_onnx_initializer, qdq_quantizer.QDQQuantizer._calc_initializer_quant_params)
    with ort_weights.vectorized_per_channel_weights() as active:
        assert active  # the pinned onnxruntime
        assert qdq_quantizer.quantize_onnx_initializer is not before[0]
    assert (qdq_quantizer.quantize_onnx_initializer, qdq_quantizer.QDQQuantizer._calc_initializer_quant_params) == before
