"""onnxruntime's optimized graph cached beside the artifact (md_export/runtimes/ort_cache.py), on a
tiny UNet export: what a second load opens, when a cache must not be reused, and that outputs do
not change. Timings are never asserted."""

import shutil

import numpy as np
import pytest

from md_export.export.manifest import read_manifest, sha256_of
from md_export.runtimes import ort_cache
from md_export.runtimes.ort_cache import CACHE_DIRNAME, plan_graph_cache
from md_export.runtimes.onnx_runner import OnnxRunner


@pytest.fixture(scope="module")
def tiny_unet_export(tmp_path_factory):
    from md_export.export import export_preset
    from md_export.models import get_preset

    out = tmp_path_factory.mktemp("ort_cache_export")
    export_preset(get_preset("mobilediffusion-tiny"), ["unet"], ["onnx"], ["fp32"], out)
    return out


@pytest.fixture
def unet(tiny_unet_export, tmp_path):
    """A private copy of the artifact directory: tests write caches into it and change the model."""
    directory = tmp_path / "artifacts"
    shutil.copytree(tiny_unet_export, directory)
    (entry,) = read_manifest(directory)["artifacts"]
    return directory / entry["file"]


@pytest.fixture
def opened_paths(monkeypatch):
    """The model path every InferenceSession is created from, in order."""
    import onnxruntime

    paths = []
    original = onnxruntime.InferenceSession

    def spy(path, *args, **kwargs):
        paths.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    return paths


def feeds_for(runner):
    rng = np.random.default_rng(0)
    return {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in runner.inputs}


def outputs(runner, feeds):
    return runner.run(feeds)


def assert_identical(a: dict, b: dict):
    # Tolerance 0: the cached file is the graph the uncached session runs, executed by the same
    # kernels on one thread (threads=1), so not a single bit may differ.
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_second_load_opens_the_cached_graph_with_identical_outputs(unet, opened_paths):
    plain = OnnxRunner(unet, threads=1)
    assert plain.cache_status["state"] == "off"
    feeds = feeds_for(plain)
    reference = outputs(plain, feeds)

    first = OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet))
    cache_file = unet.parent / CACHE_DIRNAME / first.cache_status["file"]
    assert first.cache_status["state"] == "written" and cache_file.is_file()
    assert cache_file.name.startswith(unet.stem + ".") and cache_file.name.endswith(".ort.onnx")
    assert not [p for p in cache_file.parent.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left

    opened_paths.clear()
    second = OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet))
    assert second.cache_status == {**first.cache_status, "state": "hit"}
    assert opened_paths == [str(cache_file)]  # the artifact itself was not opened (or optimized) again
    assert_identical(outputs(first, feeds), reference)
    assert_identical(outputs(second, feeds), reference)


def test_a_verified_sha256_keys_the_cache_without_reading_the_file(unet, monkeypatch):
    sha = sha256_of(unet)
    monkeypatch.setattr(ort_cache, "quick_fingerprint", lambda path: pytest.fail("fingerprinted a verified file"))
    assert plan_graph_cache(unet, verified_sha256=sha).key == plan_graph_cache(unet, verified_sha256=sha).key
    assert plan_graph_cache(unet, verified_sha256=sha).key != plan_graph_cache(unet, verified_sha256="0" * 64).key


def _perturbed(path):
    """The same network with one weight changed: same graph, same size, other content."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, str(path))


@pytest.mark.parametrize("verified", [True, False], ids=["manifest-sha256", "fingerprint"])
def test_a_changed_artifact_does_not_reuse_the_stale_cache(unet, verified, opened_paths):
    def plan():
        return plan_graph_cache(unet, verified_sha256=sha256_of(unet) if verified else None)

    old = OnnxRunner(unet, threads=1, cache=plan())
    feeds = feeds_for(old)
    old_outputs = outputs(old, feeds)
    old_file = unet.parent / CACHE_DIRNAME / old.cache_status["file"]
    _perturbed(unet)

    opened_paths.clear()
    new = OnnxRunner(unet, threads=1, cache=plan())
    assert new.cache_status["state"] == "written" and new.cache_status["key"] != old.cache_status["key"]
    assert opened_paths == [str(unet)]
    assert not old_file.exists()  # one cache per artifact: the stale one is gone
    new_outputs = outputs(new, feeds)
    assert_identical(new_outputs, outputs(OnnxRunner(unet, threads=1), feeds))
    assert not all(np.array_equal(old_outputs[k], new_outputs[k]) for k in new_outputs)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_cache_is_rebuilt(unet, damage):
    plan = plan_graph_cache(unet)
    reference_runner = OnnxRunner(unet, threads=1, cache=plan)
    feeds = feeds_for(reference_runner)
    reference = outputs(reference_runner, feeds)
    data = plan.file.read_bytes()
    damaged = {"truncated": data[:len(data) // 2], "empty": b"", "garbage": b"\x00not onnx" * 100}[damage]
    plan.file.write_bytes(damaged)

    rebuilt = OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet))
    assert rebuilt.cache_status["state"] == "rebuilt" and "did not load" in rebuilt.cache_status["reason"]
    # written again (not byte-for-byte: onnxruntime's serialization order varies between sessions)
    assert plan.file.read_bytes() != damaged
    assert OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet)).cache_status["state"] == "hit"
    assert_identical(outputs(rebuilt, feeds), reference)


def test_a_write_that_fails_midway_leaves_no_cache(unet, monkeypatch):
    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ort_cache.os, "replace", fail)
    runner = OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet))
    assert runner.cache_status["state"] == "skipped" and "No space left" in runner.cache_status["reason"]
    assert list((unet.parent / CACHE_DIRNAME).iterdir()) == []  # neither a final file nor a temp folder
    assert runner.run(feeds_for(runner))


def test_an_unwritable_cache_folder_is_skipped_and_says_why(unet, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    plan = plan_graph_cache(unet, cache_dir=blocker / "cache")  # a folder inside a file cannot exist
    assert plan.file is None and plan.skipped.startswith("cannot write")
    runner = OnnxRunner(unet, threads=1, cache=plan)
    assert runner.cache_status["state"] == "skipped" and runner.cache_status["reason"] == plan.skipped
    assert runner.run(feeds_for(runner))


def test_only_the_cpu_providers_graph_is_cached(unet):
    plan = plan_graph_cache(unet, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert plan.file is None and "only the CPU provider" in plan.skipped
    assert not (unet.parent / CACHE_DIRNAME).exists()


def test_a_cache_dir_elsewhere_leaves_the_artifact_folder_alone(unet, tmp_path):
    elsewhere = tmp_path / "cache"
    runner = OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet, cache_dir=elsewhere))
    assert runner.cache_status["state"] == "written" and (elsewhere / runner.cache_status["file"]).is_file()
    assert not (unet.parent / CACHE_DIRNAME).exists()


def test_large_models_cache_their_initializers_in_a_sidecar(unet, monkeypatch):
    # Over EXTERNAL_DATA_THRESHOLD_BYTES (1 GiB) a graph goes out with its weights beside it
    # (protobuf stops at 2 GB); a zero threshold takes the tiny UNet down the same path.
    import onnx

    onnx.save_model(onnx.load(str(unet)), str(unet), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=unet.name + ".data", size_threshold=1024)
    monkeypatch.setattr(ort_cache, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)
    plain = OnnxRunner(unet, threads=1)
    feeds = feeds_for(plain)
    plan = plan_graph_cache(unet)
    assert plan.external_data
    written = OnnxRunner(unet, threads=1, cache=plan)
    assert written.cache_status["state"] == "written" and plan.data_file.is_file()
    hit = OnnxRunner(unet, threads=1, cache=plan_graph_cache(unet))
    assert hit.cache_status["state"] == "hit"
    assert_identical(outputs(hit, feeds), outputs(plain, feeds))

    # The manifest's sha256 covers the .onnx only: a rewritten sidecar must still change the key.
    sha = sha256_of(unet)
    before = plan_graph_cache(unet, verified_sha256=sha).key
    sidecar = unet.with_name(unet.name + ".data")
    sidecar.write_bytes(sidecar.read_bytes() + b"\x00" * 8)
    assert sha256_of(unet) == sha and plan_graph_cache(unet, verified_sha256=sha).key != before


def test_open_artifact_caches_only_when_asked(unet):
    from md_export.runtimes import open_artifact

    directory = unet.parent
    (entry,) = read_manifest(directory)["artifacts"]
    assert open_artifact(directory, entry).cache_status["state"] == "off"
    assert not (directory / CACHE_DIRNAME).exists()
    cached = open_artifact(directory, entry, ort_cache=True)
    assert cached.cache_status["state"] == "written"
    # verified against the manifest: the key comes from its sha256
    assert cached.cache_status["key"] == plan_graph_cache(unet, verified_sha256=entry["sha256"]).key
    assert open_artifact(directory, entry, ort_cache=True).cache_status["state"] == "hit"


def test_sessions_run_without_the_memory_pattern_cached_or_not(unet):
    """The memory pattern's block is allocated on a session's second call, which then faults in
    fresh pages (the 512 decoder's second picture: 2450 ms against 1443 warm); every session here
    runs without it, whichever file it was opened from."""
    for cache in (ort_cache.disabled(unet), plan_graph_cache(unet), plan_graph_cache(unet)):  # off, written, hit
        runner = OnnxRunner(unet, cache=cache)
        assert runner.session.get_session_options().enable_mem_pattern is False, runner.cache_status
    assert runner.cache_status["state"] == "hit"
