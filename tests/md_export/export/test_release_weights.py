"""Memory of a preset export: networks the export built are freed once converted, a LiteRT network
before its flatbuffer is written; a caller's module is never touched."""

import torch

from md_export.export import export_preset, tflite
from md_export.export.driver import export_targets, release_weights
from md_export.export.presets import preset_targets
from md_export.models import get_preset
from md_export.parity import check_directory

TINY = get_preset("mobilediffusion-tiny")


def test_litert_writes_its_flatbuffer_after_the_weights_are_freed(tmp_path):
    targets, _ = preset_targets(TINY, ["vae_decoder"], [64])
    path = tmp_path / "decoder.tflite"
    seen = {}

    def before_write():
        seen["file_existed"] = path.exists()
        release_weights([targets[0].module])
        seen["weights_left"] = sum(p.numel() for p in targets[0].module.parameters())

    tflite.convert(targets, path, before_write)
    assert seen == {"file_existed": False, "weights_left": 0}
    assert path.stat().st_size > 100_000  # the weights are in the file, not in the freed module


def test_a_preset_export_with_litert_last_still_passes_parity(tmp_path):
    export_preset(TINY, ["text_encoder", "vae_decoder"], ["onnx", "tflite"], ["fp32"], tmp_path / "out")
    report = check_directory(tmp_path / "out")
    assert report.passed and sum(a.status == "passed" for a in report.artifacts) == 4


def test_a_callers_module_keeps_its_weights(tmp_path):
    targets, _ = preset_targets(TINY, ["vae_decoder"], [64])
    before = {k: v.clone() for k, v in targets[0].module.state_dict().items()}
    export_targets(targets, ["onnx", "tflite"], ["fp32"], tmp_path / "out")
    after = targets[0].module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
