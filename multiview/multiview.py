"""The multi-view data distribution of Allen-Zhu & Li (arXiv 2012.09816, Definition 3.1).

The world has ``k`` classes and every class ``j`` owns ``V`` unit *view* features
``v_{j,1..V}`` in R^d; all ``k*V`` features are orthonormal. An input ``X`` is a stack of ``P``
patches ``x_1..x_P`` in R^d. A sample of class ``y`` is built as follows (the paper's recipe,
generalised from V = 2 to any V):

1. ``y`` is uniform over the ``k`` classes.
2. The sample is *multi-view* (every view of ``y`` present) or *single-view*:
   ``missing_mode="single"`` (the paper's D = (1-mu) D_multi + mu D_single): with probability
   ``missing`` (mu) only one view, chosen uniformly, is present; the others are *weak*.
   ``missing_mode="independent"``: each view is weak independently with probability
   ``missing``, conditioned on at least one view staying present.
3. ``other_features`` distinct features of other classes are added ("feature noise" of the
   paper's set V(X) \\ {v_{y,l}}), chosen uniformly among the ``(k-1)*V`` candidates.
4. Every feature in the sample (own views and other-class ones) is written into its own
   ``feature_patches`` (C_p) patches, disjoint across features, with non-negative weights
   ``z_p`` (a uniform random split, Dirichlet(1), of a total drawn as below):

   ============================  ====================================  =====================
   feature                        total weight sum_p z_p                 paper
   ============================  ====================================  =====================
   present view of y              U[1, c_max]                            [1, O(1)]
   weak view of y                 U[rho, 2 rho]                          [rho, O(rho)]
   other class, multi-view        U[w/2, w], w = other_weight_multi     [Omega(1), 0.4]
   other class, any view weak     U[w/2, w], w = other_weight_single    [Omega(Gamma), Gamma]
   ============================  ====================================  =====================

5. Every patch ``p`` gets ``x_p = sum_v (z_p[v] + alpha_{p,v}) v + xi_p`` with per-patch feature
   noise ``alpha_{p,v} ~ U[0, feature_noise]`` (gamma) on every feature and Gaussian noise
   ``xi_p ~ N(0, noise_std^2 I_d)`` (sigma_p). Patches that carry no feature hold only noise.

One deviation from the paper, stated: the paper includes each other-class feature independently
with probability s/k, so their number varies; here it is fixed (``other_features``) so that the
patch budget ``P >= C_p * (V + other_features)`` is exact and checkable.

Feature ``j*V + l`` of the dictionary is ``v_{j,l}``. Use::

    dist = MultiViewDistribution(MultiViewConfig(k=10, views=2, missing=0.1), seed=0)
    train = dist.sample(600, seed=1)
    test = dist.sample(5000, seed=2)      # same features, fresh samples
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from multiview.checks import check_choice, check_float, check_instance, check_int, check_seed
from multiview.cli import param
from multiview.dataset import MultiViewData

MISSING_MODES = ("single", "independent")
BASES = ("random", "identity")

# Bounds the science imposes (paper: other-class features in multi-view data weigh at most 0.4).
MAX_OTHER_WEIGHT_MULTI = 0.4
# Samples per block of Gaussian noise; each block has its own generator (see `sample`).
NOISE_CHUNK = 512


@dataclass(frozen=True)
class MultiViewConfig:
    """Parameters of the multi-view distribution; every field is validated on construction."""

    k: int = param("number of classes", 10)
    views: int = param("views (features) per class, the paper's V = 2", 2)
    d: int = param("dimension of each patch; must be >= k * views", 500)
    patches: int = param("patches per input (P)", 50)
    feature_patches: int = param("patches that carry each feature of a sample (C_p)", 2)
    missing: float = param("feature-missing rate mu: fraction of single-view samples", 0.1)
    missing_mode: str = param(
        "'single': a fraction `missing` of samples keep one view; "
        "'independent': each view is missing with probability `missing` (one always kept)",
        "single",
    )
    c_max: float = param("a present view's total weight is U[1, c_max]", 2.0)
    rho: float = param("a weak (missing) view's total weight is U[rho, 2 rho]", 0.02)
    other_features: int = param("features of other classes written into each sample", 3)
    other_weight_multi: float = param(
        "other-class feature weight in multi-view samples, U[w/2, w]; w <= 0.4", 0.1
    )
    other_weight_single: float = param(
        "other-class feature weight (Gamma) in samples with a weak view, U[w/2, w]", 0.15
    )
    feature_noise: float = param("per-patch feature noise gamma: U[0, gamma] of every feature", 0.0)
    noise_std: float = param("per-coordinate std sigma_p of the Gaussian noise on every patch", 0.067)
    basis: str = param("feature dictionary: 'random' orthonormal or 'identity' (e_1, e_2, ...)", "random")

    def __post_init__(self):
        check_int("k", self.k, 2)
        check_int("views", self.views, 1)
        check_int("d", self.d, 1)
        if self.d < self.k * self.views:
            raise ValueError(
                f"d must be >= k * views = {self.k * self.views} so that all features are "
                f"orthonormal, got d={self.d}"
            )
        check_int("feature_patches", self.feature_patches, 1)
        check_int("other_features", self.other_features, 0, (self.k - 1) * self.views)
        check_int("patches", self.patches, 1)
        needed = self.feature_patches * (self.views + self.other_features)
        if self.patches < needed:
            raise ValueError(
                f"patches must be >= feature_patches * (views + other_features) = {needed} "
                f"(each feature needs its own patches), got {self.patches}"
            )
        check_choice("missing_mode", self.missing_mode, MISSING_MODES)
        if self.missing_mode == "independent":
            check_float("missing", self.missing, 0.0, 1.0, hi_open=True)
        else:
            check_float("missing", self.missing, 0.0, 1.0)
        if self.views == 1 and self.missing > 0:
            raise ValueError(
                f"missing must be 0 when views = 1 (a sample with one view has none to miss), "
                f"got {self.missing}"
            )
        check_float("c_max", self.c_max, 1.0)
        check_float("rho", self.rho, 0.0)
        if 2 * self.rho > 1.0:
            raise ValueError(f"rho must be in [0, 0.5] so a weak view stays weaker than a present one, got {self.rho}")
        check_float("other_weight_multi", self.other_weight_multi, 0.0, MAX_OTHER_WEIGHT_MULTI)
        check_float("other_weight_single", self.other_weight_single, 0.0, 1.0)
        check_float("feature_noise", self.feature_noise, 0.0)
        check_float("noise_std", self.noise_std, 0.0)
        check_choice("basis", self.basis, BASES)

    @property
    def n_features(self) -> int:
        return self.k * self.views

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def orthonormal_features(n_features: int, d: int, basis: str, rng: np.random.Generator) -> np.ndarray:
    """``n_features`` orthonormal rows in R^d (float64): a random rotation or the first unit vectors."""
    if basis == "identity":
        return np.eye(n_features, d)
    q, r = np.linalg.qr(rng.standard_normal((d, n_features)))
    q *= np.sign(np.diag(r))  # Haar-distributed: fix the sign ambiguity of QR
    return np.ascontiguousarray(q.T)


class MultiViewDistribution:
    """A multi-view world: a config and its (seeded) feature dictionary. Draw samples with ``sample``."""

    def __init__(self, config: MultiViewConfig | None = None, seed: int | np.random.Generator = 0):
        self.config = check_instance("config", config, MultiViewConfig) if config is not None else MultiViewConfig()
        rng = np.random.default_rng(check_seed("seed", seed))
        c = self.config
        self.features = orthonormal_features(c.n_features, c.d, c.basis, rng)

    def variant(self, **changes) -> "MultiViewDistribution":
        """The same world (same features) with other sampling parameters, e.g. ``missing=1.0``
        for a single-view test set. Changes that alter the feature dictionary are refused."""
        for name in ("k", "views", "d", "basis"):
            if name in changes and changes[name] != getattr(self.config, name):
                raise ValueError(f"{name} cannot change in a variant of a world (it fixes the features)")
        other = object.__new__(MultiViewDistribution)
        other.config = dataclasses.replace(self.config, **changes)
        other.features = self.features
        return other

    def view_index(self, label, view):
        """Dictionary row of v_{label, view}."""
        return np.asarray(label) * self.config.views + np.asarray(view)

    def sample(self, n: int, seed: int | np.random.Generator = 0) -> MultiViewData:
        """Draw ``n`` samples. The same ``seed`` gives bit-identical data."""
        n = check_int("n", n, 1)
        rng = np.random.default_rng(check_seed("seed", seed))
        c = self.config
        k, V, P, Cp, s = c.k, c.views, c.patches, c.feature_patches, c.other_features
        F = c.n_features
        rows = np.arange(n)

        y = rng.integers(0, k, size=n)
        present = self._present_views(n, rng)
        is_multi = present.all(axis=1)

        # Total weight of every feature the sample carries: its own V views, then s others.
        own_total = np.where(present, rng.uniform(1.0, c.c_max, (n, V)), rng.uniform(c.rho, 2 * c.rho, (n, V)))
        keys = rng.random((n, F))
        keys[rows[:, None], y[:, None] * V + np.arange(V)] = np.inf  # never pick an own view
        others = np.argsort(keys, axis=1, kind="stable")[:, :s]
        w_other = np.where(is_multi, c.other_weight_multi, c.other_weight_single)[:, None]
        other_total = rng.uniform(0.5, 1.0, (n, s)) * w_other
        feats = np.concatenate([y[:, None] * V + np.arange(V), others], axis=1)  # (n, V+s)
        totals = np.concatenate([own_total, other_total], axis=1)

        # Disjoint patch sets: a random permutation of the patches, C_p consecutive ones each.
        perm = np.argsort(rng.random((n, P)), axis=1, kind="stable")
        slots = perm[:, : (V + s) * Cp].reshape(n, V + s, Cp)
        split = rng.exponential(size=(n, V + s, Cp))
        z = split / split.sum(axis=2, keepdims=True) * totals[:, :, None]

        if c.feature_noise > 0:
            weights = rng.uniform(0.0, c.feature_noise, (n, P, F)).astype(np.float32)
        else:
            weights = np.zeros((n, P, F), dtype=np.float32)
        weights[rows[:, None, None], slots, feats[:, :, None]] += z.astype(np.float32)
        patch_feature = np.full((n, P), -1, dtype=np.int16)
        patch_feature[rows[:, None, None], slots] = feats[:, :, None]

        X = np.empty((n, P, c.d), dtype=np.float32)
        feats32 = self.features.astype(np.float32)
        starts = range(0, n, NOISE_CHUNK)

        def fill(start: int, chunk_rng: np.random.Generator) -> None:
            block = X[start : start + NOISE_CHUNK]
            chunk_rng.standard_normal(out=block, dtype=np.float32)
            block *= np.float32(c.noise_std)
            block += weights[start : start + NOISE_CHUNK] @ feats32

        # Fixed-size chunks with their own spawned generators: the data do not depend on how
        # many threads fill them, and numpy releases the GIL while it draws and multiplies.
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            list(pool.map(fill, starts, rng.spawn(len(starts))))

        return MultiViewData(
            X=X,
            y=y.astype(np.int64),
            views_present=present,
            is_multi=is_multi,
            view_weight=own_total.astype(np.float32),
            patch_feature=patch_feature,
            weights=weights,
            features=self.features,
            config=c,
        )

    def _present_views(self, n: int, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        if c.missing_mode == "single":
            present = np.ones((n, c.views), dtype=bool)
            single = rng.random(n) < c.missing
            kept = rng.integers(0, c.views, size=n)
            present[single] = False
            present[np.flatnonzero(single), kept[single]] = True
            return present
        present = rng.random((n, c.views)) >= c.missing
        while True:  # condition on at least one view present: redraw the empty rows
            empty = np.flatnonzero(~present.any(axis=1))
            if empty.size == 0:
                return present
            present[empty] = rng.random((empty.size, c.views)) >= c.missing


def expected_single_fraction(config: MultiViewConfig) -> float:
    """Probability that a sample is not multi-view (some view weak) under ``config``."""
    if config.missing_mode == "single":
        return config.missing
    q = config.missing
    all_present = (1 - q) ** config.views
    return 1 - all_present / (1 - q**config.views)
