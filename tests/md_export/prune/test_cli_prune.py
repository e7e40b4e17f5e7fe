"""md-export prune / distill / train-decoder / ufogen: exit codes, outputs, clear errors."""

import json

from md_export.cli import main
from md_export.models import get_preset, is_preset_dir

TINY = "mobilediffusion-tiny"


def test_prune_then_distill_then_export(tmp_path, capsys):
    pruned, distilled = tmp_path / "pruned", tmp_path / "distilled"
    assert main(["prune", "--preset", TINY, "--method", "channels", "--amount", "0.25", "--out", str(pruned),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unet_params_after"] < report["unet_params_before"]
    assert main(["distill", "--teacher", TINY, "--student", str(pruned), "--steps", "2", "--out", str(distilled),
                 "--lr", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "teacher (before pruning)" in out and "distilled (2 steps; best of 2 validations" in out
    assert "validation output PSNR to the teacher: step 0:" in out and "image PSNR (dB)" in out
    assert is_preset_dir(distilled) and (distilled / "distill_log.jsonl").is_file()
    # the pruned directory goes through export + parity like any preset
    assert main(["export", "--preset", str(distilled), "--components", "unet", "--formats", "onnx",
                 "--out", str(tmp_path / "onnx")]) == 0
    assert main(["parity", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert get_preset(manifest["source"]["preset"]).unet == get_preset(str(distilled)).unet


def test_bad_requests_exit_2_without_output(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["prune", "--preset", TINY, "--method", "blocks", "--amount", "1.5", "--out", str(out)]) == 2
    assert main(["prune", "--preset", str(tmp_path / "nope"), "--method", "channels", "--amount", "0.2",
                 "--out", str(out)]) == 2
    assert main(["distill", "--teacher", TINY, "--student", str(tmp_path), "--steps", "2", "--out", str(out)]) == 2
    assert main(["distill", "--teacher", TINY, "--student", str(tmp_path), "--steps", "0", "--out", str(out)]) == 2
    assert not out.exists()
    errors = capsys.readouterr().err
    assert errors.count("md-export: error:") == 4 and "Traceback" not in errors


def test_train_decoder_and_ufogen_commands(tmp_path, capsys):
    assert main(["train-decoder", "--preset", TINY, "--epochs", "1", "--steps-per-epoch", "2", "--resolution", "32",
                 "--out", str(tmp_path / "dec")]) == 0
    assert "reconstruction PSNR" in capsys.readouterr().out
    assert main(["ufogen", "--preset", TINY, "--steps", "2", "--out", str(tmp_path / "ufo")]) == 0
    assert "step 2: D" in capsys.readouterr().out
    assert is_preset_dir(tmp_path / "dec") and is_preset_dir(tmp_path / "ufo")
    assert (tmp_path / "ufo" / "ufogen_state.pt").is_file()
