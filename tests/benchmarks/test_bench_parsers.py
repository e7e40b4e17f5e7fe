from pathlib import Path

import pytest

from md_export.benchmarks.parsers import ParseError, parse_benchmark_model, parse_perf_test

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_benchmark_model_recent_build():
    out = parse_benchmark_model(fixture("benchmark_model_recent.txt"))
    assert out["init_ms"] == pytest.approx(38.467)  # "Init: 38467" us
    assert out["first_ms"] == pytest.approx(83.235)
    assert out["warmup_avg_ms"] == pytest.approx(80.1114)
    assert out["runs"] == 50  # the second (measured) stats line, not the warm-up one
    lat = out["latency_ms"]
    assert lat["min"] == pytest.approx(77.95) and lat["max"] == pytest.approx(84.1)
    assert lat["mean"] == pytest.approx(79.7609) and lat["std"] == pytest.approx(1.203)
    assert lat["p50"] == pytest.approx(79.42)  # median=
    assert lat["p90"] is None and lat["p99"] is None  # not printed: never guessed
    assert out["peak_rss_mb"] == pytest.approx(95.2)  # periodic-monitoring peak preferred
    assert out["memory_overall_mb"] == pytest.approx(80.1) and out["model_size_mb"] == pytest.approx(12.3)


def test_benchmark_model_old_build():
    out = parse_benchmark_model(fixture("benchmark_model_old.txt"))
    assert out["init_ms"] == pytest.approx(2.95)
    assert out["latency_ms"]["mean"] == pytest.approx(1.6042)
    assert out["latency_ms"]["p50"] is None and out["runs"] == 620
    assert out["first_ms"] == pytest.approx(2.45)  # from the warm-up stats line's first=
    assert out["peak_rss_mb"] == pytest.approx(3.4)


def test_benchmark_model_all_same():
    out = parse_benchmark_model(fixture("benchmark_model_all_same.txt"))
    assert out["runs"] == 3
    assert out["latency_ms"]["p50"] == out["latency_ms"]["max"] == pytest.approx(248.0)
    assert out["latency_ms"]["std"] == 0.0


def test_benchmark_model_failure_is_a_clear_error():
    with pytest.raises(ParseError, match="no inference timings"):
        parse_benchmark_model(fixture("benchmark_model_failed.txt"))


def test_perf_test_with_stats():
    out = parse_perf_test(fixture("perf_test.txt"))
    assert out["init_ms"] == pytest.approx(120.0) and out["first_ms"] == pytest.approx(85.0)
    assert out["runs"] == 50
    lat = out["latency_ms"]
    assert lat["mean"] == pytest.approx(79.8) and lat["p50"] == pytest.approx(79.5)
    assert lat["p90"] == pytest.approx(84.1) and lat["p99"] == pytest.approx(90.3)
    assert lat["min"] == pytest.approx(77.1) and lat["max"] == pytest.approx(91.2)
    assert out["p95_ms"] == pytest.approx(86.2)
    assert out["peak_rss_mb"] == pytest.approx(123456789 / 2 ** 20)


def test_perf_test_newer_total_line_without_stats():
    out = parse_perf_test(fixture("perf_test_total.txt"))
    assert out["latency_ms"]["mean"] == pytest.approx(8.2) and out["latency_ms"]["p50"] is None
    assert out["peak_rss_mb"] == pytest.approx(50.0)


def test_perf_test_failure():
    with pytest.raises(ParseError, match="Average inference time cost"):
        parse_perf_test("Session creation time cost: 0.1 s\n[E:onnxruntime] Load model failed\n")
