"""Init time with and without onnxruntime's optimized-graph cache in bench results
(benchmarks/init_cache.py). Which loads happened and what the items say; timings never asserted."""

import json
import shutil

import pytest

from md_export.benchmarks.schema import validate
from md_export.runtimes.ort_cache import CACHE_DIRNAME

FAST = ["--warmup", "0", "--runs", "1", "--no-peak", "--no-progress", "--threads", "1"]


@pytest.fixture
def artifacts(onnx_dir, tmp_path):
    """A private copy: these tests look at what appears beside the artifacts."""
    directory = tmp_path / "artifacts"
    shutil.copytree(onnx_dir, directory, ignore=shutil.ignore_patterns(CACHE_DIRNAME))
    return directory


def bench(cli, directory, out, *extra):
    assert cli(["bench", "run", "--artifacts", str(directory), "--level", "component,pipeline", "--steps", "1",
                "--pipeline-warmup", "0", "--pipeline-runs", "1", *FAST, *extra, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    validate(result)
    return result


def test_first_and_second_bench_runs_record_cold_and_cached_init(artifacts, tmp_path, cli):
    first = bench(cli, artifacts, tmp_path / "a.json")
    assert first["settings"]["ort_cache"] is True
    for item in first["items"]:
        if item["level"] == "component":
            (status,) = item["ort_cache"].values()
            assert status["state"] == "hit" and (artifacts / CACHE_DIRNAME / status["file"]).is_file()
            # the cache did not exist: one extra load optimized and wrote it before the timed one
            assert item["init_ms_cache_write"] > 0
        else:
            assert set(item["ort_cache"]) == {"text_encoder", "unet", "vae_decoder"}
            assert all(s["state"] == "hit" for s in item["ort_cache"].values())
            assert item["init_ms_cache_write"] is None  # the component jobs wrote them already
        assert item["init_ms_cold"] > 0 and item["init_ms_cached"] == item["init_ms"]

    second = bench(cli, artifacts, tmp_path / "b.json")
    for item in second["items"]:
        assert item["init_ms_cache_write"] is None and item["init_ms_cached"] == item["init_ms"]


def test_no_ort_cache_loads_cold_and_writes_nothing(artifacts, tmp_path, cli):
    result = bench(cli, artifacts, tmp_path / "r.json", "--no-ort-cache")
    assert not (artifacts / CACHE_DIRNAME).exists()
    for item in result["items"]:
        assert all(s["state"] == "off" for s in item["ort_cache"].values())
        assert item["init_ms_cold"] == item["init_ms"] and item["init_ms_cached"] is None


def test_an_unwritable_cache_dir_is_recorded_not_fatal(artifacts, tmp_path, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = bench(cli, artifacts, tmp_path / "r.json", "--ort-cache-dir", str(blocker / "cache"))
    for item in result["items"]:
        for status in item["ort_cache"].values():
            assert status["state"] == "skipped" and status["reason"].startswith("cannot write")
        assert item["init_ms_cold"] == item["init_ms"] and item["init_ms_cached"] is None


def test_cache_dir_elsewhere(artifacts, tmp_path, cli):
    elsewhere = tmp_path / "cache"
    result = bench(cli, artifacts, tmp_path / "r.json", "--ort-cache-dir", str(elsewhere))
    assert not (artifacts / CACHE_DIRNAME).exists()
    files = {s["file"] for i in result["items"] for s in i["ort_cache"].values()}
    assert len(files) == 3 and all((elsewhere / f).is_file() for f in files)


def test_litert_items_carry_no_cache_keys(tflite_dir, tmp_path, cli):
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--artifacts", str(tflite_dir), *FAST, "--json", str(out)]) == 0
    (item,) = json.loads(out.read_text())["items"]
    assert "ort_cache" not in item and "init_ms_cold" not in item
