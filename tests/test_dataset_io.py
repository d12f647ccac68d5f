"""Saving and loading datasets: identical round trips, atomic writes."""

import numpy as np
import pytest

import multiview
from multiview import (
    GaussianConfig,
    GaussianTask,
    MultiViewConfig,
    MultiViewDistribution,
)


def assert_same(a, b):
    assert type(a) is type(b)
    assert a.config == b.config
    for name in a._array_fields():
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize(
    "world",
    [
        MultiViewDistribution(MultiViewConfig(k=3, views=3, d=12, patches=20, missing=0.4,
                                              missing_mode="independent", feature_noise=0.01)),
        GaussianTask(GaussianConfig(k=3, patches=2, patch_dim=5, input="mixture", teacher="conv",
                                    sampling="rejection", margin=0.2, label_noise=0.1)),
    ],
)
def test_round_trip_is_identical(tmp_path, world):
    data = world.sample(57, seed=11)
    path = data.save(tmp_path / "sub" / "data.npz")
    assert_same(data, multiview.load(path))


def test_save_does_not_leave_temp_files_and_overwrites(tmp_path):
    world = MultiViewDistribution(MultiViewConfig(k=2, views=2, d=4, patches=10, other_features=1))
    path = tmp_path / "d.npz"
    world.sample(5, seed=0).save(path)
    second = world.sample(6, seed=1)
    second.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    assert multiview.load(path).n == 6


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    world = MultiViewDistribution(MultiViewConfig(k=2, views=2, d=4, patches=10, other_features=1))
    path = tmp_path / "d.npz"
    world.sample(5, seed=0).save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        world.sample(6, seed=1).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
