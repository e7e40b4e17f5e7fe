import copy

import pytest

from md_export.benchmarks.harness import Timing, make_item
from md_export.benchmarks.schema import SCHEMA, SchemaError, add_item, new_result, validate


def sample_result() -> dict:
    result = new_result({"kind": "preset", "preset": "mobilediffusion-tiny"},
                        {"threads": 2, "warmup": 1, "runs": 3, "providers": ["CPUExecutionProvider"]})
    add_item(result, make_item(name="unet@64/torch/fp32", level="component", component="unet", runtime="torch",
                               precision="fp32", threads=2, timing=Timing(1.0, 2.0, [3.0, 4.0, 5.0]), gflops=0.1))
    return result


def test_new_result_has_the_shared_fields():
    result = sample_result()
    validate(result)
    assert result["schema"] == SCHEMA
    for key in ("device", "os", "versions", "source", "settings", "machine_peak", "items", "runtimes"):
        assert key in result
    assert result["runtimes"] == ["torch"]
    assert {"python", "numpy", "onnxruntime"} <= set(result["versions"])
    item = result["items"][0]
    for key in ("init_ms", "first_ms", "peak_rss_mb", "threads", "achieved_gflops_per_s", "fraction_of_peak"):
        assert key in item
    assert set(item["latency_ms"]) == {"min", "mean", "std", "p50", "p90", "p99", "max"}


@pytest.mark.parametrize("breaks, message", [
    (lambda r: r.update(schema="other/1"), "schema is"),
    (lambda r: r.pop("device"), "missing object 'device'"),
    (lambda r: r["items"][0].pop("first_ms"), "missing 'first_ms'"),
    (lambda r: r["items"][0]["latency_ms"].pop("p99"), "lacks 'p99'"),
    (lambda r: r["items"][0].update(level="galaxy"), "level 'galaxy'"),
    (lambda r: r["items"][0].update(init_ms="fast"), "init_ms is not a number"),
    (lambda r: r["items"][0]["latency_ms"].update(min=100.0), "min <= p50 <= max"),
    (lambda r: r["items"].append(copy.deepcopy(r["items"][0])), "must be unique"),
])
def test_validate_names_the_problem(breaks, message):
    result = copy.deepcopy(sample_result())
    breaks(result)
    with pytest.raises(SchemaError, match=message):
        validate(result)


def test_partial_stats_from_a_phone_tool_validate():
    result = sample_result()
    result["items"][0]["latency_ms"] = {"min": None, "mean": 8.2, "std": None, "p50": None, "p90": None,
                                        "p99": None, "max": None}
    validate(result)
