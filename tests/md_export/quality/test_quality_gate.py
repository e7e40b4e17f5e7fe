"""The quality gate: exported fp32 artifacts pass; a deliberately broken artifact fails (exit 1)."""

import json
import shutil

import numpy as np
import onnx
from onnx import numpy_helper

from md_export.cli import main
from md_export.export import export_preset
from md_export.export.manifest import sha256_of
from md_export.models import get_preset

GATE_ARGS = ["--prompts", "train", "--num-prompts", "5", "--seeds", "1", "--steps", "10", "--json"]


def _break_unet(directory):
    """Zero the UNet's output convolution (the only (4, C, 3, 3) weight): a recipe gone wrong."""
    manifest = json.loads((directory / "manifest.json").read_text())
    path = directory / next(e["file"] for e in manifest["artifacts"] if e["component"] == "unet")
    model = onnx.load(str(path))
    targets = [t for t in model.graph.initializer if len(t.dims) == 4 and t.dims[0] == 4 and t.dims[2:] == [3, 3]]
    assert len(targets) == 1, [t.name for t in targets]
    targets[0].CopyFrom(numpy_helper.from_array(np.zeros(tuple(targets[0].dims), np.float32), targets[0].name))
    onnx.save(model, str(path))
    for entry in manifest["artifacts"]:
        if entry["file"] == path.name:  # a consistent manifest: the gate, not the checksum, must catch it
            entry["sha256"], entry["size_bytes"] = sha256_of(path), path.stat().st_size
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_fp32_export_passes_and_a_broken_artifact_fails(tmp_path, capsys):
    good = tmp_path / "good"
    export_preset(get_preset("mobilediffusion-micro"), ("text_encoder", "unet", "vae_decoder"), ["onnx"], ["fp32"],
                  good)
    assert main(["quality", "--artifacts", str(good)] + GATE_ARGS) == 0
    passed = json.loads(capsys.readouterr().out)
    assert passed["gate"]["passed"] and abs(passed["gate"]["drop"]) <= 0.05

    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    _break_unet(broken)
    assert main(["quality", "--artifacts", str(broken)] + GATE_ARGS) == 1
    captured = capsys.readouterr()
    failed = json.loads(captured.out)
    assert not failed["gate"]["passed"] and failed["gate"]["drop"] > 0.05
    assert "quality gate failed" in captured.err
