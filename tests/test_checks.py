"""The shared argument checks."""

import math

import pytest

from multiview.checks import check_choice, check_float, check_int


def test_check_int():
    assert check_int("m", 3, 1) == 3
    for bad in (0, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"^m must be an integer >= 1, got"):
            check_int("m", bad, 1)
    with pytest.raises(ValueError, match=r"in \[1, 4\], got 5"):
        check_int("m", 5, 1, 4)


def test_check_float():
    assert check_float("lr", 1, 0.0, lo_open=True) == 1.0
    with pytest.raises(ValueError, match=r"^lr must be a number > 0.0, got 0"):
        check_float("lr", 0, 0.0, lo_open=True)
    for bad in (math.nan, math.inf, "1", False):
        with pytest.raises(ValueError, match="^lr must be a number"):
            check_float("lr", bad, 0.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\), got 1"):
        check_float("p", 1, 0, 1, hi_open=True)


def test_check_choice():
    assert check_choice("mode", "a", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match=r"^mode must be one of 'a', 'b', got 'c'"):
        check_choice("mode", "c", ["a", "b"])
