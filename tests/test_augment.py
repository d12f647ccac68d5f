"""Augmentation as multi-view in the theory's model: the masks, the gradient of an augmented step,
stacking, and the view_learning row that reports it."""

import numpy as np
import pytest

from multiview import MultiViewConfig, MultiViewDistribution
from theory_sims import LearnerConfig, Probe, TrainConfig, train
from theory_sims.train import augmenter, patch_views

WORLD = MultiViewDistribution(
    MultiViewConfig(k=4, views=2, d=48, patches=12, feature_patches=2, other_features=2, missing=0.25,
                    noise_std=0.1),
    seed=0,
)
DATA = WORLD.sample(60, seed=1)
LEARNER = LearnerConfig(k=4, m=3, q=3, varrho=1.0, sigma0=0.1)


def test_patch_views_name_the_view_of_the_samples_own_class():
    pv = patch_views(DATA)
    V = DATA.config.views
    feature = DATA.patch_feature.astype(int)
    own = (feature >= 0) & (feature // V == DATA.y[:, None])
    np.testing.assert_array_equal(pv[own], feature[own] % V)
    assert (pv[~own] == -1).all()
    # every multi-view sample shows both views in some patch
    for i in np.flatnonzero(DATA.is_multi):
        assert set(pv[i][pv[i] >= 0]) == {0, 1}


def test_drop_view_removes_exactly_one_view_of_each_sample_and_repeats_by_step():
    pv = patch_views(DATA)
    keep = augmenter(TrainConfig(augment="drop_view"), *pv.shape, LEARNER, pv)
    dropped_views = []
    for t in range(40):
        k = keep(t)
        for i in range(len(pv)):
            gone = set(pv[i][~k[i]])
            assert len(gone) == 1 and gone <= {0, 1}  # one view's patches, nothing else
            assert (k[i][pv[i] == -1]).all()
            dropped_views.append(gone.pop())
        np.testing.assert_array_equal(k, keep(t))  # the same step draws the same crop
    assert not np.array_equal(keep(0), keep(1))
    assert np.mean(dropped_views) == pytest.approx(0.5, abs=0.03)  # each view dropped half the time


def test_drop_patches_zeroes_the_asked_fraction():
    keep = augmenter(TrainConfig(augment="drop_patches", augment_rate=0.3), 500, 20, LEARNER)
    assert 1 - keep(3).mean() == pytest.approx(0.3, abs=0.01)


def test_an_augmented_step_is_a_step_on_the_cropped_inputs():
    cfg = TrainConfig(lr=2.0, steps=1, track_every=0, augment="drop_view", batch_seed=4)
    aug = train(DATA.X, DATA.y, [5, 6], LEARNER, cfg, patch_views=patch_views(DATA))
    keep = augmenter(cfg, *DATA.X.shape[:2], LEARNER, patch_views(DATA))(0)
    cropped = train(DATA.X * keep[:, :, None], DATA.y, [5, 6], LEARNER, TrainConfig(lr=2.0, steps=1, track_every=0))
    np.testing.assert_allclose(aug.model.W.numpy(), cropped.model.W.numpy(), rtol=1e-6, atol=1e-7)
    # ... while what it records is the whole training set's loss, not the crop's
    plain = train(DATA.X, DATA.y, [5, 6], LEARNER, TrainConfig(lr=2.0, steps=1, track_every=0))
    np.testing.assert_array_equal(aug.history["loss"][0], plain.history["loss"][0])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_augmented_stacked_models_equal_models_trained_alone(backend):
    cfg = TrainConfig(lr=2.0, steps=20, track_every=5, augment="drop_view", backend=backend)
    pv = patch_views(DATA)
    stacked = train(DATA.X, DATA.y, [11, 12], LEARNER, cfg, probe=Probe.from_data(DATA), patch_views=pv)
    alone = train(DATA.X, DATA.y, [12], LEARNER, cfg, probe=Probe.from_data(DATA), patch_views=pv)
    np.testing.assert_array_equal(stacked.model.select([1]).W.numpy(), alone.model.W.numpy())


def test_the_backends_agree_on_an_augmented_run():
    pv = patch_views(DATA)
    out = [train(DATA.X, DATA.y, [3], LEARNER, TrainConfig(lr=2.0, steps=15, track_every=0, augment="drop_view",
                                                           backend=b), patch_views=pv).model.W.numpy()
           for b in ("numba", "torch")]
    np.testing.assert_allclose(out[0], out[1], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("cfg, learner, views, message", [
    (dict(augment="crop"), LEARNER, True, "augment must be one of"),
    (dict(augment="drop_patches", augment_rate=1.0), LEARNER, True, "augment_rate must be a number in (0.0, 1.0)"),
    (dict(augment="drop_view", batch_size=10), LEARNER, True, "augment needs full-batch training"),
    (dict(augment="drop_view"), LearnerConfig(k=4, m=3, q=3, mode="random_features"), True, "augment needs the full learner"),
    (dict(augment="drop_view"), LEARNER, False, "augment='drop_view' needs patch_views"),
])
def test_bad_augmentation_is_refused(cfg, learner, views, message):
    with pytest.raises(ValueError) as exc:
        train(DATA.X, DATA.y, [1], learner, TrainConfig(lr=1.0, steps=2, **cfg),
              patch_views=patch_views(DATA) if views else None)
    assert message in str(exc.value)


def test_view_learning_reports_the_augmented_single_models_beside_the_plain_ones(tmp_path, capsys):
    import json

    from test_view_learning import SMALL
    from theory_sims import view_learning as vl

    out = tmp_path / "aug"
    drop = {"--ntk", "--ntk-steps", "20", "--rf-steps"}
    argv = [a for i, a in enumerate(SMALL) if a not in drop and SMALL[i - 1] != "--rf-steps"]
    assert vl.main(argv + ["--augment", "drop_view", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert len(res["augmented"]["single_view_acc"]) == len(res["individual"]["single_view_acc"])
    assert "views_used" in res["augmented"] and "second_views" in res["augmented"]
    assert "single model, augmented (--augment)" in text and "ensemble of augmented models" in text
    assert "augmented single models (drop_view): views used per class" in text
    assert "of the ensemble's gain" in text
    assert res["setting"]["augment"] == "drop_view"
    assert json.loads((out / "config.json").read_text())["augment"] == "drop_view"
    from conftest import assert_png_has_content

    assert_png_has_content(out / "views_used_augmented.png")
    assert_png_has_content(out / "lambda_trajectories_augmented.png")


@pytest.mark.parametrize("flags, message", [
    (["--augment-rate", "0.3"], "--augment-rate does nothing unless --augment drop_patches"),
    (["--augment", "drop_view", "--augment-rate", "0.3"], "--augment-rate does nothing unless --augment drop_patches"),
    (["--augment", "drop_patches", "--augment-rate", "1.5"], "--augment-rate must be a number in (0.0, 1.0)"),
    (["--augment", "crops"], "argument --augment: invalid choice"),
])
def test_bad_augment_flags_exit_2_with_one_line(flags, message, capsys, tmp_path):
    from theory_sims import view_learning as vl

    with pytest.raises(SystemExit) as exc:
        vl.main(flags + ["--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "never").exists()
