"""Hostile input to the public calls: each is refused where it enters, with one line naming the
argument and what it may be (TypeError for a value of the wrong kind, ValueError for one out of
range), instead of an error from deep inside numpy / torch or a silent run on garbage."""

import dataclasses

import numpy as np
import pytest

import multiview
from multiview import GaussianConfig, GaussianTask, MultiViewConfig, MultiViewData, MultiViewDistribution
from theory_sims import LearnerConfig, Probe, TrainConfig, init_model, train

CONFIG = MultiViewConfig(k=4, views=2, d=48, patches=12, feature_patches=2, other_features=2, missing=0.25,
                         noise_std=0.1)
WORLD = MultiViewDistribution(CONFIG, seed=0)
DATA = WORLD.sample(60, seed=1)
LEARNER = LearnerConfig(k=4, m=3, q=3, varrho=1.0, sigma0=0.1)
ONE_STEP = TrainConfig(steps=1)
KD = TrainConfig(steps=30, lr=2.0, loss="kd", temperature=2.0)


def train_with(**changes):
    args = dict(X=DATA.X, y=DATA.y, seeds=[0], learner=LEARNER, cfg=ONE_STEP)
    return train(**{**args, **changes})


def with_nonfinite(a, count, value=np.nan):
    """A copy of the float array ``a`` whose first ``count`` entries are ``value``."""
    a = a.copy()
    a.reshape(-1)[:count] = value
    return a


def gaussian_task():
    return GaussianTask(GaussianConfig(patch_dim=8, teacher="linear"), seed=0)


# ----------------------------------------------------------------------------- 1. seeds

@pytest.mark.parametrize("call", [
    lambda: WORLD.sample(10, seed=-1),
    lambda: MultiViewDistribution(CONFIG, seed=-1),
    lambda: GaussianTask(GaussianConfig(patch_dim=8, teacher="linear"), seed=-1),
    lambda: gaussian_task().sample(10, seed=-1),
], ids=["world.sample", "MultiViewDistribution", "GaussianTask", "GaussianTask.sample"])
def test_a_negative_seed_is_refused_naming_seed(call):
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0 .*got -1$"):
        call()


@pytest.mark.parametrize("seed", ["a", 1.5, True, [1, "b"]])
def test_a_seed_of_the_wrong_kind_is_a_type_error_naming_seed(seed):
    with pytest.raises(TypeError, match=r"^seed must be an integer >= 0"):
        WORLD.sample(10, seed=seed)
    with pytest.raises(TypeError, match=r"^seed must be an integer >= 0"):
        MultiViewDistribution(CONFIG, seed=seed)


def test_every_kind_of_valid_seed_still_draws_the_same_data():
    same = [WORLD.sample(5, seed=s).X for s in (3, np.int64(3), np.random.default_rng(3),
                                                np.random.SeedSequence(3))]
    for X in same[1:]:
        np.testing.assert_array_equal(X, same[0])
    np.testing.assert_array_equal(WORLD.sample(5, seed=(3, 4)).X, WORLD.sample(5, seed=[3, 4]).X)
    np.testing.assert_array_equal(WORLD.sample(5, seed=(3, 4)).X, WORLD.sample(5, seed=np.array([3, 4])).X)


@pytest.mark.parametrize("seeds, error, message", [
    ([-1], ValueError, r"^seeds must be integers >= 0 .*got seeds\[0\] = -1$"),
    ([0, -5], ValueError, r"^seeds must be integers >= 0 .*got seeds\[1\] = -5$"),
    (["a"], TypeError, r"^seeds must be integers >= 0, got seeds\[0\] = str 'a'$"),
    ([1.5], TypeError, r"^seeds must be integers >= 0, got seeds\[0\] = float 1.5$"),
    (5, TypeError, r"^seeds must be a sequence of integers >= 0 \(one per model\), got int 5$"),
    ("ab", TypeError, r"^seeds must be a sequence of integers >= 0"),
])
def test_train_refuses_bad_model_seeds_naming_seeds(seeds, error, message):
    with pytest.raises(error, match=message):
        train_with(seeds=seeds)
    with pytest.raises(error, match=message):
        init_model(LEARNER, 48, seeds)


def test_numpy_integer_seeds_still_train_as_their_int():
    a, b = train_with(seeds=np.array([3, 4])), train_with(seeds=[3, 4])
    assert a.model.seeds == b.model.seeds == (3, 4) and all(type(s) is int for s in a.model.seeds)
    np.testing.assert_array_equal(a.model.W.numpy(), b.model.W.numpy())


# ----------------------------------------------------------------------------- 2. configs

@pytest.mark.parametrize("call, message", [
    (lambda: MultiViewDistribution({"k": 10}), r"^config must be a MultiViewConfig, got dict; "
                                               r"build one with MultiViewConfig\(\*\*config\)$"),
    (lambda: GaussianTask({"k": 10}), r"^config must be a GaussianConfig, got dict"),
    (lambda: train_with(learner={"k": 4}), r"^learner must be a LearnerConfig, got dict"),
    (lambda: train_with(cfg={"steps": 1}), r"^cfg must be a TrainConfig, got dict"),
    (lambda: train_with(probe={"views": 2}), r"^probe must be a Probe, got dict"),
], ids=["MultiViewDistribution", "GaussianTask", "train-learner", "train-cfg", "train-probe"])
def test_a_dict_for_a_config_is_a_type_error_naming_the_class(call, message):
    with pytest.raises(TypeError, match=message):
        call()


# ----------------------------------------------------------------------------- 3. labels and sizes

@pytest.mark.parametrize("y", [DATA.y.astype(np.float64), DATA.y + 0.5, DATA.y.astype(bool)],
                         ids=["float-integral", "float", "bool"])
def test_train_refuses_labels_that_are_not_integers(y):
    with pytest.raises(ValueError, match=r"^y must hold integer class labels in \[0, 3\], got dtype"):
        train_with(y=y)


def test_the_dataset_constructor_refuses_float_labels():
    with pytest.raises(ValueError, match=r"^y must be a 1-D integer array of class labels, got float64 \(60,\)$"):
        MultiViewData(X=DATA.X, y=DATA.y.astype(np.float64), config=CONFIG)
    with pytest.raises(ValueError, match=r"^y must hold labels in \[0, 3\] \(k = 4\), got \[0, 9\]$"):
        MultiViewData(X=DATA.X, y=np.where(np.arange(60) == 0, 9, DATA.y), config=CONFIG)
    with pytest.raises(ValueError, match=r"^X must have one row per label \(60\)"):
        MultiViewData(X=DATA.X[:10], y=DATA.y, config=CONFIG)
    with pytest.raises(TypeError, match=r"^y must be a numpy array, got list$"):
        MultiViewData(X=DATA.X, y=DATA.y.tolist(), config=CONFIG)


def test_an_empty_dataset_is_still_a_dataset():
    """The subset of an empty mask (no single-view sample at missing = 0, say) is a valid, empty
    dataset: the constructor allows n = 0, as load does; training on it is refused (below)."""
    empty = DATA.subset(np.zeros(DATA.n, dtype=bool))
    assert empty.n == 0 and empty.class_counts().tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("sgd", [False, True], ids=["gd", "sgd"])
def test_train_refuses_zero_samples_naming_n(sgd):
    cfg = TrainConfig(steps=1, batch_size=16 if sgd else 0)
    with pytest.raises(ValueError, match=r"^X must have shape \(n, P, d\) with n, P, d >= 1, got \(0, 12, 48\)$"):
        train_with(X=DATA.X[:0], y=DATA.y[:0], cfg=cfg)


# ----------------------------------------------------------------------------- 4. probes

OTHER_D = MultiViewDistribution(dataclasses.replace(CONFIG, d=40), seed=0).sample(60, seed=1)
OTHER_K = MultiViewDistribution(dataclasses.replace(CONFIG, k=5), seed=0).sample(60, seed=1)


@pytest.mark.parametrize("probe, message", [
    (Probe.from_data(OTHER_D), r"^probe.features must have dimension d = 48 \(that of X\), got 40"),
    (Probe.from_data(OTHER_D, memorisation=False), r"^probe.features must have dimension d = 48"),
    (Probe.from_data(OTHER_K), r"^probe.features must have k \* views = 4 \* 2 = 8 rows"),
    (Probe.from_data(WORLD.sample(30, seed=1)), r"^probe.noise must have the shape of X \(60, 12, 48\), "
                                                r"got \(30, 12, 48\)$"),
    (Probe(DATA.features, 2, DATA.noise, DATA.y[:30]), r"^probe.labels must have shape \(60,\)"),
], ids=["other-d", "other-d-no-noise", "other-k", "other-n", "labels"])
def test_a_probe_built_for_other_data_is_refused(probe, message):
    with pytest.raises(ValueError, match=message):
        train_with(probe=probe, cfg=TrainConfig(steps=1, track_every=1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(views=0), r"^views must be an integer >= 1, got 0$"),
    (dict(views=3), r"^features must have shape \(k \* views, d\) with views = 3, got \(8, 48\)$"),
    (dict(views=2, noise=DATA.noise), r"^noise and labels go together"),
])
def test_a_probe_that_cannot_be_is_refused_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Probe(DATA.features, **kwargs)


def test_a_probe_of_the_data_still_tracks():
    res = train_with(probe=Probe.from_data(DATA), cfg=TrainConfig(steps=2, track_every=1))
    assert res.history["lambda"].shape == (3, 1, 4, 2)  # steps 0, 1 and after the last update
    assert res.history["noise_memorisation"].shape == (3, 1, 60)


# ----------------------------------------------------------------------------- 5. NaN and inf

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_train_refuses_non_finite_inputs_naming_X(value):
    with pytest.raises(ValueError, match=r"^X has 3 non-finite values \(NaN or inf\); training inputs must be finite$"):
        train_with(X=with_nonfinite(DATA.X, 3, value), cfg=TrainConfig(steps=30, lr=2.0))


@pytest.mark.parametrize("shape", [(60, 4), (2, 60, 4)], ids=["one-teacher", "per-model"])
def test_train_refuses_non_finite_teacher_logits(shape):
    teacher = with_nonfinite(np.zeros(shape), 1)
    seeds = [0] if len(shape) == 2 else [0, 1]
    message = r"^teacher has 1 non-finite value \(NaN or inf\); teacher logits must be finite$"
    with pytest.raises(ValueError, match=message):
        train_with(seeds=seeds, cfg=KD, teacher=teacher)


def test_train_reads_teacher_logits_given_as_a_list_and_refuses_strings():
    listed = train_with(cfg=dataclasses.replace(KD, steps=1), teacher=np.zeros((60, 4)).tolist())
    assert listed.updates.tolist() == [1]
    with pytest.raises(TypeError, match=r"^teacher must hold real-valued logits, got dtype <U1$"):
        train_with(cfg=KD, teacher=[["a"] * 4] * 60)


def test_load_refuses_a_file_whose_X_holds_nan(tmp_path):
    path = dataclasses.replace(DATA, X=with_nonfinite(DATA.X, 3)).save(tmp_path / "nan.npz")
    with pytest.raises(ValueError) as err:
        multiview.load(path)
    assert str(err.value) == (f"{path}: X has 3 non-finite values (NaN or inf); "
                              "a saved dataset holds finite numbers only")


def test_load_still_reads_a_finite_file_back(tmp_path):
    back = multiview.load(DATA.save(tmp_path / "ok.npz"))
    np.testing.assert_array_equal(back.X, DATA.X)
    np.testing.assert_array_equal(back.y, DATA.y)


# ----------------------------------------------------------------------------- the shared checks

def test_the_shared_input_checks():
    import torch

    from multiview.checks import check_finite, check_instance, check_seed, check_seeds

    seq = np.random.SeedSequence(1)
    assert check_seed("seed", seq) is seq and check_seed("seed", None) is None
    assert check_seeds("seeds", range(3)) == (0, 1, 2)
    with pytest.raises(ValueError, match=r"^seeds must name at least one model"):
        check_seeds("seeds", [])
    with pytest.raises(TypeError, match=r"^seed must be an integer >= 0, .*got ndarray array\(\[1\.5\]\)$"):
        check_seed("seed", np.array([1.5]))
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0 .*got array\(\[ 1, -1\]\)$"):
        check_seed("seed", np.array([1, -1]))
    assert check_instance("cfg", CONFIG, MultiViewConfig) is CONFIG
    check_finite("X", np.arange(3))  # integers are finite
    with pytest.raises(ValueError, match=r"^t has 2 non-finite values \(NaN or inf\)$"):
        check_finite("t", torch.tensor([np.nan, 1.0, np.inf]))
