"""The same export twice gives the same bytes, in every format: each artifact's sha256 in the two
manifests, and every file under the two output directories (the manifests, whose "created" and
"export_seconds" are times, compare with those fields left out).

Each export runs in its own process: protobuf's map order (the Core ML spec) changes between
processes, not within one.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from md_export.export.coreml import make_reproducible

FORMATS = ("onnx", "tflite", "coreml")
TIMES = ("created", "export_seconds")


def export(out):
    # the Core ML spec records its conversion day: pinned, so that a run across midnight passes
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    result = subprocess.run(
        [sys.executable, "-m", "md_export.cli", "export", "--preset", "mobilediffusion-tiny",
         "--components", "vae_decoder", "--formats", ",".join(FORMATS), "--precision", "fp32,fp16",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproducible")
    return (root / "a", export(root / "a")), (root / "b", export(root / "b"))


def test_every_artifact_has_the_same_sha256(twice):
    (_, first), (_, second) = twice
    hashes = [{(e["file"], e["precision"], e["signature"]): e["sha256"] for e in m["artifacts"]}
              for m in (first, second)]
    assert {f for f, _, _ in hashes[0]} >= {"vae_decoder_64.fp32.mlpackage", "vae_decoder_64.fp16.mlpackage",
                                           "vae_decoder_64.fp32.onnx", "vae_decoder_64.fp16.onnx",
                                           "vae_decoder.fp32.tflite", "vae_decoder.fp16.tflite"}
    differ = sorted(key[0] for key in hashes[0] if hashes[0][key] != hashes[1].get(key))
    assert not differ, f"sha256 differs between two equal exports: {differ}"


def test_every_file_is_byte_identical(twice):
    (a, first), (b, second) = twice
    files = [sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) for d in (a, b)]
    assert files[0] == files[1]
    differ = [f for f in files[0] if f != "manifest.json" and (a / f).read_bytes() != (b / f).read_bytes()]
    assert not differ, f"files differ between two equal exports: {differ}"
    assert without_times(first) == without_times(second)


def test_reproducible_package_still_loads_and_validates(twice):
    (a, first), _ = twice
    import coremltools as ct

    from md_export.export.coreml import validate

    for entry in first["artifacts"]:
        if entry["format"] != "coreml":
            continue
        package = a / entry["file"]
        validate(package, entry["inputs"], [o["name"] for o in entry["outputs"]])
        model = ct.models.MLModel(str(package), skip_model_load=True)
        assert [i.name for i in model.get_spec().description.input] == [i["name"] for i in entry["inputs"]]
        manifest = json.loads((package / "Manifest.json").read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        assert root["path"] == "com.apple.CoreML/model.mlmodel"
        for identifier in manifest["itemInfoEntries"]:
            assert uuid.UUID(identifier).version == 5


def test_source_date_epoch_sets_the_conversion_date(twice, tmp_path, monkeypatch):
    (a, _), _ = twice
    import shutil

    import coremltools as ct

    package = tmp_path / "copy.mlpackage"
    shutil.copytree(a / "vae_decoder_64.fp32.mlpackage", package)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    make_reproducible(package)
    metadata = ct.utils.load_spec(str(package)).description.metadata.userDefined
    assert metadata["com.github.apple.coremltools.conversion_date"] == "1970-01-01"
