"""The one result schema shared by every runtime and device (host, adb phone, Mac).

    {"schema": "md-export-bench/1", "created", "interrupted",
     "device": {"name", "kind", "machine", "cpu", "cores"}, "os": {"system", "release", "version"},
     "runtimes": [...], "versions": {tool: version},
     "source": {"kind": "artifacts"|"artifact"|"preset", ...},
     "settings": {"threads", "warmup", "runs", "min_seconds", "providers", "delegate", "seed"},
     "machine_peak": {"fp32_gflops", "int8_gops", ...} | null,
     "items": [{"name", "level", "component", "runtime", "precision", "format", "file", "sha256",
                "resolution", "batch", "inputs", "threads", "init_ms", "first_ms", "peak_rss_mb",
                "runs", "latency_ms": {min, mean, std, p50, p90, p99, max},
                "gflops", "achieved_gflops_per_s", "fraction_of_peak", "stages"?,
                onnxruntime items: "init_ms_cold", "init_ms_cached", "init_ms_cache_write",
                    "ort_cache": {component: {"state", "reason", "file", "key"}},
                pipeline and unet_step items: "limit_ms", "total_over_limit", "limit_basis",
                    "component_precisions"}]}

Keys are only ever added, never renamed: older results stay readable. Optional keys may be absent
(results written before they existed, other runtimes) or null (nothing to compute them from).

`validate` is what `bench compare` and the tests use: it names every problem it finds.
"""

from __future__ import annotations

import datetime
import os
import platform

from md_export.errors import MdExportError

from .stats import STAT_KEYS

SCHEMA = "md-export-bench/1"
LEVELS = ("component", "unet_step", "pipeline")
VERSIONED_TOOLS = ("md-export", "numpy", "torch", "onnxruntime", "ai-edge-litert", "coremltools")
ITEM_NUMBERS = ("init_ms", "first_ms", "peak_rss_mb")
# Optional, checked only when present and not null.
OPTIONAL_NUMBERS = ("init_ms_cold", "init_ms_cached", "init_ms_cache_write", "limit_ms", "total_over_limit")
ITEM_REQUIRED = ("name", "level", "runtime", "precision", "threads", "runs", "latency_ms") + ITEM_NUMBERS


class SchemaError(MdExportError):
    """A result file that is not an md-export bench result."""


def tool_versions(tools=VERSIONED_TOOLS) -> dict[str, str]:
    from md_export.export.manifest import tool_versions as package_versions

    return {"python": platform.python_version()} | package_versions(tools)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_device() -> dict:
    return {"name": platform.node() or "host", "kind": "host", "machine": platform.machine(), "cpu": _cpu_name(),
            "cores": os.cpu_count()}


def host_os() -> dict:
    return {"system": platform.system(), "release": platform.release(), "version": platform.version()}


def new_result(source: dict, settings: dict, device: dict | None = None, os_info: dict | None = None,
               versions: dict | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "interrupted": False,
        "device": device or host_device(),
        "os": os_info or host_os(),
        "runtimes": [],
        "versions": versions or tool_versions(),
        "source": source,
        "settings": settings,
        "machine_peak": None,
        "items": [],
    }


def add_item(result: dict, item: dict) -> None:
    result["items"].append(item)
    if item["runtime"] not in result["runtimes"]:
        result["runtimes"].append(item["runtime"])


def item_key(item: dict) -> str:
    """What identifies "the same measurement" across two result files (compare matches on it)."""
    return item["name"]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(result: dict) -> None:
    problems = []
    if not isinstance(result, dict):
        raise SchemaError("a bench result is a JSON object")
    if result.get("schema") != SCHEMA:
        problems.append(f"schema is {result.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("device", "os", "versions", "source", "settings"):
        if not isinstance(result.get(key), dict):
            problems.append(f"missing object {key!r}")
    for key in ("runtimes", "items"):
        if not isinstance(result.get(key), list):
            problems.append(f"missing list {key!r}")
    for index, item in enumerate(result.get("items") or []):
        where = f"items[{index}] ({item.get('name', '?') if isinstance(item, dict) else '?'})"
        if not isinstance(item, dict):
            problems.append(f"{where} is not an object")
            continue
        for key in ITEM_REQUIRED:
            if key not in item:
                problems.append(f"{where}: missing {key!r}")
        if "level" in item and item["level"] not in LEVELS:
            problems.append(f"{where}: level {item['level']!r} not one of {LEVELS}")
        for key in ITEM_NUMBERS + OPTIONAL_NUMBERS:
            if key in item and item[key] is not None and not _is_number(item[key]):
                problems.append(f"{where}: {key} is not a number")
        stats = item.get("latency_ms")
        if isinstance(stats, dict):
            for key in STAT_KEYS:
                if key not in stats:
                    problems.append(f"{where}: latency_ms lacks {key!r}")
                elif stats[key] is not None and not _is_number(stats[key]):
                    problems.append(f"{where}: latency_ms.{key} is not a number")
            present = [stats[k] for k in ("min", "p50", "max") if _is_number(stats.get(k))]
            if present != sorted(present):
                problems.append(f"{where}: latency_ms min <= p50 <= max does not hold")
        elif "latency_ms" in item:
            problems.append(f"{where}: latency_ms is not an object")
    names = [i.get("name") for i in result.get("items") or [] if isinstance(i, dict)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"item names must be unique (compare matches on them): {duplicates}")
    if problems:
        raise SchemaError("not a valid bench result: " + "; ".join(problems[:10])
                          + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
