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
