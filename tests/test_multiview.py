"""The multi-view distribution: rates, weights, orthonormality, seeding and validation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiview import MultiViewConfig, MultiViewDistribution, expected_single_fraction

SMALL = dict(k=4, views=2, d=32, patches=12, feature_patches=2, other_features=2)


def sample(n=400, seed=1, world_seed=0, **overrides):
    cfg = MultiViewConfig(**{**SMALL, **overrides})
    return MultiViewDistribution(cfg, seed=world_seed).sample(n, seed=seed)


@pytest.mark.parametrize("mode", ["single", "independent"])
@pytest.mark.parametrize("missing", [0.0, 0.05, 0.1, 0.3, 0.6])
def test_single_view_fraction_within_three_standard_errors(mode, missing):
    n = 20_000
    data = sample(n=n, missing=missing, missing_mode=mode, d=20, patches=8, other_features=1)
    p = expected_single_fraction(data.config)
    se = math.sqrt(p * (1 - p) / n)
    assert abs(data.single_view_fraction() - p) <= 3 * se + 1e-12


def test_independent_mode_keeps_a_view_and_misses_each_view_at_the_conditional_rate():
    n, q, V = 20_000, 0.4, 3
    data = sample(n=n, missing=q, missing_mode="independent", views=V, k=3, d=20, patches=12, other_features=1)
    assert data.views_present.any(axis=1).all()
    # P(view missing | not all missing) = (q - q^V) / (1 - q^V)
    expected = (q - q**V) / (1 - q**V)
    se = math.sqrt(expected * (1 - expected) / n)
    assert abs((~data.views_present[:, 0]).mean() - expected) <= 3 * se


def test_single_mode_keeps_exactly_one_view_in_single_view_samples():
    data = sample(missing=0.5, views=3, k=3, patches=15, other_features=2)
    single = ~data.is_multi
    assert single.any()
    assert (data.views_present[single].sum(axis=1) == 1).all()
    assert data.views_present[data.is_multi].all()
    # the kept view is uniform over the V views
    kept = data.views_present[single].argmax(axis=1)
    assert set(np.unique(kept)) == {0, 1, 2}


@pytest.mark.parametrize("basis", ["random", "identity"])
def test_features_are_orthonormal(basis):
    dist = MultiViewDistribution(MultiViewConfig(k=10, views=3, d=40, patches=24, basis=basis), seed=3)
    F = dist.features
    assert F.shape == (30, 40)
    np.testing.assert_allclose(F @ F.T, np.eye(30), atol=1e-6)
    F32 = dist.sample(5, seed=0).features.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(F32 @ F32.T, np.eye(30), atol=1e-6)


def test_view_weight_sums_lie_in_their_declared_ranges():
    cfg = dict(missing=0.3, c_max=1.7, rho=0.05, other_weight_multi=0.3, other_weight_single=0.2)
    data = sample(n=2000, feature_noise=0.0, **cfg)
    V = data.config.views
    present, w = data.views_present, data.view_weight
    assert ((w >= 1.0) & (w <= 1.7))[present].all()
    assert ((w >= 0.05) & (w <= 0.1 + 1e-7))[~present].all()

    # With no feature noise, the weights of a feature summed over its patches equal its total.
    n = data.n
    feature_of_view = data.y[:, None] * V + np.arange(V)
    sums = data.weights.sum(axis=1)  # (n, F)
    np.testing.assert_allclose(sums[np.arange(n)[:, None], feature_of_view], w, rtol=1e-5)
    # Other-class features: U[w/2, w] with w depending on the sample being multi-view or not.
    other = sums.copy()
    other[np.arange(n)[:, None], feature_of_view] = 0
    counts = (other > 0).sum(axis=1)
    assert (counts == data.config.other_features).all()
    hi = np.where(data.is_multi, 0.3, 0.2)[:, None]
    nz = other > 0
    assert ((other <= hi + 1e-6) & (other >= hi / 2 - 1e-6))[nz].all()


def test_patches_are_disjoint_and_carry_feature_patches_each():
    data = sample(n=500, feature_patches=3, patches=15, other_features=2)
    c = data.config
    for i in range(data.n):
        carried = data.patch_feature[i][data.patch_feature[i] >= 0]
        values, counts = np.unique(carried, return_counts=True)
        assert len(values) == c.views + c.other_features
        assert (counts == c.feature_patches).all()
        own = data.y[i] * c.views + np.arange(c.views)
        assert set(own) <= set(values)


def test_feature_noise_stays_in_range():
    data = sample(n=300, feature_noise=0.01)
    bare = data.patch_feature < 0  # noise-only patches carry only U[0, gamma] of every feature
    vals = data.weights[bare]
    assert vals.min() >= 0 and vals.max() <= 0.01 + 1e-7
    assert vals.mean() == pytest.approx(0.005, abs=5e-4)


def test_x_is_weights_times_features_plus_gaussian_noise():
    data = sample(n=1500, noise_std=0.2, d=64)
    noise = data.noise
    assert noise.mean() == pytest.approx(0.0, abs=3 * 0.2 / math.sqrt(noise.size))
    assert noise.std() == pytest.approx(0.2, rel=0.01)


def test_zero_noise_gives_exact_feature_combinations():
    data = sample(n=50, noise_std=0.0)
    np.testing.assert_allclose(data.noise, 0.0, atol=1e-6)


def test_same_seed_is_bit_identical_and_other_seeds_differ():
    a, b, c = sample(seed=7), sample(seed=7), sample(seed=8)
    for name in ("X", "y", "views_present", "weights", "patch_feature"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.y, c.y)
    other_world = sample(seed=7, world_seed=1)
    assert not np.array_equal(a.features, other_world.features)


def test_world_features_shared_across_samples():
    dist = MultiViewDistribution(MultiViewConfig(**SMALL), seed=0)
    a, b = dist.sample(10, seed=1), dist.sample(10, seed=2)
    assert a.features is b.features


def test_labels_are_balanced_in_expectation():
    data = sample(n=20_000, d=20, patches=8, other_features=1)
    counts = data.class_counts()
    p = 1 / data.k
    se = math.sqrt(p * (1 - p) / data.n) * data.n
    assert np.abs(counts - data.n * p).max() <= 4 * se


def test_subset_keeps_per_sample_fields_and_shared_ones():
    data = sample(n=30)
    sub = data.subset(data.is_multi)
    assert sub.n == int(data.is_multi.sum())
    assert sub.is_multi.all()
    assert sub.features is data.features
    np.testing.assert_array_equal(sub.X, data.X[data.is_multi])


@pytest.mark.parametrize(
    "overrides, name",
    [
        (dict(views=0), "views"),
        (dict(missing=1.5), "missing"),
        (dict(missing=-0.1), "missing"),
        (dict(missing=1.0, missing_mode="independent"), "missing"),
        (dict(d=7), "d"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(feature_noise=-0.1), "feature_noise"),
        (dict(patches=5), "patches"),
        (dict(k=1), "k"),
        (dict(other_weight_multi=0.5), "other_weight_multi"),
        (dict(c_max=0.5), "c_max"),
        (dict(missing_mode="sometimes"), "missing_mode"),
        (dict(basis="dct"), "basis"),
        (dict(views=1, missing=0.1), "missing"),
        (dict(feature_patches=0), "feature_patches"),
        (dict(k=2.5), "k"),
        (dict(rho=float("nan")), "rho"),
    ],
)
def test_invalid_configs_name_the_parameter(overrides, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        MultiViewConfig(**{**SMALL, **overrides})


def test_invalid_sample_count():
    with pytest.raises(ValueError, match="^n must be an integer >= 1"):
        MultiViewDistribution(MultiViewConfig(**SMALL)).sample(0)


@st.composite
def valid_configs(draw):
    k = draw(st.integers(2, 6))
    views = draw(st.integers(1, 3))
    other = draw(st.integers(0, min(3, (k - 1) * views)))
    cp = draw(st.integers(1, 3))
    patches = cp * (views + other) + draw(st.integers(0, 4))
    d = k * views + draw(st.integers(0, 8))
    mode = draw(st.sampled_from(["single", "independent"]))
    if views == 1:
        missing = 0.0
    else:
        missing = draw(st.floats(0.0, 0.95 if mode == "independent" else 1.0))
    return MultiViewConfig(
        k=k, views=views, d=d, patches=patches, feature_patches=cp, other_features=other,
        missing=missing, missing_mode=mode,
        c_max=draw(st.floats(1.0, 3.0)), rho=draw(st.floats(0.0, 0.5)),
        feature_noise=draw(st.floats(0.0, 0.05)), noise_std=draw(st.floats(0.0, 0.2)),
    )


@settings(max_examples=40, deadline=None)
@given(cfg=valid_configs(), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_property_any_valid_config_gives_consistent_samples(cfg, n, seed):
    data = MultiViewDistribution(cfg, seed=seed).sample(n, seed=seed)
    V, P = cfg.views, cfg.patches
    assert data.X.shape == (n, P, cfg.d) and data.X.dtype == np.float32
    assert np.isfinite(data.X).all()
    assert ((data.y >= 0) & (data.y < cfg.k)).all()
    assert data.views_present.shape == (n, V) and data.views_present.any(axis=1).all()
    np.testing.assert_array_equal(data.is_multi, data.views_present.all(axis=1))
    if cfg.missing == 0:
        assert data.is_multi.all()
    w = data.view_weight
    assert ((w >= 1.0) & (w <= cfg.c_max + 1e-6))[data.views_present].all()
    assert ((w >= cfg.rho - 1e-7) & (w <= 2 * cfg.rho + 1e-6))[~data.views_present].all()
    carried = (data.patch_feature >= 0).sum(axis=1)
    assert (carried == cfg.feature_patches * (V + cfg.other_features)).all()
    assert data.weights.min() >= 0
    np.testing.assert_allclose(data.features @ data.features.T, np.eye(cfg.k * V), atol=1e-6)


def test_variant_shares_the_features_and_changes_the_mixture():
    world = MultiViewDistribution(MultiViewConfig(**SMALL), seed=0)
    single = world.variant(missing=1.0).sample(200, seed=1)
    assert single.features is world.features
    assert not single.is_multi.any()
    assert world.variant(missing=0.0).sample(50, seed=1).is_multi.all()
    with pytest.raises(ValueError, match="d cannot change"):
        world.variant(d=64)
    with pytest.raises(ValueError, match="missing must be"):
        world.variant(missing=2.0)
