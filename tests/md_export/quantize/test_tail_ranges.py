"""Percentile activation ranges: exact tails (TailRanges), calibrate_ranges on a real onnxruntime
session, and which component gets which method."""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from md_export.quantize import onnx_recipes
from md_export.quantize.tail_ranges import TailRanges

TAIL = (100.0 - onnx_recipes.PERCENTILE) / 200.0  # 5e-6 of the values clipped on each side


def _rows(count: int, size: int, growing: bool = True) -> list[np.ndarray]:
    """Normal rows (row i scaled by 1 + i when `growing`) with two outliers in the last one."""
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal(size).astype(np.float32) * ((1 + i) if growing else 1) for i in range(count)]
    rows[-1][[3, 99]] = [250.0, -400.0]  # the outliers arrive last: the kept tails must make room for them
    return rows


def _exact(rows: list[np.ndarray], tail: float) -> tuple[float, float]:
    values = np.sort(np.concatenate([r.ravel() for r in rows]))
    k = max(1, math.ceil(tail * values.size))
    return values[k - 1], values[-k]


@pytest.mark.parametrize("tail", [TAIL, 1e-3, 0.0])
def test_tail_ranges_are_the_exact_order_statistics_over_all_rows(tail):
    rows = _rows(6, 200_000)
    tails = TailRanges(len(rows), tail)
    for row in rows:
        tails.add("x", row.reshape(2, -1))  # any shape: every value counts
    low, high = tails.ranges()["x"]
    assert (low, high) == _exact(rows, tail)  # exact, not a histogram bin edge
    if tail == 0.0:
        assert (low, high) == (-400.0, 250.0)  # nothing clipped: min and max
    else:
        assert -400.0 < low and high < 250.0  # the two outliers are clipped


def test_tail_ranges_refuse_what_has_no_meaning():
    with pytest.raises(ValueError, match="at least one row"):
        TailRanges(0, TAIL)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        TailRanges(4, 0.5)


def _matmul_model(path, width: int = 512):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])
    weight = numpy_helper.from_array(np.eye(width, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_calibrate_ranges_percentile_clips_the_tails_of_what_onnxruntime_computes(tmp_path):
    from onnxruntime.quantization.calibrate import load_tensors_data

    _matmul_model(tmp_path / "m.onnx")
    rows = [r.reshape(1, -1) for r in _rows(200, 512, growing=False)]  # 102,400 values: k = 1 a side at 5e-6
    feeds = [{"x": r} for r in rows]
    ranges = {}
    for method in onnx_recipes.RANGE_METHODS:
        kept = onnx_recipes.calibrate_ranges(tmp_path / "m.onnx", ["MatMul"], feeds, tmp_path / f"{method}.json",
                                             keep=(0,), method=method)
        np.testing.assert_array_equal(kept[0]["y"], rows[0])  # the model's own output on the kept feed
        data = load_tensors_data(tmp_path / f"{method}.json")
        ranges[method] = tuple(float(np.ravel(v)[0]) for v in data["x"].range_value)
    assert ranges["minmax"] == (-400.0, 250.0)
    # k = ceil(5e-6 x 102,400) = 1 a side: the most extreme values themselves
    assert ranges["percentile"] == _exact(rows, TAIL) == (-400.0, 250.0)
    with pytest.raises(ValueError, match="activation range method"):
        onnx_recipes.calibrate_ranges(tmp_path / "m.onnx", ["MatMul"], feeds, tmp_path / "x.json", method="mean")


def test_percentile_ranges_drop_outliers_from_the_int8_step(tmp_path):
    """Many rows: the two outliers fall inside the clipped tails, and the activation scale that
    quantize_static writes is several times finer than min/max's."""
    _matmul_model(tmp_path / "m.onnx")
    rows = [r.reshape(1, -1) for r in _rows(1000, 512, growing=False)]  # 512,000 values: k = 3 a side
    feeds = [{"x": r} for r in rows]
    scales = {}
    for method in onnx_recipes.RANGE_METHODS:
        out = tmp_path / f"{method}.onnx"
        onnx_recipes.static_int8(tmp_path / "m.onnx", out, feeds, ranges=method)
        model = onnx.load(out)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
        scales[method] = float(inits[q.input[1]])
    low, high = _exact(rows, TAIL)
    assert scales["minmax"] == pytest.approx(650.0 / 255, rel=1e-6)  # [-400, 250] on uint8
    assert scales["percentile"] == pytest.approx((high - low) / 255, rel=1e-6)
    # the 3rd most extreme of 512,000 standard normal values sits near 4.4 sigma: a range of
    # about 9 against min/max's 650
    assert scales["minmax"] / scales["percentile"] > 50


def test_the_unet_gets_percentile_ranges_and_the_rest_min_max():
    assert onnx_recipes.range_method("unet", "static_int8") == "percentile"
    assert onnx_recipes.range_method("text_encoder", "static_int8") == "minmax"  # CLIP's outliers carry meaning
    assert onnx_recipes.range_method("vae_decoder", "static_int8") == "minmax"
    assert onnx_recipes.range_method("unet", "w8a16") == "minmax"  # int16 steps to spare
    assert onnx_recipes.range_method(None, "static_int8") == "minmax"  # a user's module
    assert onnx_recipes.range_method("text_encoder", "static_int8", "percentile") == "percentile"
    assert onnx_recipes.range_method("unet", "static_int8", "minmax") == "minmax"
    with pytest.raises(ValueError, match="auto or one of minmax, percentile"):
        onnx_recipes.range_method("unet", "static_int8", "entropy")
