"""A preset's networks exported in several calls into one directory make one manifest (the main
job converts LiteRT's UNet on its own, after the rest); another model's export replaces it."""

import json

from md_export.export import export_preset
from md_export.export.driver import same_model
from md_export.models import get_preset


def _manifest(directory):
    return json.loads((directory / "manifest.json").read_text())


def test_exports_of_one_model_in_parts_keep_each_other(tmp_path):
    preset = get_preset("mobilediffusion-tiny")
    export_preset(preset, ["unet"], ["onnx"], ["fp32"], tmp_path)
    export_preset(preset, ["text_encoder", "vae_decoder"], ["onnx"], ["fp32"], tmp_path)
    manifest = _manifest(tmp_path)
    assert sorted(e["component"] for e in manifest["artifacts"]) == ["text_encoder", "unet", "vae_decoder"]
    assert set(manifest["source"]["weights"]) == {"text_encoder", "unet", "vae_decoder"}
    for entry in manifest["artifacts"]:
        assert (tmp_path / entry["file"]).exists() and (tmp_path / entry["reference"]).exists()
    # other weights (seed 1) are another model: the earlier artifacts were checked against references
    # this export overwrites, so they leave the manifest
    export_preset(preset, ["unet"], ["onnx"], ["fp32"], tmp_path, seed=1)
    assert [e["component"] for e in _manifest(tmp_path)["artifacts"]] == ["unet"]


def test_same_model_needs_the_same_source_and_agreeing_weights():
    # a preset's config holds tuples, and the manifest read back holds lists: the same model
    assert same_model({"kind": "preset", "unet_config": {"channels": [32, 64]}},
                      {"kind": "preset", "unet_config": {"channels": (32, 64)}})
    source = {"kind": "preset", "preset": "p", "weight_seed": 0, "weights": {"unet": "random (seed 0)"}}
    assert same_model(dict(source, weights={"text_encoder": "random (seed 0)"}), source)
    assert same_model(source, source)
    assert not same_model(None, source)
    assert not same_model(dict(source, weights={"unet": "checkpoint a.safetensors"}), source)
    assert not same_model(dict(source, preset="q"), source)
