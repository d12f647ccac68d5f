"""Reading back a dataset saved with ``MultiViewData.save`` or ``GaussianData.save``.

It lives apart from :mod:`multiview.dataset` because it needs the configs of both generators,
which themselves build on the dataset objects: data flows dataset -> generators -> loading.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from multiview.checks import check_finite
from multiview.dataset import GaussianData, MultiViewData
from multiview.gaussian import GaussianConfig
from multiview.multiview import MultiViewConfig


# What each kind's file holds besides X and y: arrays with one row per sample, and shared ones.
PER_SAMPLE = {
    "MultiViewData": ("views_present", "is_multi", "view_weight", "patch_feature", "weights"),
    "GaussianData": ("clean_y", "flipped", "margin", "component"),
}
SHARED = {"MultiViewData": ("features",), "GaussianData": ()}


def load(path: str | os.PathLike) -> MultiViewData | GaussianData:
    """Load a dataset written by ``save``; the result equals what was saved, array for array.

    A file that is not such a dataset (another archive, a text file, a broken or foreign config,
    arrays of the wrong shape, labels outside [0, k), NaN or inf in X or another float array)
    raises one ValueError that names the file and what is wrong; nothing is unpickled."""
    kinds = {"MultiViewData": (MultiViewData, MultiViewConfig), "GaussianData": (GaussianData, GaussianConfig)}
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a dataset written by multiview's save() (not an .npz archive)")
    with np.load(path, allow_pickle=False) as f:
        if "_kind" not in f.files or "_config" not in f.files:
            raise ValueError(f"{path}: not a dataset written by multiview's save() (no '_kind' and '_config' entries)")
        try:
            kind, config_json = str(f["_kind"]), str(f["_config"])
            arrays = {name: f[name] for name in f.files if not name.startswith("_")}
        except ValueError:  # an object array, which allow_pickle=False refuses to read
            raise ValueError(f"{path}: an entry is not a plain array of numbers (an object array)") from None
    if kind not in kinds:
        raise ValueError(f"{path}: unknown dataset kind {kind!r}; expected one of {', '.join(kinds)}")
    data_cls, config_cls = kinds[kind]
    try:
        config = config_cls(**json.loads(config_json))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: its config is not valid JSON ({e})") from None
    except TypeError as e:  # a missing or unknown field
        raise ValueError(f"{path}: its config does not fit {config_cls.__name__} ({e})") from None
    except ValueError as e:  # a field out of range
        raise ValueError(f"{path}: its config is invalid: {e}") from None
    _check_arrays(path, kind, arrays, config.k)
    return data_cls(config=config, **arrays)


def _check_arrays(path, kind: str, arrays: dict, k: int) -> None:
    expected = {"X", "y", *PER_SAMPLE[kind], *SHARED[kind]}
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise ValueError(f"{path}: a {kind} file holds {', '.join(sorted(expected))}; "
                         f"missing {missing or 'none'}, unexpected {extra or 'none'}")
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 3 or X.dtype.kind != "f":
        raise ValueError(f"{path}: X must be a float array of shape (n, P, d), got {X.dtype} {X.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    n = len(y)
    for name in ("X", *PER_SAMPLE[kind]):
        if arrays[name].shape[:1] != (n,):
            raise ValueError(f"{path}: {name} must have one row per label ({n}), got shape {arrays[name].shape}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{path}: labels must lie in [0, {k - 1}] (k = {k}), got [{y.min()}, {y.max()}]")
    for name, a in arrays.items():  # one pass over each float array: a generator writes finite numbers only
        if a.dtype.kind == "f":
            check_finite(f"{path}: {name}", a, "a saved dataset holds finite numbers only")
