"""Bad paths and numbers on every command that writes: a one-line error, a non-zero exit, no
traceback, and nothing left (or changed) where the output would have gone."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from md_export import export_model
from md_export.cli import main
from md_export.errors import MdExportError
from md_export.torch_networks import require_checkpoint_components, save_checkpoint_dir
from md_export.models import COMPONENTS, build_component, get_preset

TINY = "mobilediffusion-tiny"
UNWRITABLE = "/proc/md-export-test"  # exists as a folder name nobody can create


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """One tiny export (vae_decoder, ONNX), one tiny calibration, and a file and a non-empty folder
    that must survive every failed command untouched."""
    from md_export.calibration.builders import CalibrationSettings, build_calibration
    from md_export.export import export_preset

    root = tmp_path_factory.mktemp("cli_errors")
    export_preset(get_preset(TINY), ["vae_decoder"], ["onnx"], ["fp32"], root / "export")
    build_calibration(get_preset(TINY), root / "calibration", CalibrationSettings(num_prompts=1, steps=1, photos=1))
    (root / "file.txt").write_text("the user's file\n")
    (root / "full" / "sub").mkdir(parents=True)
    (root / "full" / "keep.txt").write_text("the user's data\n")
    return root


def snapshot(root: Path) -> dict:
    """Every path under root with its bytes (files) or None (folders)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run(argv: list[str], capsys) -> tuple[int, str]:
    """main() in-process; argparse errors exit through SystemExit. Any other exception propagates
    and fails the test: that would be a traceback for the user."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


# Each case: argv with {root} for the module's folder and the output it names; "new" outputs must
# not exist afterwards, and nothing else under {root} may change.
EXPORT = ["export", "--preset", TINY, "--components", "vae_decoder", "--formats", "onnx"]
CALIBRATE = ["calibrate", "--preset", TINY, "--num-prompts", "1", "--steps", "1"]
QUANTIZE = ["quantize", "--artifacts", "{root}/export", "--recipe", "onnx-dynamic-int8"]
GENERATE = ["generate", "x", "--preset", TINY, "--steps", "1"]
BENCH = ["bench", "run", "--preset", TINY, "--runtime", "torch", "--components", "vae_decoder", "--no-peak",
         "--no-progress", "--runs", "1", "--warmup", "0"]
CASES = {
    "export: no --out": (EXPORT, None),
    "export: --out an existing file": (EXPORT + ["--out", "{root}/file.txt"], None),
    "export: --out under a file": (EXPORT + ["--out", "{root}/file.txt/out"], None),
    "export: --out unwritable": (EXPORT + ["--out", UNWRITABLE], None),
    "export: --resolution -64": (EXPORT + ["--resolution", "-64", "--out", "{root}/new"], "{root}/new"),
    "export: --resolution 0": (EXPORT + ["--resolution", "0", "--out", "{root}/new"], "{root}/new"),
    "export: --resolution 60": (EXPORT + ["--resolution", "60", "--out", "{root}/new"], "{root}/new"),
    "export: --resolution abc": (EXPORT + ["--resolution", "abc", "--out", "{root}/new"], "{root}/new"),
    "export: --weight-seed abc": (EXPORT + ["--weight-seed", "abc", "--out", "{root}/new"], "{root}/new"),
    "export: --formats nope": (EXPORT + ["--formats", "nope", "--out", "{root}/new/deeper"], "{root}/new"),
    "calibrate: no --out": (CALIBRATE, None),
    "calibrate: --out an existing file": (CALIBRATE + ["--out", "{root}/file.txt"], None),
    "calibrate: --out a non-empty folder": (CALIBRATE + ["--out", "{root}/full"], None),
    "calibrate: --out unwritable": (CALIBRATE + ["--out", UNWRITABLE], None),
    "calibrate: --num-prompts 0": (CALIBRATE + ["--num-prompts", "0", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --num-prompts -1": (CALIBRATE + ["--num-prompts", "-1", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --num-prompts abc": (CALIBRATE + ["--num-prompts", "abc", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --steps 0": (CALIBRATE + ["--steps", "0", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --decoder-steps 0": (CALIBRATE + ["--decoder-steps", "0", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --resolution -64": (CALIBRATE + ["--resolution", "-64", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --resolution 0": (CALIBRATE + ["--resolution", "0", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --resolution 60": (CALIBRATE + ["--resolution", "60", "--out", "{root}/new"], "{root}/new"),
    "calibrate: --seed -1": (CALIBRATE + ["--seed", "-1", "--out", "{root}/new"], "{root}/new"),
    "quantize: no --out": (QUANTIZE, None),
    "quantize: --out an existing file": (QUANTIZE + ["--out", "{root}/file.txt"], None),
    "quantize: --out unwritable": (QUANTIZE + ["--out", UNWRITABLE], None),
    "quantize: --out is --artifacts": (QUANTIZE + ["--out", "{root}/export"], None),
    "quantize: --speed-runs -1": (QUANTIZE + ["--speed-runs", "-1", "--out", "{root}/new"], "{root}/new"),
    "quantize: --speed-runs abc": (QUANTIZE + ["--speed-runs", "abc", "--out", "{root}/new"], "{root}/new"),
    "quantize: --artifacts missing": (["quantize", "--artifacts", "{root}/nope", "--recipe", "onnx-dynamic-int8",
                                       "--out", "{root}/new"], "{root}/new"),
    "quantize: --calibration missing": (["quantize", "--artifacts", "{root}/export", "--recipe", "onnx-static-int8",
                                         "--calibration", "{root}/nope", "--out", "{root}/new"], "{root}/new"),
    "quantize: --calibration is a file": (["quantize", "--artifacts", "{root}/export", "--recipe",
                                           "onnx-static-int8", "--calibration", "{root}/file.txt", "--out",
                                           "{root}/new"], "{root}/new"),
    "generate: --out unwritable": (GENERATE + ["--out", UNWRITABLE + ".png"], None),
    "generate: --out a folder": (GENERATE + ["--out", "{root}/full"], None),
    "generate: --out in a missing folder": (GENERATE + ["--out", "{root}/nope/x.png"], "{root}/nope"),
    "generate: --resolution -64": (GENERATE + ["--resolution", "-64", "--out", "{root}/x.png"], "{root}/x.png"),
    "generate: --resolution 0": (GENERATE + ["--resolution", "0", "--out", "{root}/x.png"], "{root}/x.png"),
    "generate: --steps -1": (GENERATE + ["--steps", "-1", "--out", "{root}/x.png"], "{root}/x.png"),
    "generate: --seed -1": (GENERATE + ["--seed", "-1", "--out", "{root}/x.png"], "{root}/x.png"),
    "generate: --guidance-scale abc": (GENERATE + ["--guidance-scale", "abc", "--out", "{root}/x.png"],
                                       "{root}/x.png"),
    "parity: missing DIR": (["parity", "{root}/nope"], "{root}/nope"),
    "parity: a file as DIR": (["parity", "{root}/file.txt"], None),
    "parity: --threads -1": (["parity", "{root}/export", "--threads", "-1"], "{root}/export/parity.md"),
    "parity: --threads 0": (["parity", "{root}/export", "--threads", "0"], "{root}/export/parity.md"),
    "parity: --threads abc": (["parity", "{root}/export", "--threads", "abc"], "{root}/export/parity.md"),
    "parity: --prompts 0": (["parity", "{root}/export", "--pipeline", "--prompts", "0"], "{root}/export/parity.md"),
    "parity: --steps -1": (["parity", "{root}/export", "--pipeline", "--steps", "-1"], "{root}/export/parity.md"),
    "bench run: --json unwritable": (BENCH + ["--json", UNWRITABLE + ".json"], None),
    "bench run: --json a folder": (BENCH + ["--json", "{root}/full"], None),
    "bench run: --markdown in a missing folder": (BENCH + ["--markdown", "{root}/nope/x.md"], "{root}/nope"),
    "bench run: --runs 0": (BENCH + ["--runs", "0", "--json", "{root}/b.json"], "{root}/b.json"),
    "bench run: --threads -1": (BENCH + ["--threads", "-1", "--json", "{root}/b.json"], "{root}/b.json"),
    "bench run: --warmup -1": (BENCH + ["--warmup", "-1", "--json", "{root}/b.json"], "{root}/b.json"),
    "bench run: --resolution -64": (BENCH + ["--resolution", "-64", "--json", "{root}/b.json"], "{root}/b.json"),
    "bench run: --resolution 0": (BENCH + ["--resolution", "0", "--json", "{root}/b.json"], "{root}/b.json"),
    "bench run: --unet-batch 0": (BENCH + ["--unet-batch", "0", "--json", "{root}/b.json"], "{root}/b.json"),
    "bench run: --runs abc": (BENCH + ["--runs", "abc", "--json", "{root}/b.json"], "{root}/b.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_path_or_number_is_a_clean_error(case, place, capsys):
    argv, new_output = CASES[case]
    before = snapshot(place)
    code, err = run([arg.replace("{root}", str(place)) for arg in argv], capsys)
    assert code not in (0, None), f"{case}: exit {code}"
    assert "Traceback" not in err
    # our errors are one "md-export: error:" line; argparse's usage errors end in "error: ..." too
    assert [line for line in err.splitlines() if "error:" in line], err
    if new_output is not None:
        assert not Path(new_output.replace("{root}", str(place))).exists()
    assert snapshot(place) == before  # the file, the full folder, the export: untouched, nothing added
    assert not Path(UNWRITABLE).exists()


@pytest.mark.parametrize("argv", [
    EXPORT + ["--out", "{root}/file.txt"],
    CALIBRATE + ["--out", "{root}/full"],
])
def test_bad_output_in_a_real_process(argv, place):
    before = snapshot(place)
    result = subprocess.run([sys.executable, "-m", "md_export.cli", *[a.replace("{root}", str(place)) for a in argv]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("md-export: error:")]
    assert len(errors) == 1 and str(place) in errors[0]  # the error names the output
    assert snapshot(place) == before


# ---- finding 1: calibrate never deletes what it did not write ----------------------------------

def test_calibrate_refuses_a_non_empty_folder_and_overwrite_replaces_it_after_success(place, tmp_path, capsys):
    target = tmp_path / "D"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_text("x\n")
    code, err = run(CALIBRATE + ["--out", str(target)], capsys)
    assert code == 2 and f"output directory {target} is not empty" in err and "--overwrite" in err
    assert (target / "keep.txt").read_text() == "x\n" and (target / "sub").is_dir()

    code, err = run(CALIBRATE + ["--out", str(target), "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["calibration.json", "text_encoder.safetensors",
                                                        "unet.safetensors", "vae_decoder.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["D"]  # no staging or set-aside sibling left


# ---- finding 3: a failed quantize leaves no --out behind ---------------------------------------

def test_failed_quantize_leaves_no_output_folder(place, tmp_path, capsys):
    # a calibration without the decoder's data: the recipe fails after --out was created
    broken = tmp_path / "calibration"
    shutil.copytree(place / "calibration", broken)
    manifest = json.loads((broken / "calibration.json").read_text())
    del manifest["files"]["vae_decoder"]
    (broken / "calibration.json").write_text(json.dumps(manifest))
    out = tmp_path / "new" / "quantized"
    code, err = run(["quantize", "--artifacts", str(place / "export"), "--recipe", "onnx-static-int8",
                     "--calibration", str(broken), "--speed-runs", "0", "--out", str(out)], capsys)
    assert code == 2 and "has no data for vae_decoder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration"]  # neither new/ nor new/quantized


def test_failed_quantize_into_an_existing_folder_keeps_it(place, tmp_path, monkeypatch):
    from md_export.quantize import driver

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("kept\n")

    def fail(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(driver, "_quantize_file", fail)
    with pytest.raises(RuntimeError, match="converter crashed"):
        driver.quantize_directory(place / "export", "onnx-dynamic-int8", out, speed_runs=0)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # the user's folder stays, without staging


# ---- finding 4b: a missed --target-psnr fails the command --------------------------------------

def test_missed_target_psnr_exits_1_and_says_the_artifacts_were_written(monkeypatch, tmp_path, capsys):
    from md_export.quantize import driver

    entry = {"file": "unet_64.int8-static.onnx", "component": "unet", "size_bytes": 1000, "recipe": "onnx-static-int8",
             "quantized_from": "unet_64.fp32.onnx", "kernels": None, "speed_vs_source": {"skipped": "--speed-runs 0"},
             "fallback": {"reached": False, "target_psnr_db": 60.0, "plain_psnr_db": 30.0, "final_psnr_db": 41.5,
                          "float_blocks": ["down_blocks.0"]}}
    monkeypatch.setattr(driver, "quantize_directory", lambda *args, **kwargs: [entry])
    code = main(["quantize", "--artifacts", "a", "--recipe", "onnx-static-int8", "--calibration", "c",
                 "--target-psnr", "60", "--out", str(tmp_path / "q")])
    captured = capsys.readouterr()
    assert code == 1
    assert "MISSED" in captured.out
    assert "--target-psnr 60.0 dB missed by unet_64.int8-static.onnx (41.5 dB)" in captured.err
    assert "written" in captured.err
    entry["fallback"]["reached"] = True  # the same run reaching its target passes: the check can tell
    assert main(["quantize", "--artifacts", "a", "--recipe", "onnx-static-int8", "--calibration", "c",
                 "--target-psnr", "60", "--out", str(tmp_path / "q")]) == 0


# ---- finding 5a: calibration of another preset ----------------------------------------------

def test_quantize_refuses_calibration_of_another_preset(place, tmp_path, capsys):
    other = tmp_path / "calibration"
    shutil.copytree(place / "calibration", other)
    manifest = json.loads((other / "calibration.json").read_text())
    manifest["preset"] = "sd15-tiny"
    (other / "calibration.json").write_text(json.dumps(manifest))
    out = tmp_path / "q"
    code, err = run(["quantize", "--artifacts", str(place / "export"), "--recipe", "onnx-static-int8",
                     "--calibration", str(other), "--out", str(out)], capsys)
    assert code == 2 and "sd15-tiny" in err and TINY in err
    assert not out.exists()
    # the matching calibration gets past the check (and quantizes)
    code, err = run(["quantize", "--artifacts", str(place / "export"), "--recipe", "onnx-static-int8",
                     "--calibration", str(place / "calibration"), "--speed-runs", "0", "--out", str(out)], capsys)
    assert code == 0, err


# ---- finding 5b: a checkpoint directory without a component's file ---------------------------

@pytest.fixture(scope="module")
def checkpoint_without_unet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    preset = get_preset(TINY)
    save_checkpoint_dir(directory, {c: build_component(preset, c, seed=5) for c in ("text_encoder", "vae_decoder")})
    return directory


@pytest.mark.parametrize("command", [
    GENERATE + ["--out", "{out}/x.png"],
    EXPORT + ["--components", "unet", "--out", "{out}/export"],
    CALIBRATE + ["--out", "{out}/calibration"],
    ["run", "--preset", TINY, "--formats", "onnx", "--out", "{out}/run"],
    ["prune", "--preset", TINY, "--method", "blocks", "--amount", "1", "--out", "{out}/pruned"],
])
def test_a_missing_component_file_is_an_error_unless_allowed(command, checkpoint_without_unet, tmp_path, capsys):
    argv = [a.replace("{out}", str(tmp_path)) for a in command] + ["--checkpoint-dir", str(checkpoint_without_unet)]
    code, err = run(argv, capsys)
    assert code == 2 and "unet.safetensors" in err and "--allow-random unet" in err
    assert list(tmp_path.iterdir()) == []


def test_allow_random_lets_the_named_components_run_random(checkpoint_without_unet, tmp_path, capsys):
    out = tmp_path / "x.png"
    argv = GENERATE + ["--checkpoint-dir", str(checkpoint_without_unet), "--out", str(out)]
    code, err = run(argv + ["--allow-random", "unet,nope"], capsys)
    assert code == 2 and "--allow-random takes components" in err and "nope" in err
    code, err = run(argv + ["--allow-random", "vae_encoder", "--allow-random", "unet"], capsys)
    assert code == 0 and out.is_file()
    err = " ".join(err.split())  # rich wraps long lines
    assert "unet: random weights" in err and "text_encoder: checkpoint" in err and "vae_decoder: checkpoint" in err
    # calibration also encodes photos: the encoder counts, the flag takes it comma-separated
    with pytest.raises(MdExportError, match="vae_encoder.safetensors"):
        require_checkpoint_components(get_preset(TINY), checkpoint_without_unet, COMPONENTS, ("unet",))
    require_checkpoint_components(get_preset(TINY), checkpoint_without_unet, COMPONENTS, ("unet", "vae_encoder"))


def test_the_shipped_micro_weights_still_load_by_default(tmp_path, capsys):
    micro = get_preset("mobilediffusion-micro")
    require_checkpoint_components(micro, None, COMPONENTS)  # all four files ship
    out = tmp_path / "micro.png"
    code, err = run(["generate", "a red circle", "--preset", micro.name, "--steps", "1", "--out", str(out)], capsys)
    assert code == 0 and out.is_file()
    assert err.count("checkpoint") >= 3 and "random" not in err  # the shipped weights, no random component


# ---- finding 4a: --pipeline that compared nothing ---------------------------------------------

class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


def test_parity_pipeline_that_compared_nothing_fails(place, tmp_path, capsys):
    module_export = tmp_path / "module"
    export_model(Doubler(), {"x": torch.randn(1, 4)}, formats=["onnx"], out_dir=module_export)
    for directory in (module_export, place / "export"):  # a module's export; a preset export of one network
        before = (directory / "parity.md").read_text() if (directory / "parity.md").exists() else None
        code, err = run(["parity", str(directory), "--pipeline"], capsys)
        assert code == 1 and "no pipeline compared" in err
        assert "no pipeline compared" in (directory / "parity.md").read_text()
        if directory == place / "export":  # the module folder stays as the other cases expect it
            if before is None:
                (directory / "parity.md").unlink()
            else:
                (directory / "parity.md").write_text(before)
    assert run(["parity", str(module_export)], capsys)[0] == 0  # without --pipeline the artifacts pass


def test_main_job_refuses_an_earlier_runs_folder_before_any_work(tmp_path, capsys):
    out = tmp_path / "md_export_out"
    out.mkdir()
    (out / "report.md").write_text("an earlier run\n")
    code = main(["run", "--preset", "mobilediffusion-tiny", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "--overwrite" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # nothing written, nothing removed
