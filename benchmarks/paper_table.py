"""The MobileDiffusion-style table on this host (`md-export bench paper --out DIR`).

For the `mobilediffusion` preset at 512x512: per component params and GFLOPs, latency per runtime x
precision (torch eager, and onnxruntime / LiteRT on the exported artifacts: whatever precisions the
artifact directory holds, int8 included), the one-step and 8-step (guided) end-to-end latency; and
the UNet step of the `sd15` preset through the same runtime (torch eager: no export of an 860M-param
UNet needed), with the sd15 / mobilediffusion ratio. Writes paper.json (the shared schema plus a
`paper_table` section), paper.md and paper.png into DIR.

Without --artifacts it exports the preset's three networks as ONNX and LiteRT fp32 into DIR/artifacts
first (minutes at full size).
"""

from __future__ import annotations

import gc
from pathlib import Path

from md_export.errors import MdExportError

from .pipeline_bench import PipelineCase, bench_pipeline
from .interrupts import sigterm_as_interrupt
from .progress import BenchProgress
from .report import format_small_ms, markdown_table, write_bytes_atomic, write_chart, write_json
from .run_jobs import run_jobs
from .schema import add_item, new_result
from .targets.host import HostSettings, artifact_dir_jobs, preset_jobs

COMPONENTS = ("text_encoder", "unet", "vae_decoder")
CASES = (PipelineCase(1, 1.0), PipelineCase(8, 7.5))  # one-step (no guidance), 8-step DDIM with guidance


def _export(preset_name: str, resolution: int, out: Path, formats: list[str], progress: BenchProgress) -> Path:
    from md_export.export import export_preset
    from md_export.models import get_preset

    directory = out / "artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    with progress.item(f"export {preset_name} {','.join(formats)} fp32 at {resolution}", None):
        export_preset(get_preset(preset_name), list(COMPONENTS), formats, ["fp32"], directory, [resolution])
    return directory


def _costs(preset_name: str, resolution: int) -> dict:
    from md_export.summary import component_cost
    from md_export.models import get_preset

    preset = get_preset(preset_name)
    return {c: component_cost(preset, c, resolution) for c in COMPONENTS}


def paper_rows(result: dict, preset_name: str, baseline: str, resolution: int, costs: dict) -> dict:
    """The table itself, from the measured items: one row per component, one column per runtime x precision."""
    items = result["items"]
    columns = sorted({(i["runtime"], i["precision"]) for i in items if i["level"] == "component"
                      and i.get("preset", preset_name) == preset_name})
    rows = []
    for component in COMPONENTS:
        latency = {}
        for runtime, precision in columns:
            match = [i for i in items if i["level"] == "component" and i["component"] == component
                     and i["runtime"] == runtime and i["precision"] == precision and i.get("batch", 1) == 1
                     and i.get("preset", preset_name) == preset_name]
            if match:
                latency[f"{runtime}/{precision}"] = {"p50_ms": match[0]["latency_ms"]["p50"],
                                                     "fraction_of_peak": match[0]["fraction_of_peak"]}
        rows.append({"component": component, "params": costs[component].params,
                     "gflops": round(costs[component].gflops, 2), "latency": latency})
    end_to_end = {i["name"]: {"p50_ms": i["latency_ms"]["p50"], "stages": i.get("stages"),
                              "limit_ms": i.get("limit_ms"), "total_over_limit": i.get("total_over_limit")}
                  for i in items if i["level"] == "pipeline"}
    ratios = {}
    for item in items:
        if item["level"] == "component" and item["component"] == "unet" and item.get("preset") == baseline:
            ours = [i for i in items if i["level"] == "component" and i["component"] == "unet"
                    and i["runtime"] == item["runtime"] and i["precision"] == item["precision"]
                    and i.get("preset", preset_name) == preset_name and i.get("batch", 1) == item.get("batch", 1)]
            if ours:
                ratios[f"{item['runtime']}/{item['precision']}"] = {
                    f"{baseline}_ms": item["latency_ms"]["p50"], f"{preset_name}_ms": ours[0]["latency_ms"]["p50"],
                    "ratio": round(item["latency_ms"]["p50"] / ours[0]["latency_ms"]["p50"], 3)}
    return {"preset": preset_name, "baseline": baseline, "resolution": resolution, "rows": rows,
            "end_to_end": end_to_end, "unet_step_ratio": ratios}


def paper_markdown(table: dict, result: dict) -> str:
    columns = sorted({k for row in table["rows"] for k in row["latency"]})
    peak = result.get("machine_peak") or {}
    lines = [f"## {table['preset']} at {table['resolution']}x{table['resolution']} on {result['device']['cpu']} "
             f"({result['settings']['threads']} threads)", ""]
    if peak:
        from .machine_peak import describe_peak

        lines += [f"Machine peak: {describe_peak(peak)}.", ""]
    lines.append("| component | params (M) | GFLOPs | " + " | ".join(f"{c} p50 ms (% peak)" for c in columns) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(columns))
    for row in table["rows"]:
        cells = []
        for c in columns:
            cell = row["latency"].get(c)
            if cell is None:
                cells.append("-")
            else:
                fraction = cell["fraction_of_peak"]
                cells.append(f"{cell['p50_ms']:.1f}" + (f" ({fraction:.0%})" if fraction is not None else ""))
        lines.append(f"| {row['component']} | {row['params'] / 1e6:.1f} | {row['gflops']:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "| end to end | p50 ms | text encoder | UNet x N | per step | VAE decoder | limit ms | total / limit |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e2e in table["end_to_end"].items():
        s = e2e["stages"] or {}
        limit, ratio = e2e.get("limit_ms"), e2e.get("total_over_limit")
        lines.append(f"| {name} | {e2e['p50_ms']:.0f} | {s.get('text_encoder', 0):.0f} | {s.get('unet', 0):.0f} "
                     f"| {s.get('unet_per_step', 0):.0f} | {s.get('vae_decoder', 0):.0f} "
                     f"| {format_small_ms(limit)} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    lines += ["", f"| UNet step (one call, batch 1) | {table['baseline']} ms | {table['preset']} ms | ratio |",
              "|---|---:|---:|---:|"]
    for runtime, r in table["unet_step_ratio"].items():
        lines.append(f"| {runtime} | {r[table['baseline'] + '_ms']:.0f} | {r[table['preset'] + '_ms']:.0f} "
                     f"| {r['ratio']:.2f}x |")
    return "\n".join(lines) + "\n\n### Every measurement\n\n" + markdown_table(result)


def run_paper_table(args) -> int:
    from .machine_peak import measure_machine_peak

    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.pipeline_runs < 1:
        raise MdExportError("--runs, --pipeline-runs and --threads must be >= 1, --warmup >= 0")
    unknown = set(args.pipeline_runtimes.split(",")) - {"torch", "onnxruntime", "litert", ""}
    if unknown:
        raise MdExportError(f"--pipeline-runtimes: unknown {', '.join(sorted(unknown))}; use torch, onnxruntime, litert")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise MdExportError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = HostSettings(threads=args.threads, ort_cache=args.ort_cache)
    result = new_result({"kind": "paper_table", "preset": args.preset, "baseline": args.baseline,
                         "resolution": args.resolution, "artifacts": args.artifacts},
                        {"threads": args.threads, "warmup": args.warmup, "runs": args.runs, "pipeline_runs": args.pipeline_runs,
                         "providers": ["CPUExecutionProvider"], "delegate": "xnnpack (CPU)", "seed": 0})
    costs = _costs(args.preset, args.resolution)
    with BenchProgress(enabled=not args.no_progress) as progress, sigterm_as_interrupt():
        try:
            with progress.item("machine peak (GEMM fp32 / int8)", None):
                result["machine_peak"] = measure_machine_peak(args.threads, args.peak_size)
            artifacts = Path(args.artifacts) if args.artifacts else _export(
                args.preset, args.resolution, out, args.formats.split(","), progress)
            jobs = preset_jobs(args.preset, settings, list(COMPONENTS), args.resolution)
            jobs += artifact_dir_jobs(artifacts, settings, None, None, list(COMPONENTS), args.resolution)[0]
            # The baseline's UNet step through torch: same runtime, same definition (one batch-1 call).
            baseline_jobs = preset_jobs(args.baseline, settings, ["unet"], args.resolution)
            for job in baseline_jobs:
                job.name = f"{args.baseline}:{job.name}"  # item names are unique keys (bench compare)
            jobs += baseline_jobs
            for job in jobs:
                job.extra.setdefault("preset", args.preset)
            run_jobs(jobs, result, args.warmup, args.runs, 0.0, args.threads, progress)
            if not result["interrupted"]:
                _pipelines(args, settings, artifacts, result, progress)
        except KeyboardInterrupt:
            result["interrupted"] = True
    result["paper_table"] = paper_rows(result, args.preset, args.baseline, args.resolution, costs)
    write_json(out / "paper.json", result)
    text = paper_markdown(result["paper_table"], result)
    write_bytes_atomic(out / "paper.md", text.encode())
    if result["items"]:
        write_chart(out / "paper.png", result, f"{args.preset} at {args.resolution}: latency per component x runtime x precision")
    print(text)
    print(f"wrote {out / 'paper.json'}, {out / 'paper.md'}, {out / 'paper.png'}")
    return 130 if result["interrupted"] else 0


def _pipelines(args, settings, artifacts: Path, result: dict, progress: BenchProgress) -> None:
    from md_export.export.manifest import read_manifest

    from .pipeline_jobs import artifact_pipeline_networks, torch_pipeline_networks

    manifest = read_manifest(artifacts)
    combos = sorted({(e["format"], e["precision"]) for e in manifest["artifacts"] if e["format"] in ("onnx", "tflite")})
    wanted = args.pipeline_runtimes.split(",")
    loaders = []
    if "torch" in wanted:
        loaders.append(("torch", "fp32", lambda: torch_pipeline_networks(args.preset, args.resolution, settings)))
    for fmt, precision in combos:
        runtime = {"onnx": "onnxruntime", "tflite": "litert"}[fmt]
        if runtime not in wanted:
            continue
        loaders.append((runtime, precision, lambda r=runtime, p=precision: artifact_pipeline_networks(
            artifacts, r, p, args.resolution, settings)))
    for runtime, precision, load in loaders:
        try:
            loaded = load()
        except MdExportError as exc:
            progress.note(f"skipping end-to-end {runtime} {precision}: {exc}")
            continue
        for case in CASES:
            name = f"pipeline@{loaded.resolution}/{runtime}/{precision}"
            with progress.item(f"{name}/{case.label}", args.pipeline_runs) as tick:
                # One image per case, and the first one is the timed one: an 8-step image at 512 takes
                # minutes on a small CPU (the item says first_run_timed).
                item, step = bench_pipeline(loaded.networks, loaded.init_ms, loaded.prediction_type, case, warmup=0,
                                            runs=args.pipeline_runs, name=name, runtime=runtime,
                                            precision=precision, threads=args.threads, resolution=loaded.resolution,
                                            component_gflops=loaded.gflops, peak=result["machine_peak"], tick=tick,
                                            first_is_timed=True, component_precisions=loaded.precisions,
                                            init_fields=loaded.init_fields)
            add_item(result, item)
            if case.steps > 1:
                add_item(result, step)
        del loaded
        gc.collect()
