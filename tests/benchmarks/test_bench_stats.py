import math

import numpy as np
import pytest

from md_export.benchmarks.harness import Timing, fraction_of_peak, make_item, time_calls
from md_export.benchmarks.stats import STAT_KEYS, latency_stats, partial_stats


def test_stats_on_1_to_100():
    stats = latency_stats(list(range(1, 101)))
    assert stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["mean"] == pytest.approx(50.5)
    # Linear interpolation between order statistics: rank = q/100 * (n - 1).
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    # Population std of 1..n is sqrt((n^2 - 1) / 12).
    assert stats["std"] == pytest.approx(math.sqrt((100 ** 2 - 1) / 12))


def test_stats_small_known_sample():
    stats = latency_stats([4.0, 1.0, 3.0, 2.0])  # order must not matter
    assert stats == pytest.approx({"min": 1.0, "mean": 2.5, "std": math.sqrt(1.25), "p50": 2.5,
                                   "p90": 3.7, "p99": 3.97, "max": 4.0})
    assert list(stats) == list(STAT_KEYS)


def test_stats_single_sample_and_errors():
    assert latency_stats([7.0]) == {k: (0.0 if k == "std" else 7.0) for k in STAT_KEYS}
    with pytest.raises(ValueError, match="no samples"):
        latency_stats([])
    with pytest.raises(ValueError, match="NaN"):
        latency_stats([1.0, float("nan")])


def test_partial_stats_never_guesses():
    stats = partial_stats({"mean": 3.0, "p50": float("nan")})
    assert stats["mean"] == 3.0
    assert all(stats[k] is None for k in STAT_KEYS if k != "mean")


def test_time_calls_counts_warmup_and_runs():
    calls = []
    ticks = []
    first, samples, interrupted = time_calls(lambda: calls.append(1), warmup=2, runs=5, tick=lambda: ticks.append(1))
    assert len(calls) == 1 + 2 + 5 and len(samples) == 5 and len(ticks) == 7
    assert not interrupted and first >= 0


def test_time_calls_keeps_samples_on_ctrl_c():
    count = {"n": 0}

    def call():
        count["n"] += 1
        if count["n"] == 5:  # first + 1 warm-up + 2 timed, then Ctrl-C in the third timed call
            raise KeyboardInterrupt

    _, samples, interrupted = time_calls(call, warmup=1, runs=10)
    assert interrupted and len(samples) == 2


def test_time_calls_ctrl_c_before_any_sample_propagates():
    def call():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        time_calls(call, warmup=0, runs=3)


def test_make_item_gflops_and_fraction_of_peak():
    timing = Timing(init_ms=5.0, first_ms=3.0, samples_ms=[10.0, 10.0, 10.0])
    peak = {"fp32_gflops": 400.0, "int8_gops": 1600.0}
    item = make_item(name="unet/x/fp32", level="component", component="unet", runtime="onnxruntime",
                     precision="fp32", threads=2, timing=timing, gflops=2.0, peak=peak)
    assert item["achieved_gflops_per_s"] == pytest.approx(200.0)  # 2 GFLOP in 10 ms
    assert item["fraction_of_peak"] == pytest.approx(0.5)
    assert item["runs"] == 3 and item["init_ms"] == 5.0 and item["peak_rss_mb"] > 0
    # int8 work is held against the int8 peak.
    assert fraction_of_peak(200.0, "int8", peak) == pytest.approx(0.125)
    assert fraction_of_peak(None, "fp32", peak) is None and fraction_of_peak(1.0, "fp32", None) is None
    assert np.isfinite(item["latency_ms"]["std"])


def test_sigterm_becomes_an_interrupt_and_is_restored():
    import os
    import signal

    from md_export.benchmarks.interrupts import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 1.0) if hasattr(signal, "sigtimedwait") else None
    assert signal.getsignal(signal.SIGTERM) == before
