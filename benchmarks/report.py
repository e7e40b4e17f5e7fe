"""A bench result as JSON, a Markdown table and a PNG chart; every file written atomically
(temp file beside the target, then os.replace) so a reader never sees half a report."""

from __future__ import annotations

import json
from pathlib import Path

from md_export.export import manifest


def check_target(path: str | Path) -> None:
    manifest.check_output_path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    check_target(path)
    manifest.write_bytes_atomic(path, data)


def write_json(path: str | Path, result: dict) -> None:
    write_bytes_atomic(path, (json.dumps(result, indent=2) + "\n").encode())


def _fmt(value, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}{suffix}"


def format_small_ms(value) -> str:
    """Milliseconds that range from a tiny preset's 0.004 to a full pipeline's thousands."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def markdown_table(result: dict) -> str:
    device = result["device"]
    settings = result["settings"]
    lines = [
        f"**{device.get('name')}** ({device.get('cpu') or device.get('machine')}, {result['os'].get('system')} "
        f"{result['os'].get('release')}); threads {settings.get('threads')}, warm-up {settings.get('warmup')}, "
        f"runs {settings.get('runs')}" + (" — **interrupted, partial**" if result.get("interrupted") else ""),
        "",
    ]
    peak = result.get("machine_peak")
    if peak:
        from .machine_peak import describe_peak

        lines += [f"Machine peak: {describe_peak(peak)} ({peak.get('method', '')}).", ""]
    # cold init: onnxruntime without its optimized-graph cache (init ms is the load the runs used);
    # limit: GFLOPs / measured peak per component, the time this host cannot beat (limit.py)
    header = ("item", "runtime", "precision", "threads", "init ms", "cold init ms", "first ms", "p50 ms",
              "mean ± std ms", "p90 ms", "p99 ms", "GFLOP/s", "% of peak", "limit ms", "p50 / limit", "peak RSS MB")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for item in result["items"]:
        stats = item["latency_ms"]
        mean_std = "-" if stats.get("mean") is None else (
            f"{stats['mean']:.2f}" + ("" if stats.get("std") is None else f" ± {stats['std']:.2f}"))
        lines.append("| " + " | ".join([
            item["name"] + (" (partial)" if item.get("interrupted") else ""), item["runtime"], item["precision"],
            str(item.get("threads")), _fmt(item.get("init_ms"), 1), _fmt(item.get("init_ms_cold"), 1),
            _fmt(item.get("first_ms"), 1), _fmt(stats.get("p50")), mean_std, _fmt(stats.get("p90")),
            _fmt(stats.get("p99")), _fmt(item.get("achieved_gflops_per_s"), 1),
            _fmt(item.get("fraction_of_peak"), 1, 100.0, "%"), format_small_ms(item.get("limit_ms")),
            _fmt(item.get("total_over_limit"), 2, suffix="x"), _fmt(item.get("peak_rss_mb"), 0),
        ]) + " |")
    staged = [i for i in result["items"] if i.get("stages")]
    if staged:
        # The breakdown onnxruntime's SD demo prints: median ms per stage over the timed runs.
        # Beside each total, the limit (sum of GFLOPs / peak per component) and how far above it it is.
        lines += ["", "| pipeline | text encoder ms | UNet x N ms | UNet per step ms | VAE decoder ms | total ms "
                      "| limit ms | total / limit |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for item in staged:
            s = item["stages"]
            lines.append(f"| {item['name']} | {_fmt(s.get('text_encoder'), 1)} | {_fmt(s.get('unet'), 1)} "
                         f"| {_fmt(s.get('unet_per_step'), 1)} | {_fmt(s.get('vae_decoder'), 1)} "
                         f"| {_fmt(s.get('total'), 1)} | {format_small_ms(item.get('limit_ms'))} "
                         f"| {_fmt(item.get('total_over_limit'), 2, suffix='x')} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, result: dict) -> None:
    write_bytes_atomic(path, markdown_table(result).encode())


def chart_png(result: dict, title: str | None = None) -> bytes:
    """Horizontal bars: p50 latency per item (component x runtime x precision), p90 as the whisker."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [i for i in result["items"] if i["latency_ms"].get("p50") is not None]
    items.sort(key=lambda i: (i["level"], i.get("component") or "", i["runtime"], i["precision"]))
    colors = {"torch": "#ee4c2c", "onnxruntime": "#1f77b4", "litert": "#ff9f1c", "coreml": "#6a4c93"}
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(items), 2) + 1.2))
    positions = range(len(items))
    p50 = [i["latency_ms"]["p50"] for i in items]
    whisker = [max(0.0, (i["latency_ms"].get("p90") or i["latency_ms"]["p50"]) - i["latency_ms"]["p50"]) for i in items]
    ax.barh(list(positions), p50, xerr=[[0] * len(items), whisker], capsize=3,
            color=[colors.get(i["runtime"], "#888888") for i in items])
    from matplotlib.patches import Patch

    present = sorted({i["runtime"] for i in items})
    ax.legend(handles=[Patch(color=colors.get(r, "#888888"), label=r) for r in present], fontsize=8, loc="lower right")
    ax.set_yticks(list(positions), [i["name"] for i in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency p50, ms (whisker: p90)")
    if p50 and max(p50) / max(min(p50), 1e-9) > 100:
        ax.set_xscale("log")  # components differ by orders of magnitude; linear would hide the small ones
    ax.set_title(title or f"{result['device'].get('name')}: latency per component x runtime x precision", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_chart(path: str | Path, result: dict, title: str | None = None) -> None:
    write_bytes_atomic(path, chart_png(result, title))
