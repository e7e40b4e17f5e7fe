"""The CLI contract: flags, JSON keys, one-line errors with non-zero exit, nothing half-written."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from md_export.cli import main
from md_export.torch_networks import save_checkpoint_dir
from md_export.models import build_component, get_preset


def test_summary_json_keys(capsys):
    assert main(["summary", "--preset", "mobilediffusion-tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "mobilediffusion-tiny" and out["resolution"] == 64
    for component in ("text_encoder", "unet", "vae_decoder"):
        assert isinstance(out["components"][component]["params"], int)
        assert out["components"][component]["gflops"] > 0


def test_summary_full_preset_counts_without_weights(capsys):
    assert main(["summary", "--preset", "sd15", "--resolution", "256", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["components"]["unet"]["params"] == 859_520_964
    assert out["components"]["text_encoder"]["params"] == 123_060_480
    assert out["resolution"] == 256


def test_summary_ablation_has_one_row_per_optimization(capsys):
    assert main(["summary", "--ablation", "--preset", "mobilediffusion-tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["ablation"]
    assert [r["step"] for r in rows] == list(range(9))
    assert rows[0]["preset"] == "sd15-tiny" and rows[-1]["preset"] == "mobilediffusion-tiny"


def test_generate_writes_a_png(tmp_path):
    out = tmp_path / "img.png"
    assert main(["generate", "a cat", "--preset", "mobilediffusion-tiny", "--steps", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]  # no temp file left


def test_generate_with_checkpoint_dir_uses_the_weights(tmp_path, capsys):
    preset = get_preset("mobilediffusion-tiny")
    save_checkpoint_dir(tmp_path / "ckpt", {c: build_component(preset, c, seed=5)
                                            for c in ("text_encoder", "unet", "vae_decoder")})
    images = []
    for extra in ([], ["--checkpoint-dir", str(tmp_path / "ckpt")]):
        out = tmp_path / f"img{len(images)}.png"
        assert main(["generate", "a cat", "--preset", preset.name, "--steps", "2", "--out", str(out)] + extra) == 0
        images.append(np.asarray(Image.open(out)))
    assert "checkpoint" in capsys.readouterr().err
    assert not np.array_equal(images[0], images[1])


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "md_export.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["summary", "--preset", "nope"], "unknown preset 'nope'"),
    (["generate", "x", "--preset", "mobilediffusion-tiny", "--steps", "0"], "--steps must be at least 1"),
    (["generate", "x", "--preset", "mobilediffusion-tiny", "--out", "/nonexistent/dir/x.png"], "cannot write"),
    (["generate", "x", "--preset", "mobilediffusion-tiny", "--resolution", "60"], "not a multiple of 32"),
])
def test_bad_input_is_one_line_and_nonzero_exit(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("md-export: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr


def test_bad_checkpoint_names_the_keys(tmp_path):
    preset = get_preset("mobilediffusion-tiny")
    save_checkpoint_dir(tmp_path, {"unet": build_component(get_preset("sd15-tiny"), "unet")})
    out = tmp_path / "x.png"
    result = run_cli("generate", "x", "--preset", preset.name, "--checkpoint-dir", str(tmp_path), "--out", str(out),
                     "--allow-random", "text_encoder,vae_decoder")  # only the UNet is given: its keys are wrong
    assert result.returncode == 2
    assert "bad checkpoint" in result.stderr and "missing keys" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_every_command_help_renders_as_written():
    """argparse formats help with %: a bare % in a help string printed the parser's internals
    ("prompt fidelity ({'option_strings': ...") instead of the text."""
    import argparse

    from md_export.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    seen = 0
    for parser in parsers(build_parser()):
        text = parser.format_help()
        assert "option_strings" not in text, parser.prog
        seen += 1
    assert seen > 20  # every command and subcommand, not the top parser alone
