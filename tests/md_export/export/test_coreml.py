import shutil

import pytest

from md_export.export import export_preset
from md_export.export.coreml import CoreMLValidationError, validate
from md_export.export.manifest import read_manifest
from md_export.parity import check_directory
from md_export.models import get_preset


@pytest.fixture(scope="module")
def split_einsum_unet(tmp_path_factory):
    import dataclasses

    out = tmp_path_factory.mktemp("ane")
    base = get_preset("mobilediffusion-tiny")
    preset = dataclasses.replace(base, unet=base.unet.replace(attention_implementation="split_einsum"))
    export_preset(preset, ["unet"], ["coreml", "onnx"], ["fp16"], out)
    return out


def test_split_einsum_unet_converts_validates_and_matches_in_onnx(split_einsum_unet):
    report = check_directory(split_einsum_unet)
    assert report.passed
    assert {a.format: a.status for a in report.artifacts} == {"coreml": "validated", "onnx": "passed"}
    manifest = read_manifest(split_einsum_unet)
    assert manifest["source"]["unet_config"]["attention_implementation"] == "split_einsum"


def test_validation_catches_a_package_that_does_not_match_the_manifest(split_einsum_unet, tmp_path):
    entry = next(e for e in read_manifest(split_einsum_unet)["artifacts"] if e["format"] == "coreml")
    package = tmp_path / entry["file"]
    shutil.copytree(split_einsum_unet / entry["file"], package)
    wrong = [dict(spec, shape=[2] + spec["shape"][1:]) for spec in entry["inputs"]]
    with pytest.raises(CoreMLValidationError, match="input latent is"):
        validate(package, wrong, [o["name"] for o in entry["outputs"]])
    (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    with pytest.raises(CoreMLValidationError, match="no weights"):
        validate(package, entry["inputs"], [o["name"] for o in entry["outputs"]])
