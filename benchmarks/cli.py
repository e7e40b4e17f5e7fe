"""`md-export bench ...`: the benchmark harness on the command line.

    md-export bench run --artifacts DIR [--runtime onnxruntime,litert] [--precision fp32] [--level component,pipeline]
    md-export bench run --preset mobilediffusion-tiny --runtime torch --json out.json --markdown out.md --chart out.png
    md-export bench run --model DIR/unet.fp32.tflite --device adb:SERIAL --binary ./benchmark_model --delegate gpu
    md-export bench compare A.json B.json [--threshold 0.10] [--metric p50]
    md-export bench paper --out DIR
    md-export bench crosscheck DIR/unet.fp32.tflite
    md-export bench profile DIR/unet_512.fp32.onnx [--runs 5] [--depth 2] [--json OUT] [--chart OUT.png]

`register(subparsers)` adds `bench` to md-export's parser; every sub-subcommand sets `func`.
"""

from __future__ import annotations

import argparse
import os
import sys

from md_export.errors import MdExportError

EXIT_INTERRUPTED = 130


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise MdExportError(f"--{name} must be >= {minimum}, got {value}")


def _write_outputs(args, result: dict, title: str | None = None) -> None:
    from .report import markdown_table, write_chart, write_json, write_markdown

    print(markdown_table(result))
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        write_markdown(args.markdown, result)
    if args.chart:
        if result["items"]:
            write_chart(args.chart, result, title)
        else:
            print("no item measured: no chart written", file=sys.stderr)


def _check_outputs(args) -> None:
    """Fail before a long run, not after it, when an output cannot be written."""
    from .report import check_target

    for path in (args.json, args.markdown, args.chart):
        if path:
            check_target(path)


def cmd_run(args: argparse.Namespace) -> int:
    from .interrupts import sigterm_as_interrupt
    from .progress import BenchProgress
    from .schema import new_result

    _check_outputs(args)

    _positive("runs", args.runs)
    _positive("warmup", args.warmup, 0)
    _positive("threads", args.threads)
    if args.resolution is not None:  # 0 must not quietly mean "the default"
        _positive("resolution", args.resolution)
    _positive("unet-batch", args.unet_batch)
    _positive("peak-size", args.peak_size)
    _positive("pipeline-runs", args.pipeline_runs)
    _positive("pipeline-warmup", args.pipeline_warmup, 0)
    if args.min_seconds < 0:
        raise MdExportError(f"--min-seconds must be >= 0, got {args.min_seconds}")
    sources = [s for s in (args.artifacts, args.model, args.preset, args.plan) if s]
    if len(sources) != 1:
        raise MdExportError("give exactly one of --artifacts DIR, --model FILE, --preset NAME, --plan PLAN.json")
    levels = _csv(args.level) or (["pipeline"] if args.plan else ["component"])
    if args.plan and levels != ["pipeline"]:
        raise MdExportError("--plan times the chosen configuration end to end: --level pipeline only "
                            "(its components are timed in the plan itself)")
    if args.plan:
        # the plan fixes its runtime, each component's precision and the resolution it was made for:
        # a flag that narrows them would be ignored, so refuse it rather than time something else
        clashing = [flag for flag, value in (("--runtime", args.runtime), ("--precision", args.precision),
                                             ("--resolution", args.resolution)) if value]
        if clashing:
            raise MdExportError(f"--plan fixes the runtime, precisions and resolution it chose; drop "
                                f"{', '.join(clashing)}")
    for level in levels:
        if level not in ("component", "pipeline"):
            raise MdExportError(f"--level takes component and/or pipeline, got {level!r}")
    device = args.device or "host"
    if device.startswith("adb:") or device == "adb":
        from .targets.adb import run_on_adb

        return _finish(args, run_on_adb(args))
    if device == "mac":
        from .targets.mac import require_macos

        require_macos()
        args.runtime = args.runtime or "coreml"  # the mac target is for Core ML packages
    elif device != "host":
        raise MdExportError(f"--device {device!r}: use host, mac or adb:SERIAL")

    settings = _settings(args)
    source = ({"kind": "artifacts", "path": os.path.abspath(args.artifacts)} if args.artifacts else
              {"kind": "artifact", "path": os.path.abspath(args.model)} if args.model else
              {"kind": "plan", "path": os.path.abspath(args.plan)} if args.plan else
              {"kind": "preset", "preset": args.preset})
    if args.resolution:
        source["resolution"] = args.resolution
    result = new_result(source, settings.result_settings(args.warmup, args.runs, args.min_seconds, levels))
    with BenchProgress(enabled=not args.no_progress) as progress, sigterm_as_interrupt():
        try:
            if args.peak:
                from .machine_peak import measure_machine_peak

                with progress.item("machine peak (GEMM fp32 / int8)", None):
                    result["machine_peak"] = measure_machine_peak(args.threads, args.peak_size)
            if "component" in levels:
                from .run_jobs import run_jobs

                run_jobs(_component_jobs(args, settings), result, args.warmup, args.runs, args.min_seconds,
                         args.threads, progress)
            if "pipeline" in levels and not result["interrupted"]:
                _run_pipeline_level(args, settings, result, progress)
        except KeyboardInterrupt:
            result["interrupted"] = True
            progress.note(f"interrupted; keeping the {len(result['items'])} item(s) measured so far")
    return _finish(args, result)


def _finish(args, result: dict) -> int:
    _write_outputs(args, result)
    if result.get("interrupted"):
        print(f"interrupted: {len(result['items'])} item(s) measured", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _settings(args):
    from .targets.host import HostSettings

    return HostSettings(threads=args.threads, providers=tuple(_csv(args.provider) or ["CPUExecutionProvider"]),
                        compute_units=args.compute_units, seed=args.seed, ort_cache=args.ort_cache,
                        ort_cache_dir=args.ort_cache_dir)


def _component_jobs(args, settings):
    from .targets.host import artifact_dir_jobs, artifact_file_jobs, preset_jobs

    runtimes = _csv(args.runtime)
    if args.preset:
        if runtimes and runtimes != ["torch"]:
            raise MdExportError("a preset runs in torch eager; for other runtimes export it and pass --artifacts DIR")
        return preset_jobs(args.preset, settings, _csv(args.components), args.resolution, args.unet_batch)
    if args.model:
        return artifact_file_jobs(args.model, settings)[0]
    if runtimes and "torch" in runtimes:
        raise MdExportError("torch runs presets (--preset NAME), not artifact directories")
    return artifact_dir_jobs(args.artifacts, settings, runtimes, _csv(args.precision), _csv(args.components),
                             args.resolution)[0]


def _run_pipeline_level(args, settings, result: dict, progress) -> None:
    from .pipeline_bench import parse_cases
    from .pipeline_jobs import artifact_pipeline_networks, torch_pipeline_networks

    cases = parse_cases(args.steps, args.guidance, args.guidance_scale)
    if args.plan:
        from .pipeline_jobs import plan_pipeline_networks

        loaded, plan = plan_pipeline_networks(args.plan, settings)
        _bench_cases(args, result, progress, cases, loaded, plan["runtime"], "plan",
                     {"plan": os.path.abspath(args.plan), "plan_choice": plan["choice"]})
        return
    if args.preset:
        combos = [("torch", "fp32")]
    elif args.artifacts:
        from md_export.export.manifest import read_manifest

        manifest = read_manifest(args.artifacts)
        runtimes = _csv(args.runtime) or ["onnxruntime", "litert"]
        precisions = _csv(args.precision) or sorted({e["precision"] for e in manifest["artifacts"]})
        formats = {e["format"] for e in manifest["artifacts"]}
        from .targets.host import RUNTIME_FORMAT

        combos = [(r, p) for r in runtimes if RUNTIME_FORMAT.get(r) in formats for p in precisions]
    else:
        raise MdExportError("--level pipeline needs --artifacts DIR or --preset NAME (a single file is one network)")
    for runtime, precision in combos:
        if runtime == "torch":
            loaded = torch_pipeline_networks(args.preset, args.resolution, settings)
        else:
            try:
                loaded = artifact_pipeline_networks(args.artifacts, runtime, precision, args.resolution, settings)
            except MdExportError as exc:
                if args.precision or args.runtime:
                    raise
                progress.note(f"skipping pipeline {runtime} {precision}: {exc}")
                continue
        if not _bench_cases(args, result, progress, cases, loaded, runtime, precision, {}):
            return


def _bench_cases(args, result: dict, progress, cases, loaded, runtime: str, precision: str, extra: dict) -> bool:
    """Every case on one loaded pipeline; False when interrupted."""
    from .pipeline_bench import bench_pipeline
    from .schema import add_item

    seen_steps = {item["name"] for item in result["items"]}
    for case in cases:
        name = f"pipeline@{loaded.resolution}/{runtime}/{precision}"
        with progress.item(f"{name}/{case.label}", args.pipeline_warmup + args.pipeline_runs) as tick:
            item, step_item = bench_pipeline(
                loaded.networks, loaded.init_ms, loaded.prediction_type, case, warmup=args.pipeline_warmup,
                runs=args.pipeline_runs, name=name, runtime=runtime, precision=precision, threads=args.threads,
                resolution=loaded.resolution, component_gflops=loaded.gflops, peak=result.get("machine_peak"),
                tick=tick, component_precisions=loaded.precisions, init_fields=loaded.init_fields | extra)
        add_item(result, item)
        # One unet_step item per runtime x precision x guidance: the step does not depend on N.
        if step_item["name"] not in seen_steps and case.steps > 1:
            seen_steps.add(step_item["name"])
            add_item(result, step_item)
        if item.get("interrupted"):
            result["interrupted"] = True
            return False
    return True


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, format_comparison, load_result

    comparison = compare(load_result(args.a), load_result(args.b), args.metric, args.threshold)
    print(format_comparison(comparison))
    return comparison.exit_code


def cmd_paper(args: argparse.Namespace) -> int:
    from .paper_table import run_paper_table

    return run_paper_table(args)


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from .crosscheck import run_crosscheck

    return run_crosscheck(args)


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import run_profile

    return run_profile(args)


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="OUT", help="write the result JSON here")
    parser.add_argument("--markdown", metavar="OUT", help="write the Markdown table here")
    parser.add_argument("--chart", metavar="OUT", help="write a PNG chart (latency per item) here")


def register(subparsers) -> argparse.ArgumentParser:
    bench = subparsers.add_parser("bench", help="benchmark artifacts or presets (host, adb phone, Mac)",
                                  description=__doc__.split("\n\n")[0])
    sub = bench.add_subparsers(dest="bench_command", required=True)

    run = sub.add_parser("run", help="time components and/or the end-to-end pipeline")
    what = run.add_argument_group("what to benchmark (one of)")
    what.add_argument("--artifacts", metavar="DIR", help="an md-export artifact directory (manifest.json)")
    what.add_argument("--model", metavar="FILE", help="one .onnx / .tflite / .mlpackage")
    what.add_argument("--preset", help="a preset, torch eager (random seeded weights)")
    what.add_argument("--plan", metavar="PLAN.json",
                      help="the configuration an md-export plan chose (plans/<runtime>/plan.json), end to end")
    run.add_argument("--runtime", help="csv of torch, onnxruntime, litert, coreml (default: all in DIR)")
    run.add_argument("--precision", help="csv of precisions to keep (fp32, fp16, int8...)")
    run.add_argument("--components", help="csv of text_encoder, unet, vae_decoder, vae_encoder")
    run.add_argument("--resolution", type=int, help="image side in pixels (default: preset / all in DIR)")
    run.add_argument("--level", default=None,
                     help="csv of component, pipeline (default component; pipeline with --plan)")
    run.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: all cores)")
    run.add_argument("--warmup", type=int, default=3, help="warm-up calls after the first (default 3)")
    run.add_argument("--runs", type=int, default=10, help="timed calls (default 10)")
    run.add_argument("--min-seconds", type=float, default=0.0, help="keep timing until this much time has passed")
    run.add_argument("--provider", help="onnxruntime execution providers, csv (default CPUExecutionProvider)")
    run.add_argument("--compute-units", default="ALL", choices=("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"),
                     help="Core ML compute units (macOS)")
    run.add_argument("--unet-batch", type=int, default=1, help="UNet batch for a preset (2 = guidance batch)")
    run.add_argument("--steps", default="1,8", help="pipeline level: csv of step counts (default 1,8)")
    run.add_argument("--guidance", default="on", help="pipeline level: on, off or on,off (default on)")
    run.add_argument("--guidance-scale", type=float, default=7.5)
    run.add_argument("--pipeline-warmup", type=int, default=1)
    run.add_argument("--pipeline-runs", type=int, default=3)
    run.add_argument("--no-peak", dest="peak", action="store_false", help="skip the machine GEMM peak")
    run.add_argument("--peak-size", type=int, default=2048, help="GEMM side for the machine peak (default 2048)")
    run.add_argument("--no-ort-cache", dest="ort_cache", action="store_false",
                     help="onnxruntime: neither read nor write optimized graphs in DIR/.ort_cache (items then "
                          "carry only the cold init)")
    run.add_argument("--ort-cache-dir", metavar="DIR",
                     help="onnxruntime: keep the optimized graphs here instead of beside the artifacts")
    run.add_argument("--device", default="host", help="host (default), mac, or adb:SERIAL")
    run.add_argument("--binary", help="adb: local path of LiteRT benchmark_model or onnxruntime_perf_test to push")
    run.add_argument("--delegate", default="cpu", choices=("cpu", "xnnpack", "gpu", "nnapi"), help="adb: LiteRT delegate")
    run.add_argument("--seed", type=int, default=0, help="seed of random inputs and weights")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_outputs(run)
    run.set_defaults(func=cmd_run)

    cmp = sub.add_parser("compare", help="B / A per item; exit 1 past the regression threshold")
    cmp.add_argument("a", metavar="A.json")
    cmp.add_argument("b", metavar="B.json")
    cmp.add_argument("--metric", default="p50", help="latency statistic to compare (default p50)")
    cmp.add_argument("--threshold", type=float, default=0.10, help="regression when B/A > 1 + this (default 0.10)")
    cmp.set_defaults(func=cmd_compare)

    paper = sub.add_parser("paper", help="the MobileDiffusion-style table on this host (JSON, Markdown, chart)")
    paper.add_argument("--out", required=True, metavar="DIR", help="folder for artifacts and the report")
    paper.add_argument("--preset", default="mobilediffusion")
    paper.add_argument("--baseline", default="sd15", help="preset whose UNet step is compared (default sd15)")
    paper.add_argument("--resolution", type=int, default=512)
    paper.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    paper.add_argument("--runs", type=int, default=5)
    paper.add_argument("--warmup", type=int, default=1)
    paper.add_argument("--artifacts", metavar="DIR", help="reuse an exported directory instead of exporting")
    paper.add_argument("--formats", default="onnx,tflite", help="formats to export when no --artifacts (default onnx,tflite)")
    paper.add_argument("--pipeline-runtimes", default="onnxruntime,litert",
                       help="runtimes timed end to end (csv of torch, onnxruntime, litert)")
    paper.add_argument("--pipeline-runs", type=int, default=1, help="images per end-to-end case (default 1)")
    paper.add_argument("--peak-size", type=int, default=2048, help="GEMM side for the machine peak (default 2048)")
    paper.add_argument("--no-ort-cache", dest="ort_cache", action="store_false",
                       help="onnxruntime: no optimized-graph cache beside the artifacts (see bench run)")
    paper.add_argument("--no-progress", action="store_true")
    paper.set_defaults(func=cmd_paper)

    cross = sub.add_parser("crosscheck", help="harness median vs the litert-benchmark CLI on one .tflite")
    cross.add_argument("model", metavar="FILE.tflite")
    cross.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    cross.add_argument("--runs", type=int, default=20)
    cross.add_argument("--warmup", type=int, default=3)
    cross.add_argument("--tolerance", type=float, default=0.15)
    cross.add_argument("--no-progress", action="store_true")
    _add_outputs(cross)
    cross.set_defaults(func=cmd_crosscheck)

    prof = sub.add_parser("profile", help="kernel time per op type and per PyTorch module of one .onnx / .tflite")
    prof.add_argument("artifact", metavar="ARTIFACT", help="one .onnx or .tflite file")
    prof.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    prof.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    prof.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: all cores)")
    prof.add_argument("--top", type=int, default=15, help="rows per table and chart panel (default 15)")
    prof.add_argument("--depth", type=int, default=2,
                      help="module path parts of the grouped view (default 2: down_blocks.1)")
    prof.add_argument("--seed", type=int, default=0, help="seed of random inputs when there are no reference ones")
    prof.add_argument("--binary", help="LiteRT: time TFLite's builtin kernels per module with this benchmark_model "
                           "(default: the ai-edge-litert wheel's own profiler, on XNNPACK's operators)")
    prof.add_argument("--json", metavar="OUT", help="write the result JSON here")
    prof.add_argument("--markdown", metavar="OUT", help="write the Markdown tables here")
    prof.add_argument("--chart", metavar="OUT", help="write a PNG chart (top modules and op types) here")
    prof.set_defaults(func=cmd_profile)
    return bench
