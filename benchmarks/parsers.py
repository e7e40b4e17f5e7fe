"""Parse the text output of the phone benchmark tools into the shared schema's numbers.

LiteRT `benchmark_model` (formats from its sources, see DESIGN.md section 5): microsecond stats
lines (warm-up first, measured second), the `Inference timings in us:` summary (or the older
`Average inference timings in us:`), init time, and memory footprint lines.
onnxruntime `onnxruntime_perf_test`: session creation (s), first inference (ms), average (ms),
peak working set (bytes), and with -s the P50/P90/P95/P99/P999/Min/Max latencies (s).
"""

from __future__ import annotations

import re

from md_export.errors import MdExportError

from .stats import partial_stats

_NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


class ParseError(MdExportError):
    """Tool output without the numbers a result needs (the tool failed, or an unknown format)."""


def _strip_prefix(line: str) -> str:
    return re.sub(r"^(?:INFO|WARNING|ERROR|VERBOSE):\s*", "", line.strip())


def _fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"([A-Za-z0-9_]+)=([^\s]+)", text))


def _stats_line(line: str) -> dict | None:
    """`count=50 first=... curr=... min=... max=... avg=... std=... [p5= median= p95=]` (us) or
    `count=N curr=V (all same)`."""
    if not line.startswith("count="):
        return None
    fields = _fields(line)
    us = lambda key: float(fields[key]) if key in fields else None  # noqa: E731
    count = int(fields["count"])
    if "(all same)" in line:
        value = us("curr")
        return {"count": count, "first": value, "min": value, "max": value, "avg": value, "std": 0.0,
                "median": value, "p90": value, "p99": value}
    return {"count": count, "first": us("first"), "min": us("min"), "max": us("max"), "avg": us("avg"),
            "std": us("std"), "median": us("median"), "p5": us("p5"), "p95": us("p95")}


def parse_benchmark_model(text: str) -> dict:
    lines = [_strip_prefix(line) for line in text.splitlines()]
    stats_lines = [s for s in (_stats_line(line) for line in lines) if s]
    out: dict = {"tool": "benchmark_model"}
    for line in lines:
        if m := re.match(r"The input model file size \(MB\):\s*" + _NUMBER, line):
            out["model_size_mb"] = float(m.group(1))
        elif m := re.match(r"Initialized session in\s*" + _NUMBER + r"\s*ms", line):
            out["session_init_ms"] = float(m.group(1))
        elif line.startswith("Inference timings in us:"):
            f = dict(re.findall(r"([A-Za-z ()]+):\s*" + _NUMBER, line.split(":", 1)[1]))
            f = {k.strip(): float(v) for k, v in f.items()}
            out["init_ms"] = f.get("Init", 0.0) / 1e3 if "Init" in f else None
            out["first_ms"] = f["First inference"] / 1e3 if "First inference" in f else None
            out["warmup_avg_ms"] = f["Warmup (avg)"] / 1e3 if "Warmup (avg)" in f else None
            out["inference_avg_ms"] = f["Inference (avg)"] / 1e3 if "Inference (avg)" in f else None
        elif line.startswith("Average inference timings in us:"):
            f = {k.strip(): float(v) for k, v in re.findall(r"([A-Za-z ]+):\s*" + _NUMBER, line.split(":", 1)[1])}
            out.setdefault("init_ms", f["Init"] / 1e3 if "Init" in f else None)
            out.setdefault("warmup_avg_ms", f["Warmup"] / 1e3 if "Warmup" in f else None)
            out.setdefault("inference_avg_ms", f["Inference"] / 1e3 if "Inference" in f else None)
        elif m := re.match(r"Memory footprint delta from the start of the tool \(MB\):\s*init=" + _NUMBER
                           + r"\s*overall=" + _NUMBER, line):
            out["memory_init_mb"], out["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
        elif m := re.match(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*" + _NUMBER, line):
            out["peak_memory_mb"] = float(m.group(1))
    if "inference_avg_ms" not in out and len(stats_lines) < 2:
        raise ParseError("benchmark_model output has no inference timings (did the run fail? see its log)")
    measured = stats_lines[-1] if stats_lines else None
    if measured is not None:
        ms = lambda v: None if v is None else v / 1e3  # noqa: E731
        out["runs"] = measured["count"]
        out["latency_ms"] = partial_stats({"min": ms(measured["min"]), "mean": ms(measured["avg"]),
                                           "std": ms(measured["std"]), "p50": ms(measured.get("median")),
                                           "p90": ms(measured.get("p90")), "p99": ms(measured.get("p99")),
                                           "max": ms(measured["max"])})
        if len(stats_lines) >= 2 and out.get("first_ms") is None:
            out["first_ms"] = ms(stats_lines[0]["first"])
    else:
        out["runs"] = None
        out["latency_ms"] = partial_stats({"mean": out["inference_avg_ms"]})
    if out.get("init_ms") is None and "session_init_ms" in out:
        out["init_ms"] = out["session_init_ms"]
    # Peak footprint by periodic monitoring when asked for; else the overall delta is the best bound printed.
    out["peak_rss_mb"] = out.get("peak_memory_mb", out.get("memory_overall_mb"))
    return out


def parse_perf_test(text: str) -> dict:
    out: dict = {"tool": "onnxruntime_perf_test"}
    latencies = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"Session creation time cost:\s*" + _NUMBER + r"\s*s", line):
            out["init_ms"] = float(m.group(1)) * 1e3
        elif m := re.match(r"First inference time cost:\s*" + _NUMBER + r"\s*ms", line):
            out["first_ms"] = float(m.group(1))
        elif m := re.match(r"Total inference requests:\s*([0-9]+)", line):
            out["runs"] = int(m.group(1))
        elif m := re.match(r"Average inference time cost(?: total)?:\s*" + _NUMBER + r"\s*ms", line):
            out["inference_avg_ms"] = float(m.group(1))
        elif m := re.match(r"Peak working set size:\s*([0-9]+)\s*bytes", line):
            out["peak_rss_mb"] = int(m.group(1)) / (1024.0 * 1024.0)
        elif m := re.match(r"(P50|P90|P95|P99|P999|Min|Max) Latency:\s*" + _NUMBER + r"\s*s", line):
            latencies[m.group(1)] = float(m.group(2)) * 1e3
    if "inference_avg_ms" not in out:
        raise ParseError("onnxruntime_perf_test output has no 'Average inference time cost' (did the run fail?)")
    out["latency_ms"] = partial_stats({"min": latencies.get("Min"), "mean": out["inference_avg_ms"],
                                       "p50": latencies.get("P50"), "p90": latencies.get("P90"),
                                       "p99": latencies.get("P99"), "max": latencies.get("Max")})
    out["p95_ms"] = latencies.get("P95")
    return out


def parse_litert_benchmark_json(data: dict) -> dict:
    """The `--result_json` file of ai-edge-litert's `litert-benchmark` CLI (milliseconds already)."""
    latency = data.get("latency")
    if not isinstance(latency, dict) or "median_ms" not in latency:
        raise ParseError("litert-benchmark result has no latency.median_ms")
    return {
        "tool": "litert-benchmark",
        "init_ms": latency.get("init_ms"),
        "first_ms": latency.get("warmup_first_ms"),
        "runs": latency.get("num_runs"),
        "threads": data.get("num_threads"),
        "signature": data.get("signature"),
        "accelerators": data.get("accelerators"),
        "latency_ms": partial_stats({"min": latency.get("min_ms"), "mean": latency.get("avg_ms"),
                                     "std": latency.get("std_ms"), "p50": latency.get("median_ms"),
                                     "max": latency.get("max_ms")}),
    }
