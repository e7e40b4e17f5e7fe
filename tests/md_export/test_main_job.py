"""`md-export run`, the README's main job, on a tiny preset."""

import json

from md_export.cli import main
from md_export.main_job import _recipes_beside


def test_main_job_writes_report_images_and_passes_parity(tmp_path, capsys):
    out = tmp_path / "job"
    code = main(["run", "--preset", "mobilediffusion-tiny", "--steps", "2", "--out", str(out)])  # all formats
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["parity"]["passed"] is True
    assert {"torch", "onnx", "tflite"} <= set(report["images"]) <= {"torch", "onnx", "tflite", "onnx-plan",
                                                                    "tflite-plan"}
    for runtime in ("onnx", "tflite"):
        assert (out / f"{runtime}.png").exists()
        assert report["images"][runtime]["image_psnr_db_vs_torch"] > 40.0  # fp32 runtimes, same picture
        assert set(report["images"][runtime]["components"].values()) == {"fp32"}
    # the plan per runtime: a choice over the job's own artifacts, timed end to end as one pipeline
    assert set(report["plans"]) == {"onnx", "tflite"}
    for runtime, job_recipe in (("onnx", "onnx-static-int8"), ("tflite", "tflite-dynamic-int8")):
        plan = json.loads((out / report["plans"][runtime]["plan"]).read_text())
        assert {c["recipe"] for c in plan["component_candidates"]} == {"fp32", job_recipe}  # nothing quantized again
        # the benchmark stage called each component's fp32 and quantized artifacts in alternation,
        # so the plan takes its numbers as they are and times nothing again
        assert plan["measurement"]["component_timing"].startswith("the caller's benchmark, each component's rivals")
        assert plan["measurement"]["retimed_components"] == []
        assert plan["measurement"]["alternated_components"] == ["text_encoder", "unet", "vae_decoder"]
        bench = {name: json.loads((out / files["json"]).read_text()) for name, files in report["benchmark"].items()}
        for candidate in plan["component_candidates"]:
            name = "artifacts" if candidate["recipe"] == "fp32" else candidate["recipe"]
            item = next(i for i in bench[name]["items"] if i["file"] == candidate["file"])
            assert candidate["ms"] == item["latency_ms"]["p50"]
            rival = next(c for c in plan["component_candidates"]
                         if c["component"] == candidate["component"] and c is not candidate)
            rival_dir = "artifacts" if rival["recipe"] == "fp32" else rival["recipe"]
            assert item["alternated_with"] == [f"{rival_dir}/{rival['file']}"]
        # the run's one machine peak, in every directory's result
        assert len({json.dumps(b["machine_peak"], sort_keys=True) for b in bench.values()}) == 1
        assert plan["choice"] is not None and plan["end_to_end"]["choice"]["total_ms"] > 0
        assert plan["end_to_end"]["choice"]["limit_ms"] > 0
        if set(plan["choice"].values()) != {"fp32"}:
            assert report["images"][f"{runtime}-plan"]["components"] == plan["choice"]
            assert report["images"][f"{runtime}-plan"]["image_psnr_db_vs_torch"] >= 30.0  # the plan's gate
    assert not (out / "plans" / "onnxruntime" / "quantized").exists()
    for recipe in ("onnx-static-int8", "tflite-dynamic-int8"):
        for artifact in report["quantized"][recipe]["artifacts"]:
            speed = artifact["speed_vs_source"]
            assert speed["source_p50_ms"] > 0 and "speedup" in speed
            assert speed["method"] == "md-export run's benchmark stage: the two called in alternation", speed
    # the UNet's int8 activations clip their rarest values; the other networks keep min/max ranges
    ranges = {a["component"]: a["activation_ranges"]["method"]
              for a in report["quantized"]["onnx-static-int8"]["artifacts"]}
    assert ranges == {"text_encoder": "minmax", "unet": "percentile", "vae_decoder": "minmax"}
    # the torch reference and the calibration share one child, and the report times each
    assert report["stage_seconds"]["torch reference image"] > 0 and report["stage_seconds"]["calibration"] > 0
    assert report["concurrent_stages"]["export"] == ["torch reference image", "calibration"]
    # calibration: the decoder's latents from runs of the job's own step count, never the job's prompt
    calibration = json.loads((out / "calibration" / "calibration.json").read_text())
    assert calibration["decoder_steps"] == report["steps"] == 2 and calibration["held_out_prompts"] == 1
    assert report["prompt"] not in calibration["prompts"] + calibration["decoder_prompts"]
    assert (out / "report.md").read_text().startswith("# md-export main job: mobilediffusion-tiny")
    assert (out / "artifacts" / "parity.md").exists()
    assert list(report["quantized"]) == ["onnx-static-int8", "tflite-dynamic-int8", "coreml-linear-int8"]
    # Core ML's recipe compresses beside LiteRT's, and the report says so on its stage line
    assert report["concurrent_stages"]["quantize tflite-dynamic-int8"] == ["quantize coreml-linear-int8"]
    assert "quantize coreml-linear-int8: " in (out / "report.md").read_text()
    assert "(beside the quantize tflite-dynamic-int8)" in (out / "report.md").read_text()
    assert set(report["benchmark"]) == {"artifacts", "onnx-static-int8", "tflite-dynamic-int8"}  # Core ML: Mac only
    assert (out / "bench" / "artifacts.png").exists()
    assert "report:" in capsys.readouterr().out


def test_recipes_beside_pairs_core_ml_with_litert_only_when_both_run():
    assert _recipes_beside(["onnx-static-int8", "tflite-dynamic-int8", "coreml-linear-int8"]) == {
        "coreml-linear-int8": "tflite-dynamic-int8"}
    assert _recipes_beside(["onnx-static-int8", "coreml-linear-int8"]) == {}  # alone, not beside onnxruntime's
    assert _recipes_beside(["tflite-dynamic-int8"]) == {}
