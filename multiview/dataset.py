"""Dataset objects: the inputs, the labels and the metadata that says what each sample holds.

Both kinds keep ``X`` as float32 of shape ``(n, P, d)`` (P patches of dimension d; Gaussian-like
inputs without patches have P = 1) and integer labels ``y`` in ``[0, k)``. They save to one
``.npz`` file (arrays as they are, the config as JSON); :func:`multiview.loading.load` reads them
back identically. This module knows nothing of the generators that fill these objects.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multiview.files import atomic_file


@dataclass(frozen=True, eq=False)
class _Data:
    X: np.ndarray
    y: np.ndarray
    config: Any

    def __post_init__(self):
        """Check what every dataset must be: X a float (n, P, d) array, y n integer labels in
        [0, k). An empty dataset (n = 0, e.g. the subset of an empty mask) is allowed. Cheap: no
        pass over X (finiteness is checked where data enter from outside: load and train)."""
        X, y = self.X, self.y
        for name, a in (("X", X), ("y", y)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
        if X.ndim != 3 or X.dtype.kind != "f":
            raise ValueError(f"X must be a float array of shape (n, P, d), got {X.dtype} {X.shape}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"y must be a 1-D integer array of class labels, got {y.dtype} {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X must have one row per label ({y.shape[0]}), got shape {X.shape}")
        k = getattr(self.config, "k", None)
        if k is not None and y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"y must hold labels in [0, {k - 1}] (k = {k}), got [{y.min()}, {y.max()}]")

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def k(self) -> int:
        return int(self.config.k)

    def _array_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), np.ndarray)]

    def _per_sample_fields(self) -> list[str]:
        return [name for name in self._array_fields() if getattr(self, name).shape[:1] == (self.n,)]

    def subset(self, index) -> "_Data":
        """The samples selected by ``index`` (indices or a boolean mask); shared arrays are kept."""
        index = np.asarray(index)
        picked = {name: getattr(self, name)[index] for name in self._per_sample_fields()}
        return dataclasses.replace(self, **picked)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.k)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (.npz) atomically: a temp file in the same folder, then a rename."""
        path = Path(path)
        arrays = {name: getattr(self, name) for name in self._array_fields()}
        arrays["_kind"] = np.array(type(self).__name__)
        arrays["_config"] = np.array(json.dumps(dataclasses.asdict(self.config)))
        with atomic_file(path) as fh:
            np.savez(fh, **arrays)
        return path


@dataclass(frozen=True, eq=False)
class MultiViewData(_Data):
    """Samples of the multi-view distribution (see :mod:`multiview.multiview`).

    Attributes (n samples, P patches, d dimensions, V views, F = k*V features):
        X: (n, P, d) float32 inputs.
        y: (n,) int64 labels.
        views_present: (n, V) bool, view l of the sample's class is present at full weight.
        is_multi: (n,) bool, every view present (a multi-view sample).
        view_weight: (n, V) float32, total weight sum_p z_p of each own view (before feature noise).
        patch_feature: (n, P) int16, the feature written into each patch, -1 for a noise-only patch.
        weights: (n, P, F) float32, the coefficient of every feature in every patch, including
            feature noise; ``X = weights @ features + Gaussian noise``.
        features: (F, d) float64 orthonormal dictionary; row j*V + l is v_{j,l}.
        config: the :class:`~multiview.multiview.MultiViewConfig` that made them.
    """

    views_present: np.ndarray = None
    is_multi: np.ndarray = None
    view_weight: np.ndarray = None
    patch_feature: np.ndarray = None
    weights: np.ndarray = None
    features: np.ndarray = None

    @property
    def noise(self) -> np.ndarray:
        """The Gaussian part of every patch, ``X - weights @ features`` (float32, (n, P, d))."""
        return self.X - self.weights @ self.features.astype(np.float32)

    def single_view_fraction(self) -> float:
        return float(1.0 - self.is_multi.mean())


@dataclass(frozen=True, eq=False)
class GaussianData(_Data):
    """Gaussian-like inputs labelled by a teacher network (see :mod:`multiview.gaussian`).

    Attributes:
        X: (n, P, d) float32 inputs (P = 1 unless the config cuts inputs into patches).
        y: (n,) int64 training labels, after label noise.
        clean_y: (n,) int64 the teacher's labels (argmax of its output).
        flipped: (n,) bool, the label was flipped by label noise.
        margin: (n,) float32 the teacher's margin, top logit minus the runner-up.
        component: (n,) int64 mixture component of each input (-1 for a single Gaussian).
        config: the :class:`~multiview.gaussian.GaussianConfig` that made them.
    """

    clean_y: np.ndarray = None
    flipped: np.ndarray = None
    margin: np.ndarray = None
    component: np.ndarray = None
