"""onnx-static-int8 in phases (md_export/quantize/onnx_recipes.py): the calibration computed on its
own, in a child process for a large model, must quantize exactly as onnxruntime's quantize_static
does when it calibrates in one process."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from md_export.calibration.builders import CalibrationSettings, build_calibration, calibration_feeds
from md_export.export import export_preset
from md_export.export.manifest import read_manifest
from md_export.models import get_preset
from md_export.quantize import onnx_recipes

PRESET = "mobilediffusion-taesd-tiny"


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("phases")
    preset = get_preset(PRESET)
    export_preset(preset, ["vae_decoder"], ["onnx"], ["fp32"], root / "fp")
    build_calibration(preset, root / "calib", CalibrationSettings(num_prompts=2, steps=1, photos=1))
    (entry,) = read_manifest(root / "fp")["artifacts"]
    feeds = calibration_feeds(root / "calib", "vae_decoder", {i["name"]: i["shape"] for i in entry["inputs"]})
    return root / "fp" / entry["file"], feeds


def _tensors(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _one_process(fp32, out, feeds):
    """onnxruntime's own path: quantize_static calibrating with the data reader."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    work = out.parent / "pre"
    work.mkdir()
    model = onnx_recipes.preprocess(fp32, work)
    op_types = list(onnx_recipes.STATIC_OP_TYPES + onnx_recipes.PASS_THROUGH_OP_TYPES
                    + onnx_recipes.INTEGER_CHAIN_OP_TYPES)
    quantize_static(str(model), str(out), onnx_recipes.FeedReader(feeds), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, op_types_to_quantize=op_types,
                    weight_type=QuantType.QInt8, nodes_to_exclude=onnx_recipes.uint8_float_nodes(model, []),
                    calibrate_method=CalibrationMethod.MinMax,
                    reduce_range=onnx_recipes.reduced_weight_range()["reduce_range"],  # 7-bit on x86 without VNNI
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                   "OpTypesToExcludeOutputQuantization": onnx_recipes.FLOAT_OUTPUT_OPS})


def test_phases_in_child_processes_quantize_as_onnxruntime_does_in_one(decoder, tmp_path, monkeypatch):
    fp32, feeds = decoder
    reference = tmp_path / "one_process.onnx"
    _one_process(fp32, reference, feeds)
    in_process = onnx_recipes.static_int8(fp32, tmp_path / "in_process.onnx", feeds)
    monkeypatch.setattr(onnx_recipes, "ISOLATE_PHASES_ABOVE_BYTES", 0)  # as the 1.5 GB UNet does
    isolated = onnx_recipes.static_int8(fp32, tmp_path / "isolated.onnx", feeds)
    expected = _tensors(reference)
    scales = [name for name in expected if name.endswith("_scale")]
    assert len(scales) > 20  # the activation ranges: what calibration decides
    for path in (in_process, isolated):
        got = _tensors(path)
        assert got.keys() == expected.keys()
        for name, value in expected.items():  # bit for bit: the same ranges, scales and weights
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_preprocess_writes_what_quant_pre_process_writes(decoder, tmp_path):
    """Ours is onnxruntime's optimisation written by onnxruntime (Python never holds the model, the
    1.5 GB UNet included): node for node and weight for weight what quant_pre_process writes
    without shape inference, and no leftovers beside it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, _ = decoder
    theirs = tmp_path / "theirs.onnx"
    quant_pre_process(str(fp32), str(theirs), skip_symbolic_shape=True, skip_onnx_shape=True)
    (tmp_path / "ours").mkdir()
    ours = onnx_recipes.preprocess(fp32, tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["preprocessed.onnx"]  # no leftovers
    a, b = onnx.load(str(theirs)), onnx.load(str(ours))
    assert len(a.graph.node) > 10
    assert a.graph.SerializeToString() == b.graph.SerializeToString()


def test_shape_inference_before_quantize_static_changes_nothing(decoder, tmp_path):
    """quantize_static infers shapes itself: our preprocessing leaves them out, and the quantized
    model is bit for bit the one quantized from quant_pre_process's shape-inferred output."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, feeds = decoder
    inferred = tmp_path / "inferred.onnx"
    quant_pre_process(str(fp32), str(inferred), skip_symbolic_shape=True)
    assert len(onnx.load(str(inferred)).graph.value_info) > 10  # what ours no longer computes
    (tmp_path / "ours").mkdir()
    ours = onnx_recipes.preprocess(fp32, tmp_path / "ours")
    assert len(onnx.load(str(ours)).graph.value_info) == 0
    a = onnx_recipes.static_int8(inferred, tmp_path / "from_inferred.onnx", feeds, preprocessed=True)
    b = onnx_recipes.static_int8(ours, tmp_path / "from_ours.onnx", feeds, preprocessed=True)
    got, expected = onnx.load(str(b)), onnx.load(str(a))
    assert got.graph.SerializeToString() == expected.graph.SerializeToString()  # nodes, weights, scales
    assert sum(n.op_type == "QuantizeLinear" for n in got.graph.node) > 20
