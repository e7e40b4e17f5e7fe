"""`md-export plan` on mobilediffusion-tiny: a choice and its candidate table; a candidate whose
image breaks the gate is evaluated, fails, and is never chosen; a decoder that breaks it alone is
screened out before any pipeline runs. No timing is asserted."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from md_export import plan as plan_module
from md_export.cli import main

TINY = ["--preset", "mobilediffusion-tiny", "--runtime", "onnxruntime", "--steps", "1", "--prompts", "1",
        "--timing-runs", "1"]


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "plan"
    assert main(["plan", *TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "plan.json").read_text())


def test_plan_writes_choice_and_candidate_table(tiny_plan):
    out, plan = tiny_plan
    assert plan["preset"] == "mobilediffusion-tiny" and plan["runtime"] == "onnxruntime"
    assert set(plan["choice"]) == {"text_encoder", "unet", "vae_decoder"}
    recipes = {"fp32", *plan_module.RUNTIME_RECIPES["onnxruntime"]}
    assert set(plan["choice"].values()) <= recipes
    assert "skipped" in plan["gates"]["fidelity"]  # random weights: no fidelity gate, and the plan says so
    runnable = {}
    for c in plan["component_candidates"]:
        assert c["recipe"] in recipes
        if c["error"] is None:
            runnable.setdefault(c["component"], set()).add(c["recipe"])
    assert all("fp32" in names for names in runnable.values()) and len(runnable) == 3
    rows = plan["candidates"]
    assert len(rows) == np.prod([len(v) for v in runnable.values()])  # every configuration has a row
    assert [r["estimated_ms"] for r in rows] == sorted(r["estimated_ms"] for r in rows)
    chosen = [r for r in rows if r.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["components"] == plan["choice"]
    assert chosen[0]["passed"] and chosen[0]["min_image_psnr_db"] >= plan["gates"]["min_image_psnr_db"]
    before = rows[:rows.index(chosen[0])]
    # the first passing row is the choice: each row before it failed, or its decoder alone missed the gate
    assert all((r["evaluated"] and not r["passed"]) or (not r["evaluated"] and "alone" in r["screened_out"])
               for r in before)
    screen = plan["decoder_screen"]
    assert set(screen) == runnable["vae_decoder"] - {"fp32"}  # every quantized decoder, on torch's latents
    for recipe, result in screen.items():
        assert result["passed"] == (min(result["image_psnr_db"]) >= plan["gates"]["min_image_psnr_db"])
        if not result["passed"]:
            assert all(not r["evaluated"] for r in rows if r["components"]["vae_decoder"] == recipe
                       and set(r["components"].values()) != {"fp32"})
    baseline = next(r for r in rows if set(r["components"].values()) == {"fp32"})
    assert baseline["evaluated"]  # the fp32 reference row is always measured
    assert any(not r["evaluated"] for r in rows)  # the search stopped: not every combination ran
    text = (out / "plan.md").read_text()
    assert text.startswith("# Shipping plan: mobilediffusion-tiny on onnxruntime")
    assert "| text encoder | UNet | decoder |" in text and "**chosen**" in text


def test_choice_is_timed_end_to_end_beside_fp32_and_the_limit(tiny_plan):
    out, plan = tiny_plan
    measured = plan["end_to_end"]
    assert measured["runs"] == 3 and measured["steps"] == 1
    choice = measured["choice"]
    assert choice["components"] == plan["choice"] and plan["choice_measured_ms"] == choice["total_ms"] > 0
    # each stage's median is part of the whole call's (medians of parts need not add up exactly)
    assert all(0 < choice[f"{stage}_ms"] <= choice["total_ms"] for stage in ("text_encoder", "unet", "vae_decoder"))
    assert choice["limit_ms"] > 0 and choice["total_over_limit"] == pytest.approx(
        choice["total_ms"] / choice["limit_ms"], rel=1e-2)
    assert set(choice["limit_basis"]) == {"text_encoder", "unet", "vae_decoder"}
    # probed before the plan and again right after the pipelines; the limit uses the best of both
    peak = measured["machine_peak"]
    assert len(peak["readings"]) == 2
    assert peak["int8_gops"] == max(r["int8_gops"] for r in peak["readings"])
    assert choice["limit_basis"]["unet"]["peak_value"] in (peak["int8_gops"], peak["fp32_gflops"])
    if "fp32" in measured:  # absent only when fp32 itself is the choice
        assert set(measured["fp32"]["components"].values()) == {"fp32"}
        assert measured["speedup_vs_fp32"] == pytest.approx(measured["fp32"]["total_ms"] / choice["total_ms"], rel=1e-2)
    assert "The choice end to end" in (out / "plan.md").read_text()


def test_end_to_end_counts_the_image_gate_call_made_warm(tiny_plan, tmp_path, monkeypatch):
    """Every network is called once on its reference input when a pipeline opens it, so the image
    gate's generate() is already warm: with --pipeline-runs 1 step 4 times that call and makes no
    other (README command 1's plans saved a whole pipeline run of the choice and of fp32)."""
    source, _ = tiny_plan
    events = []
    real_open, real_generate = plan_module.open_candidate, plan_module.TextToImagePipeline.generate

    class Counted:
        opened = 0

        def __init__(self, runner):
            Counted.opened += 1
            self._runner, self.session = runner, Counted.opened  # this opening, not the artifact
            self.inputs, self.runtime = runner.inputs, runner.runtime

        def run(self, feeds):
            events.append(("run", self.session))
            return self._runner.run(feeds)

    def open_candidate(candidate):
        return Counted(real_open(candidate))

    def generate(pipeline, *args, **kwargs):
        runners = [getattr(pipeline.networks, c) for c in plan_module.COMPONENTS]
        if all(isinstance(r, Counted) for r in runners):  # not the torch reference's pipeline
            events.append(("generate", tuple(r.session for r in runners)))
        return real_generate(pipeline, *args, **kwargs)

    monkeypatch.setattr(plan_module, "open_candidate", open_candidate)
    monkeypatch.setattr(plan_module.TextToImagePipeline, "generate", generate)
    out = tmp_path / "plan_one_run"
    assert main(["plan", *TINY, "--out", str(out), "--artifacts", str(source / "artifacts"),
                 "--calibration", str(source / "calibration"), "--pipeline-runs", "1"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    measured = plan["end_to_end"]
    named = [name for name in ("choice", "fp32") if name in measured]
    assert measured["runs"] == 1 and measured["image_gate_call_counted"] == sorted(named)
    generates = [keys for kind, keys in events if kind == "generate"]
    evaluated = [r for r in plan["candidates"] if r["evaluated"]]
    assert len(generates) == len(evaluated)  # one gate prompt each, and no separate timing call
    for index, (kind, sessions) in enumerate(events):
        if kind == "generate":  # each of its sessions has run before (a warm-up, or an earlier call)
            assert all(("run", session) in events[:index] for session in sessions)


class _Noise:
    """A UNet runner with the real one's interface whose prediction is loud noise."""

    def __init__(self, runner):
        self._runner = runner
        self.inputs, self.runtime = runner.inputs, runner.runtime

    def run(self, feeds):
        shape = feeds["latent"].shape
        return {"prediction": np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 50}


def _plan_with_broken(tiny_plan, out: Path, monkeypatch, component: str, recipe: str, wrapper) -> tuple[dict, list]:
    """The plan again over the tiny plan's artifacts, with one candidate's runner wrapped to break
    it and made the fastest by far, so it heads the ranking; returns (plan.json, runners opened)."""
    source, _ = tiny_plan
    real_open, real_time = plan_module.open_candidate, plan_module.time_candidates
    opened = []

    def open_candidate(candidate):
        opened.append((candidate.component, candidate.recipe))
        runner = real_open(candidate)
        return wrapper(runner) if (candidate.component, candidate.recipe) == (component, recipe) else runner

    def time_candidates(candidates, runs, progress):
        timed = real_time(candidates, runs, progress)
        return [replace(c, ms=1e-6) if (c.component, c.recipe) == (component, recipe) and c.ms is not None else c
                for c in timed]

    monkeypatch.setattr(plan_module, "open_candidate", open_candidate)
    monkeypatch.setattr(plan_module, "time_candidates", time_candidates)
    assert main(["plan", *TINY, "--out", str(out), "--artifacts", str(source / "artifacts"),
                 "--calibration", str(source / "calibration")]) == 0
    return json.loads((out / "plan.json").read_text()), opened


def test_candidate_that_breaks_the_image_gate_is_never_chosen(tiny_plan, tmp_path, monkeypatch):
    broken = "onnx-dynamic-int8"
    second = tmp_path / "plan2"
    plan, _ = _plan_with_broken(tiny_plan, second, monkeypatch, "unet", broken, _Noise)
    rows = plan["candidates"]
    assert rows[0]["components"]["unet"] == broken
    failed = [r for r in rows if r["components"]["unet"] == broken and r["evaluated"]]
    assert failed and all(not r["passed"] and "image PSNR" in r["reason"] for r in failed)
    assert plan["choice"]["unet"] != broken
    assert not any(r.get("chosen") for r in rows if r["components"]["unet"] == broken)
    assert not (second / "artifacts").exists() and not (second / "calibration").exists()  # reused, not redone


class _NoisyDecoder(_Noise):
    def run(self, feeds):
        latent = feeds["latent"]
        size = latent.shape[-1] * 8
        return {"image": np.random.default_rng(0).uniform(-1, 1, (latent.shape[0], 3, size, size)).astype(np.float32)}


def test_decoder_that_alone_breaks_the_image_gate_is_screened_out(tiny_plan, tmp_path, monkeypatch):
    """The decoder alone, on the torch pipeline's latents, misses the gate: none of its
    configurations runs a pipeline, none is chosen, and the plan says why."""
    broken = "onnx-fp16"
    second = tmp_path / "plan3"
    plan, opened = _plan_with_broken(tiny_plan, second, monkeypatch, "vae_decoder", broken, _NoisyDecoder)
    assert plan["decoder_screen"][broken]["passed"] is False
    assert max(plan["decoder_screen"][broken]["image_psnr_db"]) < 15  # uniform noise against a picture
    rows = [r for r in plan["candidates"] if r["components"]["vae_decoder"] == broken]
    assert rows and rows[0] is plan["candidates"][0]  # the fastest by far, so it would have been evaluated first
    assert all(not r["evaluated"] and "alone" in r["screened_out"] for r in rows)
    assert plan["choice"]["vae_decoder"] != broken
    # opened once for the screen (after the timing), never for a pipeline
    assert opened.count(("vae_decoder", broken)) == 2
    assert Counter(opened) == _expected_opens(plan)
    assert "not evaluated: decoder onnx-fp16 alone" in (second / "plan.md").read_text()


def _expected_opens(plan: dict) -> Counter:
    """How often each artifact should be opened: once to time it, once more if a quantized decoder
    (the screen), and once per evaluated configuration that has it, unless a kept pipeline (the
    choice, fp32) already holds its runner: a second session of it would double its memory."""
    expected = Counter()
    for c in plan["component_candidates"]:
        if c["error"] is None or c["error"].startswith("does not run"):
            expected[(c["component"], c["recipe"])] += 1
    for recipe in plan["decoder_screen"]:
        expected[("vae_decoder", recipe)] += 1
    kept = set()
    for row in plan["candidates"]:
        if row["evaluated"]:
            parts = set(row["components"].items())
            expected.update(parts - kept)
            if row.get("chosen") or set(row["components"].values()) == {"fp32"}:
                kept |= parts
    return expected


def test_no_passing_configuration_fails_with_the_plan_written(tiny_plan, tmp_path, capsys):
    out, _ = tiny_plan
    target = tmp_path / "impossible"
    code = main(["plan", *TINY, "--out", str(target), "--artifacts", str(out / "artifacts"),
                 "--calibration", str(out / "calibration"), "--min-psnr", "1000", "--max-evaluations", "3"])
    assert code == 1
    plan = json.loads((target / "plan.json").read_text())
    evaluated = [r for r in plan["candidates"] if r["evaluated"]]
    assert plan["choice"] is None and all(not r["passed"] for r in evaluated)
    assert len(evaluated) <= 4  # three, and the fp32 reference row: the search gives up, it does not run all
    assert "passed the gates" in capsys.readouterr().err


def test_refuses_a_non_empty_out_without_overwrite(tiny_plan, capsys):
    out, _ = tiny_plan
    assert main(["plan", *TINY, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_unet_calls_per_step_follow_guidance_and_batch():
    entry = {"inputs": [{"name": "latent", "shape": [1, 4, 8, 8]}]}
    assert plan_module.unet_calls_per_step(entry, guidance=True) == 2
    assert plan_module.unet_calls_per_step(entry, guidance=False) == 1
    entry["inputs"][0]["shape"][0] = 2
    assert plan_module.unet_calls_per_step(entry, guidance=True) == 1


def test_close_rivals_from_a_callers_benchmark_are_timed_again_in_alternation(monkeypatch):
    """Medians from elsewhere within 25% of each other (LiteRT's int8 and fp32 UNet on AVX2), or
    under a second a call however far apart (a text encoder), are timed again side by side; long
    rivals far apart keep the caller's numbers."""
    Candidate = plan_module.ComponentCandidate
    given = [Candidate("text_encoder", "fp32", ms=10.0), Candidate("text_encoder", "int8", ms=30.0),
             Candidate("unet", "fp32", ms=1100.0), Candidate("unet", "int8", ms=1000.0),
             Candidate("vae_decoder", "fp32", ms=5000.0), Candidate("vae_decoder", "int8", ms=2000.0),
             Candidate("vae_decoder", "int4", error="does not run")]
    timed_again = []

    def time_candidates(candidates, runs, progress):
        timed_again.append(([(c.component, c.recipe) for c in candidates], runs))
        return [replace(c, ms=c.ms + 1000) for c in candidates]

    monkeypatch.setattr(plan_module, "time_candidates", time_candidates)
    result, close = plan_module.retime_close_rivals(given, 3, lambda message: None)
    assert close == ["text_encoder", "unet"]
    assert timed_again == [([("text_encoder", "fp32"), ("text_encoder", "int8"), ("unet", "fp32"), ("unet", "int8")], 3)]
    assert [c.ms for c in result] == [1010.0, 1030.0, 2100.0, 2000.0, 5000.0, 2000.0, None]  # order, the rest kept
    assert plan_module.retime_close_rivals(given[4:], 3, lambda message: None) == (given[4:], [])


def test_the_plans_own_calibration_fits_it_and_a_mismatched_one_is_named(tiny_plan, tmp_path):
    out, plan = tiny_plan
    calibration = json.loads((out / "calibration" / "calibration.json").read_text())
    assert calibration["decoder_steps"] == plan["measurement"]["steps"] == 1  # the plan's own step count
    assert calibration["held_out_prompts"] == plan["gates"]["image_prompts"]  # its gate prompts left out
    assert plan["calibration_notes"] == []
    gate = [("a red fox in the snow", 0)]
    (tmp_path / "calibration.json").write_text(json.dumps({"steps": 2, "prompts": ["a red fox in the snow"],
                                                           "files": {}}))
    notes = plan_module.calibration_notes(tmp_path, 4, gate)  # a calibration written before decoder_steps
    assert len(notes) == 2
    assert "2-step runs and this plan samples 4 steps" in notes[0] and "--decoder-steps 4" in notes[0]
    assert "1 image gate prompt(s) are in the calibration set" in notes[1]
    (tmp_path / "calibration.json").write_text(json.dumps({"steps": 2, "decoder_steps": 4, "prompts": ["other"],
                                                           "decoder_prompts": ["another"], "files": {}}))
    assert plan_module.calibration_notes(tmp_path, 4, gate) == []
    plan_with_notes = dict(plan, calibration_notes=notes)
    assert f"**Calibration:** {notes[0]}." in plan_module.markdown(plan_with_notes)


def test_an_alternative_decoder_is_a_candidate_held_to_the_same_gates(tiny_plan, tmp_path, monkeypatch):
    """--alt-decoder: another preset's decoder (the TAESD-style one; random weights, so another
    picture) is exported, quantized, timed and screened out by the image gate; the preset's own
    decoder from a checkpoint (the same weights, another source) passes and, made the fastest,
    ships: its pipeline runs end to end and the limit counts its own GFLOPs."""
    from md_export.models import build_component, get_preset
    from md_export.torch_networks import save_checkpoint_dir

    source, _ = tiny_plan
    same = tmp_path / "same-decoder"
    save_checkpoint_dir(same, {"vae_decoder": build_component(get_preset("mobilediffusion-tiny"), "vae_decoder",
                                                              seed=0)})
    own, taesd = "mobilediffusion-tiny/fp32", "mobilediffusion-taesd-tiny"
    real_time = plan_module.time_candidates

    def time_candidates(candidates, runs, progress):
        return [replace(c, ms=1e-6) if c.recipe == own and c.ms is not None else c
                for c in real_time(candidates, runs, progress)]

    monkeypatch.setattr(plan_module, "time_candidates", time_candidates)
    out = tmp_path / "plan-alt"
    assert main(["plan", *TINY, "--out", str(out), "--artifacts", str(source / "artifacts"),
                 "--calibration", str(source / "calibration"), "--alt-decoder", taesd,
                 "--alt-decoder", f"mobilediffusion-tiny={same}"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    decoders = {c["recipe"]: c for c in plan["component_candidates"] if c["component"] == "vae_decoder"}
    for recipe in ("fp32", "onnx-fp16", "onnx-dynamic-int8", "onnx-static-int8"):
        alt = decoders[f"{taesd}/{recipe}"]
        assert alt["error"] is None and alt["ms"] > 0, alt
        assert Path(alt["directory"]).is_relative_to(out / "decoders" / taesd)
        # another decoder's picture: far under the gate on torch's own latents, never evaluated
        screen = plan["decoder_screen"][f"{taesd}/{recipe}"]
        assert screen["passed"] is False and max(screen["image_psnr_db"]) < 20, screen
    assert all(r["screened_out"] for r in plan["candidates"] if r["components"]["vae_decoder"].startswith(taesd))
    # the same weights through another checkpoint: the same picture, so it passes and, fastest, ships
    assert plan["decoder_screen"][own]["passed"] and min(plan["decoder_screen"][own]["image_psnr_db"]) > 60
    assert plan["choice"]["vae_decoder"] == own
    choice = plan["end_to_end"]["choice"]
    assert choice["total_ms"] > 0 and choice["limit_ms"] > 0
    assert [d["preset"] for d in plan["alt_decoders"]] == [taesd, "mobilediffusion-tiny"]
    assert ("Decoders: the preset's own; mobilediffusion-taesd-tiny's, random weights (seed 0); "
            f"mobilediffusion-tiny's, checkpoint {same / 'vae_decoder.safetensors'} (candidates named PRESET/RECIPE).") in (
        out / "plan.md").read_text()


@pytest.mark.parametrize("value, message", [
    ("mobilediffusion-micro", "at 1/4 scale"),  # another latent space
    ("mobilediffusion-tiny", "the same decoder with the same weights"),
])
def test_an_alternative_decoder_that_cannot_stand_in_is_refused_before_any_work(tmp_path, capsys, value, message):
    out = tmp_path / "refused"
    assert main(["plan", *TINY, "--out", str(out), "--alt-decoder", value]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists()
