"""`md-export bench run --plan PLAN.json`: the configuration a plan chose, each network from its own
recipe directory, timed end to end. Timings are never asserted: which files ran, how the items
describe them, and the error paths."""

import json
import shutil

import pytest

from md_export.benchmarks import pipeline_jobs
from md_export.benchmarks.schema import validate
from md_export.export.manifest import read_manifest

FAST = ["--pipeline-warmup", "0", "--pipeline-runs", "1", "--threads", "1", "--no-peak", "--no-progress"]


def _plan(job, choice: dict, directories: dict) -> dict:
    candidates = []
    for component, recipe in choice.items():
        directory = directories[component]
        entry = next(e for e in read_manifest(job / directory)["artifacts"]
                     if e["component"] == component and e["format"] == "onnx")
        candidates.append({"component": component, "recipe": recipe, "directory": directory,
                           "file": entry["file"], "ms": 1.0, "error": None})
    return {"preset": "mobilediffusion-tiny", "runtime": "onnxruntime", "choice": choice,
            "component_candidates": candidates}


@pytest.fixture
def job(onnx_dir, tmp_path):
    """A job folder as README command 1 leaves it: artifacts/, a second recipe directory, and
    plans/onnxruntime/plan.json naming them relative to the folder the job ran in."""
    job = tmp_path / "out"
    shutil.copytree(onnx_dir, job / "artifacts")
    shutil.copytree(onnx_dir, job / "quantized" / "other")
    plan = _plan(job, {"text_encoder": "fp32", "unet": "other", "vae_decoder": "fp32"},
                 {"text_encoder": "artifacts", "unet": "quantized/other", "vae_decoder": "artifacts"})
    for candidate in plan["component_candidates"]:
        candidate["directory"] = f"out/{candidate['directory']}"  # as `md-export run --out out` records them
    (job / "plans" / "onnxruntime").mkdir(parents=True)
    (job / "plans" / "onnxruntime" / "plan.json").write_text(json.dumps(plan))
    return job


def test_plan_choice_runs_each_network_from_its_directory(job, tmp_path, cli, monkeypatch):
    loaded = []
    original = pipeline_jobs.load_runner
    monkeypatch.setattr(pipeline_jobs, "load_runner",
                        lambda path, *args, **kwargs: loaded.append(path) or original(path, *args, **kwargs))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative directories are found from the folders above the plan
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--plan", str(job / "plans" / "onnxruntime" / "plan.json"), "--steps", "1,2",
                *FAST, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    validate(result)
    assert result["source"]["kind"] == "plan"
    names = {i["name"] for i in result["items"]}
    assert names == {"pipeline@64/onnxruntime/plan/1step/nocfg", "pipeline@64/onnxruntime/plan/2step/cfg7.5",
                     "unet_step@64/onnxruntime/plan/cfg"}
    for item in result["items"]:
        assert item["plan_choice"] == {"text_encoder": "fp32", "unet": "other", "vae_decoder": "fp32"}
    unet_path = next(p for p in loaded if "unet" in p.name)
    assert unet_path.parent == job / "quantized" / "other"  # the chosen recipe's file, not the fp32 export's
    assert {p.parent for p in loaded if "unet" not in p.name} == {job / "artifacts"}


def test_plan_errors_are_one_clear_line(job, tmp_path, tmp_path_factory, cli, capsys):
    plan_path = job / "plans" / "onnxruntime" / "plan.json"
    assert cli(["bench", "run", "--plan", str(plan_path), "--level", "component", *FAST]) == 2
    assert "--level pipeline only" in capsys.readouterr().err
    for flag, value in (("--runtime", "litert"), ("--precision", "fp32"), ("--resolution", "128")):
        assert cli(["bench", "run", "--plan", str(plan_path), flag, value, *FAST]) == 2
        assert f"drop {flag}" in capsys.readouterr().err
    nothing = tmp_path / "nothing.json"
    nothing.write_text(json.dumps(json.loads(plan_path.read_text()) | {"choice": None}))
    assert cli(["bench", "run", "--plan", str(nothing), *FAST]) == 2
    assert "chose nothing" in capsys.readouterr().err
    moved = tmp_path_factory.mktemp("away") / "moved.json"  # away from the job: its relative directories are not there
    moved.write_text(plan_path.read_text())
    assert cli(["bench", "run", "--plan", str(moved), *FAST]) == 2
    assert "artifact directory 'out/artifacts' is not here" in capsys.readouterr().err
    (tmp_path / "garbage.json").write_text("{")
    assert cli(["bench", "run", "--plan", str(tmp_path / "garbage.json"), *FAST]) == 2
    assert "cannot read plan" in capsys.readouterr().err
