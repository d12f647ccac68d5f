"""Generation speed of the data layer (pytest-benchmark).

Run: ``pytest benchmarks/test_generate_speed.py`` (not part of the test suite).
"""

import pytest

from multiview import GaussianConfig, GaussianTask, MultiViewConfig, MultiViewDistribution


@pytest.fixture(scope="module")
def world():
    return MultiViewDistribution(MultiViewConfig(k=10, views=2, patches=16, d=400), seed=0)


def test_multiview_10k_samples(benchmark, world):
    """The issue's reference size: 10,000 samples, k = 10, V = 2, P = 16, d = 400 (244 MiB of X)."""
    data = benchmark.pedantic(world.sample, args=(10_000,), kwargs={"seed": 1}, rounds=5, iterations=1)
    assert data.X.shape == (10_000, 16, 400)


@pytest.mark.parametrize("teacher", ["fc", "conv"])
def test_gaussian_rejection_10k(benchmark, teacher):
    cfg = GaussianConfig(k=10, patches=4, patch_dim=16, teacher=teacher, sampling="rejection", margin=0.3)
    task = GaussianTask(cfg, seed=0)
    data = benchmark.pedantic(task.sample, args=(10_000,), kwargs={"seed": 1}, rounds=3, iterations=1)
    assert data.n == 10_000
