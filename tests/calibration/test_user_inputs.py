"""Calibration from a user's own data: `md-export calibrate --artifacts --inputs` and calibrate_module."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

import md_export
from md_export.calibration.builders import CalibrationError, calibration_feeds, read_calibration_manifest
from md_export.calibration.user_inputs import calibrate_module, load_images
from md_export.cli import main

QUANTIZE = ["--recipe", "onnx-static-int8", "--speed-runs", "0"]


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    module = SmallConv()
    md_export.export_model(module, {"x": torch.randn(1, 3, 16, 16)}, formats=["onnx"], out_dir=root / "art")
    return module, root / "art"


def _rows(count=8, shape=(3, 16, 16), seed=1):
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def test_npz_rows_calibrate_quantize_and_pass_parity(exported, tmp_path):
    _, artifacts = exported
    np.savez(tmp_path / "x.npz", x=_rows().astype(np.float64))  # float64 casts to the artifact's float32
    calib, quantized = tmp_path / "C", tmp_path / "Q"
    assert main(["calibrate", "--artifacts", str(artifacts), "--inputs", str(tmp_path / "x.npz"),
                 "--out", str(calib)]) == 0
    manifest = read_calibration_manifest(calib)
    assert manifest["format_version"] == 1 and manifest["files"] == {"model": "model.safetensors"}
    assert manifest["samples"] == {"model": 8} and manifest["source"]["kind"] == "user_inputs"
    rows = load_file(str(calib / "model.safetensors"))
    assert rows["x"].shape == (8, 3, 16, 16) and rows["x"].dtype == np.float32
    feeds = calibration_feeds(calib, "model", {"x": [1, 3, 16, 16]})
    assert len(feeds) == 8 and feeds[0]["x"].shape == (1, 3, 16, 16)
    pairs = calibration_feeds(calib, "model", {"x": [2, 3, 16, 16]})  # an artifact with batch 2: 2 rows a call
    assert len(pairs) == 4 and pairs[0]["x"].shape == (2, 3, 16, 16)
    assert main(["quantize", "--artifacts", str(artifacts), *QUANTIZE, "--calibration", str(calib),
                 "--out", str(quantized)]) == 0
    assert main(["parity", str(quantized)]) == 0
    # a filled --out is refused without --overwrite, and replaced with it
    assert main(["calibrate", "--artifacts", str(artifacts), "--inputs", str(tmp_path / "x.npz"),
                 "--out", str(calib)]) == 2
    np.savez(tmp_path / "x4.npz", x=_rows(4))
    assert main(["calibrate", "--artifacts", str(artifacts), "--inputs", str(tmp_path / "x4.npz"),
                 "--out", str(calib), "--overwrite"]) == 0
    assert read_calibration_manifest(calib)["samples"] == {"model": 4}


def test_prefixed_names_and_safetensors(exported, tmp_path):
    from safetensors.numpy import save_file

    _, artifacts = exported
    save_file({"model/x": _rows(3)}, str(tmp_path / "rows.safetensors"))
    assert main(["calibrate", "--artifacts", str(artifacts), "--inputs", str(tmp_path / "rows.safetensors"),
                 "--out", str(tmp_path / "C")]) == 0
    assert read_calibration_manifest(tmp_path / "C")["samples"] == {"model": 3}


class ImageNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image):
        return self.conv(image).mean(dim=(2, 3))


def _write_pngs(folder, sizes):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{index}.png")


def test_a_folder_of_images_calibrates_an_image_input(tmp_path, capsys):
    md_export.export_model(ImageNet(), {"image": torch.randn(1, 3, 24, 32)}, formats=["onnx"],
                           out_dir=tmp_path / "art", name="encoder")
    _write_pngs(tmp_path / "photos", [(40, 30), (24, 64), (32, 24)])
    (tmp_path / "photos" / "notes.txt").write_text("not an image")  # other files are not images: skipped
    assert main(["calibrate", "--artifacts", str(tmp_path / "art"), "--inputs", str(tmp_path / "photos"),
                 "--out", str(tmp_path / "C")]) == 0
    images = load_file(str(tmp_path / "C" / "encoder.safetensors"))["image"]
    assert images.shape == (3, 3, 24, 32) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < -0.9
    assert read_calibration_manifest(tmp_path / "C")["source"]["image_range"] == "-1,1"
    assert main(["calibrate", "--artifacts", str(tmp_path / "art"), "--inputs", str(tmp_path / "photos"),
                 "--image-range", "0,1", "--out", str(tmp_path / "C01")]) == 0
    unit = load_file(str(tmp_path / "C01" / "encoder.safetensors"))["image"]
    np.testing.assert_allclose(unit * 2 - 1, images, atol=1e-5)
    assert main(["quantize", "--artifacts", str(tmp_path / "art"), *QUANTIZE, "--calibration",
                 str(tmp_path / "C"), "--out", str(tmp_path / "Q")]) == 0


def test_images_are_resized_to_cover_then_center_cropped(tmp_path):
    from PIL import Image

    folder = tmp_path / "p"
    folder.mkdir()
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, 10:20] = 255  # a white middle third: what a center crop of a wide image keeps
    Image.fromarray(pixels).save(folder / "wide.png")
    image = load_images(folder, 3, 8, 8)[0]
    assert image.shape == (3, 8, 8) and image[:, :, 2:6].min() > 0.9


def test_calibrate_module_writes_the_same_format(exported, tmp_path):
    module, artifacts = exported
    rows = _rows(6)
    samples = [{"x": torch.from_numpy(rows[i:i + 2])} for i in range(0, 6, 2)]  # batches of 2 rows, like a DataLoader
    manifest = calibrate_module(module, samples, tmp_path / "C")
    assert manifest["format_version"] == 1 and manifest["samples"] == {"model": 6}
    assert manifest["source"] == {"kind": "module", "class": "SmallConv"}
    np.testing.assert_array_equal(load_file(str(tmp_path / "C" / "model.safetensors"))["x"], rows)
    assert main(["quantize", "--artifacts", str(artifacts), *QUANTIZE, "--calibration", str(tmp_path / "C"),
                 "--out", str(tmp_path / "Q")]) == 0
    # torch checks the shapes: a 4-channel row fails in the module, with the sample named, and nothing is written
    with pytest.raises(CalibrationError, match="failed on sample 0"):
        calibrate_module(module, [{"x": np.zeros((1, 4, 16, 16), np.float32)}], tmp_path / "bad")
    with pytest.raises(CalibrationError, match="empty"):
        calibrate_module(module, [], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case", ["name", "shape", "text", "strings", "empty_folder", "dtype"])
def test_mismatches_are_one_line_errors_and_write_nothing(exported, tmp_path, capsys, case):
    _, artifacts = exported
    inputs = tmp_path / "in.npz"
    if case == "name":
        np.savez(inputs, y=_rows(2))
        expected = "no input 'y'"
    elif case == "shape":
        np.savez(inputs, x=_rows(2, (3, 32, 32)))
        expected = "model.x rows are [3, 32, 32], the artifact takes [3, 16, 16]"
    elif case == "text":
        inputs = tmp_path / "in.npz"
        inputs.write_text("x = 1, 2, 3\n")
        expected = "cannot read"
    elif case == "strings":
        np.savez(inputs, x=np.array([["a"] * 3] * 2))
        expected = "not numeric"
    elif case == "dtype":
        np.savez(inputs, x=np.ones((2, 3, 16, 16), dtype=np.complex64))
        expected = "not numeric"
    else:
        inputs = tmp_path / "empty"
        inputs.mkdir()
        expected = "holds no .png/.jpg/.jpeg images"
    out = tmp_path / "C"
    assert main(["calibrate", "--artifacts", str(artifacts), "--inputs", str(inputs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("md-export: error:") and expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".C.")]  # no staging left beside it


def test_an_image_folder_for_a_non_image_network_and_bad_flag_mixes(exported, tmp_path, capsys):
    md_export.export_model(nn.Linear(5, 2), {"v": torch.randn(1, 5)}, formats=["onnx"], out_dir=tmp_path / "art")
    _write_pngs(tmp_path / "photos", [(8, 8)])
    assert main(["calibrate", "--artifacts", str(tmp_path / "art"), "--inputs", str(tmp_path / "photos"),
                 "--out", str(tmp_path / "C")]) == 2
    assert "one image input" in capsys.readouterr().err
    _, artifacts = exported
    assert main(["calibrate", "--artifacts", str(artifacts), "--out", str(tmp_path / "C")]) == 2
    assert "needs --inputs" in capsys.readouterr().err
    assert main(["calibrate", "--artifacts", str(artifacts), "--inputs", "x.npz", "--num-prompts", "3",
                 "--out", str(tmp_path / "C")]) == 2
    assert "--num-prompts go with --preset" in capsys.readouterr().err
    assert main(["calibrate", "--inputs", "x.npz", "--out", str(tmp_path / "C")]) == 2
    assert "go with --artifacts" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --preset and --artifacts exclude each other
        main(["calibrate", "--preset", "mobilediffusion-tiny", "--artifacts", str(artifacts), "--out", "C"])
    assert not (tmp_path / "C").exists()


def test_an_unknown_format_version_is_refused_by_quantize(exported, tmp_path, capsys):
    module, artifacts = exported
    calib = tmp_path / "C"
    calibrate_module(module, [{"x": _rows(2)}], calib)
    manifest = json.loads((calib / "calibration.json").read_text())
    del manifest["format_version"]  # written before the format was versioned: read as version 1
    (calib / "calibration.json").write_text(json.dumps(manifest))
    assert len(calibration_feeds(calib, "model", {"x": [1, 3, 16, 16]})) == 2
    manifest["format_version"] = 99
    (calib / "calibration.json").write_text(json.dumps(manifest))
    with pytest.raises(CalibrationError, match="format_version 99"):
        read_calibration_manifest(calib)
    assert main(["quantize", "--artifacts", str(artifacts), *QUANTIZE, "--calibration", str(calib),
                 "--out", str(tmp_path / "Q")]) == 2
    err = capsys.readouterr().err
    assert "format_version 99" in err and "upgrade md-export" in err
    assert not (tmp_path / "Q").exists()
