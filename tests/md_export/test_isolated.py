"""run_isolated: a stage in a spawned child hands back its result, its exception, or says it died."""

import operator
import os

import pytest

from md_export.isolated import IsolatedStageError, run_isolated


def test_the_child_result_comes_back():
    assert run_isolated(operator.add, 2, 3) == 5


def test_the_child_exception_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "not a number")


def test_a_child_that_dies_without_a_result_is_an_error():
    # what the out-of-memory killer looks like from the parent: no result, a non-zero exit code
    with pytest.raises(IsolatedStageError, match="exit code 3"):
        run_isolated(os._exit, 3)


def test_a_silent_death_on_a_nearly_full_disk_says_so(monkeypatch):
    # the LiteRT converter exited with status 1 and no message when the disk had 400 KB left
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 400 * 2**10, 400 * 2**10))
    with pytest.raises(IsolatedStageError, match=r"exit code 1.*nearly full .* 0\.4 MB free"):
        run_isolated(os._exit, 1)
    monkeypatch.undo()
    with pytest.raises(IsolatedStageError) as plenty:  # this machine's disk: no note
        run_isolated(os._exit, 1)
    assert "nearly full" not in str(plenty.value) or shutil.disk_usage(".").free < 2 * 2**30


def test_a_stage_waited_on_beside_others_ends_when_told_to_stop():
    # the main job's export runs in a thread beside the torch reference and the calibration: when
    # one of those fails, the export's child is ended then, not when its conversions are done
    import threading
    import time

    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    start = time.perf_counter()
    with pytest.raises(IsolatedStageError, match="sleep stopped"):
        run_isolated(time.sleep, 60, stop=stop)
    assert time.perf_counter() - start < 30
