"""What onnxruntime really runs after quantization, counted in the graph its optimizer writes."""

import numpy as np
import onnx
import pytest

from md_export.calibration.builders import CalibrationSettings, build_calibration
from md_export.cli import main
from md_export.export import export_preset
from md_export.export.manifest import read_manifest
from md_export.quantize.kernels import module_of, onnx_kernel_report, tflite_kernel_report
from md_export.models import get_preset

PRESET = "mobilediffusion-taesd-tiny"  # the TAESD-style decoder: conv + ReLU, the layout int8 kernels want


def optimized_op_counts(path, tmp_path) -> dict[str, int]:
    """Op types of the graph onnxruntime executes (counted here, not through kernels.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    preset = get_preset(PRESET)
    export_preset(preset, ["vae_decoder"], ["onnx", "tflite"], ["fp32"], root / "fp")
    build_calibration(preset, root / "calib", CalibrationSettings(num_prompts=2, steps=1, photos=1))
    return root


def _quantize(decoder, recipe: str) -> dict:
    out = decoder / recipe
    if not (out / "manifest.json").exists():
        assert main(["quantize", "--artifacts", str(decoder / "fp"), "--recipe", recipe, "--out", str(out),
                     "--calibration", str(decoder / "calib"), "--speed-runs", "1"]) == 0
    (entry,) = read_manifest(out)["artifacts"]
    return entry


def test_static_int8_runs_every_conv_of_a_conv_relu_decoder_as_a_quantized_kernel(decoder, tmp_path):
    source = onnx.load(str(decoder / "fp" / "vae_decoder_64.fp32.onnx"))
    convs = sum(n.op_type == "Conv" for n in source.graph.node)
    entry = _quantize(decoder, "onnx-static-int8")
    counts = optimized_op_counts(decoder / "onnx-static-int8" / entry["file"], tmp_path)
    # uint8 activations: onnxruntime fuses DQ -> Conv -> Q into QLinearConv for every Conv
    assert counts.get("QLinearConv", 0) == convs > 10, counts
    assert not counts.get("Conv") and not counts.get("FusedConv"), counts
    # the manifest records the same count, from the same optimized graph
    assert entry["kernels"]["quantized"]["Conv"] == entry["kernels"]["total"]["Conv"] == convs
    assert entry["speed_vs_source"]["source_file"] == "vae_decoder_64.fp32.onnx"
    assert entry["speed_vs_source"]["p50_ms"] > 0


def test_static_int8_leaves_no_requantization_between_convs_of_a_conv_relu_decoder(decoder, tmp_path):
    # ReLU folded into the Conv's range and Resize kept on uint8: a Conv feeds the next Conv, or
    # the upsampling Resize, without a DequantizeLinear -> QuantizeLinear round trip through float
    entry = _quantize(decoder, "onnx-static-int8")
    _ = optimized_op_counts(decoder / "onnx-static-int8" / entry["file"], tmp_path)
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    producer = {out: node for node in graph.node for out in node.output}
    requantized = [n.name for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producer
                   and producer[n.input[0]].op_type == "DequantizeLinear"]
    assert not requantized, requantized
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert resizes and all(producer[n.input[0]].op_type in ("QLinearConv", "QLinearAdd") for n in resizes)
    assert entry["kernels"]["qdq_left"] <= 12, entry["kernels"]  # 53 before the chain rules, 2 after (here and at 512)


def test_signed_symmetric_activations_leave_convs_unfused_on_x86(decoder):
    # why the symmetric layout is a target (NPU) recipe and not the CPU one: after a ReLU half of
    # its range is empty and onnxruntime's x86 kernels do not take it
    entry = _quantize(decoder, "onnx-static-int8-symmetric")
    kernels = entry["kernels"]
    assert kernels["quantized"].get("Conv", 0) < kernels["total"]["Conv"]
    assert kernels["float_islands"]["Conv"]  # named by PyTorch module
    assert all(name.startswith("decoder.") for name in kernels["float_islands"]["Conv"])


def test_fp32_model_has_no_quantized_kernel(decoder):
    report = onnx_kernel_report(decoder / "fp" / "vae_decoder_64.fp32.onnx")
    assert report.total["Conv"] > 10 and not report.quantized
    assert not report.fully_quantized()
    assert report.summary().startswith(f"Conv 0/{report.total['Conv']} quantized")


def test_litert_dynamic_int8_counts_integer_weight_convs(decoder):
    fp32 = tflite_kernel_report(decoder / "fp" / "vae_decoder.fp32.tflite")
    entry = _quantize(decoder, "tflite-dynamic-int8")
    report = tflite_kernel_report(decoder / "tflite-dynamic-int8" / entry["file"])
    assert fp32.total["Conv"] == report.total["Conv"] > 10 and not fp32.quantized
    assert report.quantized["Conv"] == report.total["Conv"]
    assert entry["kernels"]["quantized"] == report.quantized


def test_module_of_reads_the_exporters_scope():
    assert module_of("/decoder/layers/layers.3/conv/conv.0/Conv") == "decoder.layers.layers.3.conv.conv.0"
    assert module_of("Conv_12") == "(graph)"
    # onnxruntime's fusions and DQ copies append a tag (names from the 512 UNet's and decoder's
    # optimized int8 graphs): the module is the fused node's
    assert module_of("/down_blocks.1.attentions.0.transformer_blocks.0.ff.proj/node_MatMul_162/MatMulAddFusion") \
        == "down_blocks.1.attentions.0.transformer_blocks.0.ff.proj"
    assert module_of("/decoder/up_blocks.3/resnets.0/Mul/QuickGeluFusion") == "decoder.up_blocks.3.resnets.0"
    assert module_of("/decoder/norm/Reshape_output_0_dq/duplicated_token_3") == "decoder.norm"
    assert module_of("Conv_output_0_DequantizeLinear/duplicated") == "(graph)"


def test_quantize_prints_kernels_and_speed(decoder, capsys, tmp_path):
    assert main(["quantize", "--artifacts", str(decoder / "fp"), "--recipe", "onnx-dynamic-int8",
                 "--out", str(tmp_path / "q"), "--speed-runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "vae_decoder: Conv " in out and "its float source" in out
    np.testing.assert_equal(read_manifest(tmp_path / "q")["artifacts"][0]["speed_vs_source"]["runs"], 1)
