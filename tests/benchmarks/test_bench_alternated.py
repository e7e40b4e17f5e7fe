"""benchmarks/alternated.py: the artifacts of one component and runtime in several directories
are called in alternation, and each directory gets its own valid result naming its rivals."""

import shutil
from pathlib import Path

from md_export.benchmarks.alternated import bench_alternated
from md_export.benchmarks.progress import BenchProgress
from md_export.benchmarks.schema import validate
from md_export.benchmarks.targets.host import HostSettings
from md_export.runtimes.onnx_runner import OnnxRunner


def test_rivals_alternate_call_by_call_and_each_directory_gets_its_result(onnx_dir, tmp_path, monkeypatch):
    rival = tmp_path / "rival"
    shutil.copytree(onnx_dir, rival, ignore=shutil.ignore_patterns(".ort_cache"))
    calls = []
    real_init, real_run = OnnxRunner.__init__, OnnxRunner.run

    def init(self, path, *args, **kwargs):
        real_init(self, path, *args, **kwargs)
        self.directory = Path(path).parent.name

    def run(self, feeds):
        calls.append(self.directory)
        return real_run(self, feeds)

    monkeypatch.setattr(OnnxRunner, "__init__", init)
    monkeypatch.setattr(OnnxRunner, "run", run)
    probes = iter([{"fp32_gflops": 100.0, "int8_gops": 250.0}, {"fp32_gflops": 120.0, "int8_gops": 200.0},
                   {"fp32_gflops": 90.0, "int8_gops": 180.0}])

    def probe():
        calls.append("probe")
        return next(probes)

    with BenchProgress(enabled=False) as progress:
        results = bench_alternated([onnx_dir, rival], HostSettings(threads=1, ort_cache=False), ["onnxruntime"],
                                   warmup=1, runs=3, progress=progress, probe=probe, probes=3)
    assert list(results) == [onnx_dir, rival]
    # the peak probed before the first group, in the middle (after 2 of 3 groups) and after the last
    per_group = 2 * (1 + 1) + 2 * 3  # each member's first call and warm-up, then rounds of one call each
    assert [i for i, call in enumerate(calls) if call == "probe"] == [0, 1 + 2 * per_group, 2 + 3 * per_group]
    calls = [call for call in calls if call != "probe"]
    assert len(calls) == 3 * per_group
    for group in range(3):
        rounds = calls[group * per_group:(group + 1) * per_group][-6:]
        assert rounds == [onnx_dir.name, "rival"] * 3
    peak = results[onnx_dir]["machine_peak"]  # each throughput the best any probe read
    assert (peak["fp32_gflops"], peak["int8_gops"], len(peak["readings"])) == (120.0, 250.0, 3)
    for directory, result in results.items():
        validate(result)
        assert result["machine_peak"] == peak and result["settings"]["runs"] == 3
        assert result["settings"]["machine_peak_probes"] == 3
        assert [i["component"] for i in result["items"]] == ["text_encoder", "unet", "vae_decoder"]
        other = "rival" if directory == onnx_dir else onnx_dir.name
        for item in result["items"]:
            assert item["runs"] == 3 and item["latency_ms"]["p50"] > 0
            assert item["alternated_with"] == [f"{other}/{item['file']}"]
