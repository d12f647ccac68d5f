"""Argument checks that raise one-line ``ValueError`` messages naming the parameter.

Every public config of the project validates itself with these, so a bad value reads the same
wherever it comes from (a library call or a command line)::

    ValueError: views must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return "finite"


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in [lo, hi]; otherwise raise ValueError."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    raise ValueError(f"{name} must be an integer {_range_text(lo, hi, False, False)}, got {value!r}")


def check_float(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number in the given range; else ValueError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (
            (lo is None or (v > lo if lo_open else v >= lo))
            and (hi is None or (v < hi if hi_open else v <= hi))
        )
        if ok:
            return v
    raise ValueError(
        f"{name} must be a number {_range_text(lo, hi, lo_open, hi_open)}, got {value!r}"
    )


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise ValueError listing them."""
    choices = tuple(choices)
    if value in choices:
        return value
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
