"""Argument checks that raise one-line ``ValueError`` messages naming the parameter.

Every public config of the project validates itself with these, so a bad value reads the same
wherever it comes from (a library call or a command line)::

    ValueError: views must be an integer >= 1, got 0

The checks of public call arguments (seeds, configs, arrays) raise ``TypeError`` for a value of
the wrong kind (a dict for a config, a string for a seed) and ``ValueError`` for one out of range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

SEED_KINDS = "an integer >= 0, a sequence of them, a numpy SeedSequence or Generator, or None"


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


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_seed(name: str, value):
    """Return ``value`` unchanged if ``numpy.random.default_rng`` takes it as a seed: an integer
    >= 0 (not a bool), a sequence or integer array of them, a SeedSequence, BitGenerator or
    Generator, or None (fresh entropy). A value of another kind raises TypeError, a negative
    integer ValueError, both naming ``name``."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.BitGenerator, np.random.Generator)):
        return value
    if isinstance(value, np.ndarray):
        items = value.ravel().tolist() if value.dtype.kind in "iu" else [value]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        items = [value]
    for item in items:
        if not isinstance(item, numbers.Integral) or isinstance(item, bool):
            raise TypeError(f"{name} must be {SEED_KINDS}, got {type(value).__name__} {_short(value)}")
        if item < 0:
            raise ValueError(f"{name} must be an integer >= 0 (numpy seeds are non-negative), got {_short(value)}")
    return value


def check_seeds(name: str, values) -> tuple:
    """Return ``values``, a non-empty sequence of integer seeds >= 0 (one per model), as a tuple of
    ints. A string or non-iterable raises TypeError, an empty sequence or a negative seed ValueError;
    an element that is not an integer (a float, a string, a bool) TypeError."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of integers >= 0 (one per model), got "
                        f"{type(values).__name__} {_short(values)}")
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must name at least one model, got an empty list")
    for i, s in enumerate(values):
        if not isinstance(s, numbers.Integral) or isinstance(s, bool):
            raise TypeError(f"{name} must be integers >= 0, got {name}[{i}] = {type(s).__name__} {_short(s)}")
        if s < 0:
            raise ValueError(f"{name} must be integers >= 0 (numpy seeds are non-negative), got {name}[{i}] = {s}")
    return tuple(int(s) for s in values)


def check_instance(name: str, value, cls: type):
    """Return ``value`` if it is a ``cls``; otherwise raise TypeError (for a dict: how to build one)."""
    if isinstance(value, cls):
        return value
    hint = f"; build one with {cls.__name__}(**{name})" if isinstance(value, dict) else ""
    raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}{hint}")


def check_finite(name: str, values, hint: str = "") -> None:
    """Raise ValueError if the array ``values`` (numpy, or anything with ``isfinite()``, e.g. a torch
    tensor) holds NaN or inf, saying how many: one pass over the array, none when all are finite."""
    finite = values.isfinite() if hasattr(values, "isfinite") else np.isfinite(values)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    raise ValueError(f"{name} has {bad} non-finite value{'s' if bad != 1 else ''} (NaN or inf)"
                     f"{'; ' + hint if hint else ''}")
