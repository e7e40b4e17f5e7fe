"""Networks over 1 GB of weights go through the dynamo exporter (md_export/export/onnx.py,
DYNAMO_FROM_BYTES): forced here on the tiny UNet, the artifact must pass the same parity gate,
keep its tensors in one sidecar, name its nodes after their modules, and quantize to static int8."""

import numpy as np
import onnx
import pytest

from md_export.calibration.builders import CalibrationSettings, build_calibration, calibration_feeds
from md_export.export import export_preset
from md_export.export import onnx as onnx_backend
from md_export.export.manifest import read_manifest
from md_export.models import get_preset
from md_export.parity import check_directory
from md_export.quantize import onnx_recipes
from md_export.quantize.sensitivity import GRAPH_GROUP, quantizable_blocks

PRESET = "mobilediffusion-tiny"


@pytest.fixture(scope="module")
def dynamo_unet(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynamo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_backend, "DYNAMO_FROM_BYTES", 0)  # as the 1.56 GB UNet does
        export_preset(get_preset(PRESET), ["unet"], ["onnx"], ["fp32"], root / "fp")
    (entry,) = read_manifest(root / "fp")["artifacts"]
    return root, entry


def test_the_dynamo_export_passes_parity_with_its_tensors_in_a_sidecar(dynamo_unet):
    root, entry = dynamo_unet
    path = root / "fp" / entry["file"]
    assert path.with_name(path.name + ".data").stat().st_size > path.stat().st_size  # the weights
    report = check_directory(root / "fp")  # fp32: >= 60 dB, cosine >= 0.99999 against torch
    assert report.passed and [a.status for a in report.artifacts] == ["passed"]


def test_its_nodes_are_named_after_their_modules(dynamo_unet):
    root, entry = dynamo_unet
    blocks = quantizable_blocks(root / "fp" / entry["file"])
    assert any(b.startswith("down_blocks.") for b in blocks) and any(b.startswith("up_blocks.") for b in blocks)
    total = sum(len(nodes) for nodes in blocks.values())
    assert len(blocks.get(GRAPH_GROUP, [])) < 0.1 * total, blocks.get(GRAPH_GROUP)


def test_it_quantizes_to_static_int8(dynamo_unet, tmp_path):
    root, entry = dynamo_unet
    preset = get_preset(PRESET)
    build_calibration(preset, root / "calib", CalibrationSettings(num_prompts=2, steps=1, photos=1))
    feeds = calibration_feeds(root / "calib", "unet", {i["name"]: i["shape"] for i in entry["inputs"]})
    out = onnx_recipes.static_int8(root / "fp" / entry["file"], tmp_path / "int8.onnx", feeds)
    types = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= types
    from md_export.runtimes.onnx_runner import OnnxRunner

    fp32, int8 = OnnxRunner(root / "fp" / entry["file"]), OnnxRunner(out)
    reference, quantized = fp32.run(feeds[0])["prediction"], int8.run(feeds[0])["prediction"]
    cosine = float(np.dot(reference.ravel(), quantized.ravel())
                   / (np.linalg.norm(reference) * np.linalg.norm(quantized)))
    assert cosine > 0.9  # int8 of random tiny weights: a broken graph or calibration reads ~0
