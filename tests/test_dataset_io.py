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


def _saved(tmp_path):
    world = MultiViewDistribution(MultiViewConfig(k=3, views=2, d=8, patches=6, other_features=1))
    return world.sample(20, seed=1), tmp_path / "ok.npz"


def _rewrite(src, dst, **changes):
    """A copy of the archive ``src`` with entries replaced (None: removed)."""
    with np.load(src) as f:
        arrays = {name: f[name] for name in f.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    np.savez(dst, **arrays)
    return dst


@pytest.mark.parametrize("case, message", [
    ("text", "not an .npz archive"),
    ("foreign", "no '_kind' and '_config'"),
    ("kind", "unknown dataset kind 'Other'"),
    ("json", "not valid JSON"),
    ("extra_key", "does not fit MultiViewConfig"),
    ("bad_value", "its config is invalid"),
    ("rows", "must have one row per label (20)"),
    ("label", "labels must lie in [0, 2] (k = 3)"),
    ("missing_array", "missing ['features']"),
    ("object", "not a plain array"),
])
def test_load_names_the_file_and_what_is_wrong(tmp_path, case, message):
    import json

    data, path = _saved(tmp_path)
    data.save(path)
    bad = tmp_path / "bad.npz"
    config = json.loads(str(np.load(path)["_config"]))
    if case == "text":
        bad.write_text("X,y\n1,2\n")
    elif case == "foreign":
        np.savez(bad, a=np.arange(3))
    elif case == "kind":
        _rewrite(path, bad, _kind=np.array("Other"))
    elif case == "json":
        _rewrite(path, bad, _config=np.array("{broken"))
    elif case == "extra_key":
        _rewrite(path, bad, _config=np.array(json.dumps({**config, "colour": 1})))
    elif case == "bad_value":
        _rewrite(path, bad, _config=np.array(json.dumps({**config, "missing": 2.0})))
    elif case == "rows":
        _rewrite(path, bad, X=data.X[:10])
    elif case == "label":
        _rewrite(path, bad, y=np.where(np.arange(20) == 3, 99, data.y))
    elif case == "missing_array":
        _rewrite(path, bad, features=None)
    elif case == "object":
        _rewrite(path, bad, y=np.array([{"a": 1}] * 20, dtype=object))
    with pytest.raises(ValueError) as err:
        multiview.load(bad)
    assert str(bad) in str(err.value) and message in str(err.value)
    assert "pickle" not in str(err.value).lower()
