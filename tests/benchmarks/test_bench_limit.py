"""The limit beside each end-to-end total: sum over components of GFLOPs x calls / the measured peak
of the component's precision (benchmarks/limit.py). The expected numbers are computed here from
the items' own GFLOPs and the result's peak, not by the code under test. Timings are never asserted."""

import json

import pytest

from md_export.benchmarks.limit import compute_class, limit_basis, limit_ms
from md_export.benchmarks.pipeline_bench import PipelineCase, bench_pipeline
from md_export.benchmarks.schema import validate
from md_export.export.manifest import read_manifest

FAST = ["--warmup", "0", "--runs", "1", "--no-progress", "--threads", "1"]


@pytest.mark.parametrize("precision, kind", [
    ("fp32", "fp32"), ("fp16", "fp32"), ("int8-static", "int8"), ("int8-dynamic", "int8"),
    ("int8-static-s8", "int8"), ("int8-w8a8", "int8"), ("int4-blockwise", "int8"),
    # weights stored small but expanded to float before the arithmetic
    ("int8-weights", "fp32"), ("int4-weights", "fp32"), ("palettized-6bit", "fp32"), ("w8a16", "fp32"),
    ("unknown", "fp32"),
])
def test_which_peak_a_precision_is_held_against(precision, kind):
    assert compute_class(precision) == kind


def test_fraction_of_peak_follows_the_same_rule():
    from md_export.benchmarks.harness import fraction_of_peak

    peak = {"fp32_gflops": 100.0, "int8_gops": 400.0}
    assert fraction_of_peak(50.0, "int8-static", peak) == pytest.approx(0.125)
    assert fraction_of_peak(50.0, "int8-weights", peak) == pytest.approx(0.5)  # fp32 arithmetic


def test_no_peak_or_no_flops_means_no_limit():
    assert limit_ms(limit_basis({"unet": (1.0, 2)}, {"unet": "fp32"}, None)) is None
    assert limit_ms(limit_basis({"unet": (None, 2)}, {"unet": "fp32"}, {"fp32_gflops": 1.0, "int8_gops": 2.0})) is None


def test_every_end_to_end_item_carries_its_limit(onnx_dir, tmp_path, cli):
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    assert cli(["bench", "run", "--artifacts", str(onnx_dir), "--level", "component,pipeline", "--steps", "1,2",
                "--guidance", "on", "--pipeline-warmup", "0", "--pipeline-runs", "1", "--peak-size", "128",
                *FAST, "--json", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    validate(result)
    fp32_peak = result["machine_peak"]["fp32_gflops"]
    manifest_precisions = {e["component"]: e["precision"] for e in read_manifest(onnx_dir)["artifacts"]}
    end_to_end = [i for i in result["items"] if i["level"] in ("pipeline", "unet_step")]
    assert {i["level"] for i in end_to_end} == {"pipeline", "unet_step"}
    for item in end_to_end:
        assert item["limit_ms"] > 0 and item["total_over_limit"] > 0
        # all three networks are fp32 here: GFLOPs of the item / the fp32 peak, in ms
        assert item["limit_ms"] == pytest.approx(item["gflops"] / fp32_peak * 1e3, rel=1e-3)
        assert item["total_over_limit"] == pytest.approx(item["latency_ms"]["p50"] / item["limit_ms"], rel=1e-2)
        for component, precision in item["component_precisions"].items():
            assert precision == manifest_precisions[component]  # what ran, from the manifest
            assert item["limit_basis"][component]["peak"] == "fp32_gflops"
    text = md.read_text()
    assert "| limit ms | total / limit |" in text and "| limit ms | p50 / limit |" in text
    guided = next(i for i in end_to_end if i["name"].endswith("2step/cfg7.5"))
    assert f"| {guided['total_over_limit']:.2f}x |" in text


def test_a_mixed_precision_pipeline_holds_each_component_against_its_own_peak():
    # An int8 UNet between an fp32 text encoder and decoder: the UNet's work counts against the
    # int8 peak, the rest against fp32. The networks are torch eager on the tiny preset; only the
    # precision labels and the peak are what is being tested.
    from md_export.benchmarks.pipeline_jobs import torch_pipeline_networks
    from md_export.benchmarks.targets.host import HostSettings

    loaded = torch_pipeline_networks("mobilediffusion-tiny", None, HostSettings(threads=1))
    peak = {"fp32_gflops": 100.0, "int8_gops": 400.0}
    precisions = {"text_encoder": "fp32", "unet": "int8-static", "vae_decoder": "fp32"}
    case = PipelineCase(2, 7.5)
    item, step = bench_pipeline(loaded.networks, loaded.init_ms, loaded.prediction_type, case, warmup=0, runs=1,
                                name="pipeline@64/onnxruntime/mixed", runtime="onnxruntime", precision="mixed",
                                threads=1, resolution=loaded.resolution, component_gflops=loaded.gflops, peak=peak,
                                component_precisions=precisions)
    g = loaded.gflops
    # guided, 2 steps: text encoder x1 (the empty negative prompt is encoded once per pipeline, in
    # the untimed first call), UNet x 2 steps x 2, decoder x1
    expected = (g["text_encoder"] / 100.0 + g["unet"] * 4 / 400.0 + g["vae_decoder"] / 100.0) * 1e3
    assert item["limit_ms"] == pytest.approx(expected, rel=1e-3)
    assert item["limit_basis"]["unet"]["peak"] == "int8_gops"
    assert item["limit_basis"]["vae_decoder"]["peak"] == item["limit_basis"]["text_encoder"]["peak"] == "fp32_gflops"
    assert item["component_precisions"] == precisions
    assert step["limit_ms"] == pytest.approx(g["unet"] * 2 / 400.0 * 1e3, rel=1e-3)
    assert step["total_over_limit"] == pytest.approx(step["latency_ms"]["p50"] / step["limit_ms"], rel=1e-2)
