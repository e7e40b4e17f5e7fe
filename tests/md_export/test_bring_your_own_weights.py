"""`--checkpoint-dir` / `--preset` with the field's layouts: a diffusers pipeline folder and a
single-file SD checkpoint, through the CLI and the checks every command runs first."""

import shutil

import pytest
import torch
from safetensors.torch import save_file

from md_export.cli import main
from md_export.errors import MdExportError
from md_export.models import COMPONENTS, get_preset
from md_export.torch_networks import PIPELINE_COMPONENTS, require_checkpoint_components, torch_networks

pytest.importorskip("diffusers")

TINY = "sd15-tiny"  # the tiny diffusers folder's configs are exactly this preset's


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, " ".join(captured.err.split())  # rich wraps long lines


def test_generate_with_a_diffusers_folder_as_checkpoint_or_as_preset(tiny_sd15_diffusers, tmp_path, capsys):
    folder, _ = tiny_sd15_diffusers
    out = tmp_path / "a.png"
    code, err = run(["generate", "a cat", "--preset", TINY, "--checkpoint-dir", str(folder), "--steps", "1",
                     "--out", str(out)], capsys)
    assert code == 0, err
    assert out.is_file() and err.count("(diffusers)") == 3 and "random" not in err
    # the folder as the preset: configs read from it, weights with it
    out = tmp_path / "b.png"
    code, err = run(["generate", "a cat", "--preset", str(folder), "--steps", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.is_file() and err.count("(diffusers)") == 3


def test_export_and_parity_of_a_preset_built_from_a_diffusers_folder(tiny_sd15_diffusers, tmp_path, capsys):
    """The manifest names the folder as preset: parity rebuilds the same model from it."""
    pytest.importorskip("onnxruntime")
    folder, _ = tiny_sd15_diffusers
    out = tmp_path / "export"
    code, err = run(["export", "--preset", str(folder), "--components", "vae_decoder", "--formats", "onnx",
                     "--out", str(out)], capsys)
    assert code == 0, err
    code, err = run(["parity", str(out)], capsys)
    assert code == 0, err


def test_a_preset_that_does_not_fit_the_folder_names_the_fields(tiny_sd15_diffusers, tmp_path, capsys):
    folder, _ = tiny_sd15_diffusers
    code, err = run(["generate", "a cat", "--preset", "mobilediffusion-tiny", "--checkpoint-dir", str(folder),
                     "--steps", "1", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "config does not match preset mobilediffusion-tiny" in err
    assert "block_out_channels: preset (32, 64, 96), checkpoint (32, 64, 128, 128)" in err
    assert not (tmp_path / "x.png").exists()


def test_a_diffusers_folder_without_a_component_is_refused_unless_allowed(tiny_sd15_diffusers, tmp_path):
    folder, _ = tiny_sd15_diffusers
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    shutil.rmtree(partial / "vae")
    preset = get_preset(TINY)
    with pytest.raises(MdExportError, match=r"has no vae/ \(config.json \+ diffusion_pytorch_model.safetensors\)"):
        require_checkpoint_components(preset, partial, PIPELINE_COMPONENTS)
    require_checkpoint_components(preset, partial, PIPELINE_COMPONENTS, ("vae_decoder",))
    _, sources = torch_networks(preset, checkpoint_dir=partial)
    assert sources["vae_decoder"].startswith("random weights") and sources["unet"].endswith("(diffusers)")


def test_a_single_file_checkpoint_is_accepted_by_the_checks(tmp_path):
    """Which components a single file holds comes from its key prefixes (the loading itself is
    tested in tests/models/test_convert_sd_single_file.py)."""
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(4),
               "first_stage_model.decoder.conv_out.bias": torch.zeros(3)}, str(path))
    preset = get_preset(TINY)
    require_checkpoint_components(preset, path, ("unet", "vae_decoder"))
    expected = r"checkpoint file .* has no cond_stage_model\.\* keys.*--allow-random text_encoder"
    with pytest.raises(MdExportError, match=expected):
        require_checkpoint_components(preset, path, COMPONENTS, ("vae_encoder",))


def test_a_missing_checkpoint_path_is_an_error(tmp_path):
    with pytest.raises(MdExportError, match="does not exist"):
        require_checkpoint_components(get_preset(TINY), tmp_path / "nope.safetensors", PIPELINE_COMPONENTS)
