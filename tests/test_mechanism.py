"""The mechanism measures on hand-made models and cases whose answers are known."""

import numpy as np
import pytest
import torch

from multiview import MultiViewConfig, MultiViewDistribution
from theory_sims import mechanism as mech
from theory_sims.config import LearnerConfig
from theory_sims.model import TwoLayerModel


def _model_using(features: np.ndarray, used: np.ndarray, d: int, scale: float = 2.0) -> TwoLayerModel:
    """One two-layer model per row of ``used`` (S, k, V): class j's neuron l is ``scale`` times
    v_{j,l} where the view is used and zero where not (m = V neurons per class)."""
    S, k, V = used.shape
    W = np.zeros((S, k, V, d))
    for s in range(S):
        for j in range(k):
            for l in range(V):
                if used[s, j, l]:
                    W[s, j, l] = scale * features[j * V + l]
    learner = LearnerConfig(k=k, m=V, q=3, varrho=0.5, sigma0=0.01)
    return TwoLayerModel(learner, tuple(range(S)), torch.tensor(W, dtype=torch.float32))


def test_per_view_accuracy_recovers_the_views_hand_made_models_use():
    """Models built to use a known set of views get (almost) every single-view sample of a used view
    right and (almost) none of an unused one, so views_used returns the set they were built with."""
    k, V, d = 4, 2, 40
    world = MultiViewDistribution(MultiViewConfig(k=k, views=V, d=d, patches=16, noise_std=0.01, rho=0.0,
                                                  other_weight_single=0.0, feature_noise=0.0), seed=0)
    single = world.variant(missing=1.0).sample(400, seed=1)
    rng = np.random.default_rng(0)
    used = rng.random((3, k, V)) < 0.5
    used[:, 0] = [True, False]  # class 0 uses view 1 only in every model
    model = _model_using(world.features, used, d)
    logits = model.logits(single.X)
    acc = mech.per_view_accuracy(logits, single.y, single.views_present, k)
    assert acc.shape == (3, k, V)
    assert (acc[used] >= 0.95).all()
    # an unused view leaves the class's logit at zero: right only where the other logits are zero too
    assert np.array_equal(mech.views_used(acc), used)


def test_per_view_accuracy_counts_each_class_and_view_and_ignores_multi_view_samples():
    y = np.array([0, 0, 0, 1, 1, 1])
    present = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [1, 1], [0, 1]], dtype=bool)
    pred = np.array([0, 1, 0, 1, 0, 0])  # (0, view 1): 1 of 2; (0, view 2): 1 of 1; (1, view 1): 1 of 1; (1, view 2): 0 of 1
    logits = np.eye(2)[pred][None]  # one model
    acc = mech.per_view_accuracy(logits, y, present, k=3)
    np.testing.assert_allclose(acc[0, :2], [[0.5, 1.0], [1.0, 0.0]])
    assert np.isnan(acc[0, 2]).all()  # class 2 has no samples
    assert mech.views_used(acc)[0].tolist() == [[True, True], [True, False], [False, False]]
    with pytest.raises(ValueError, match="logits must be"):
        mech.per_view_accuracy(logits[0], y, present, 3)


def test_lambda_calibration_bins_by_lambda_over_varrho():
    lam = np.array([0.2, 0.8, 1.5, 2.5, 9.0])
    acc = np.array([0.1, 0.3, 0.4, 0.8, 1.0])
    rows = mech.lambda_calibration(lam, acc, varrho=0.5)  # Lambda/varrho: 0.4, 1.6, 3, 5, 18
    assert [r["triples"] for r in rows] == [1, 1, 0, 1, 2]
    assert rows[0]["mean_view_acc"] == pytest.approx(0.1) and rows[2]["mean_view_acc"] is None
    assert rows[4]["mean_view_acc"] == pytest.approx(0.9)


def test_init_lottery_on_a_constructed_case():
    lam0 = np.array([[[0.3, 0.1], [0.1, 0.2], [0.5, 0.45], [0.0, 0.4]]])  # (1 model, 4 classes, 2 views)
    used = np.array([[[True, False],   # favourite (view 1)
                      [True, False],   # not the favourite (view 2 is larger)
                      [True, True],    # both: a close call at init (gap 0.05)
                      [False, True]]])  # favourite
    out = mech.init_lottery(lam0, used)
    assert (out["pairs"], out["one_view"], out["several_views"], out["no_view"]) == (4, 3, 1, 0)
    assert out["init_winner"] == pytest.approx(2 / 3) and out["chance"] == 0.5
    assert out["median_gap_one_view"] == pytest.approx(0.2)  # gaps 0.2, 0.1, 0.4
    assert out["median_gap_several_views"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lam0 and used"):
        mech.init_lottery(lam0[0], used)


def test_kd_inheritance_splits_by_how_many_teachers_used_a_view():
    teachers = np.zeros((3, 2, 2), bool)
    teachers[:, 0, 0] = True          # (0, 0): all 3 teachers
    teachers[0, 0, 1] = True          # (0, 1): one teacher
    teachers[:2, 1, 0] = True         # (1, 0): two
    students = np.zeros((2, 2, 2), bool)
    students[:, 0, 0] = True          # both students use the view every teacher used
    students[0, 1, 0] = True          # one student uses the one two teachers used
    out = mech.kd_inheritance(teachers, students)
    by = {r["teachers"]: r for r in out["by_teachers"]}
    assert by[0]["fraction"] == 0.0 and by[0]["triples"] == 2  # (1, 1) unused by all
    assert by[1]["fraction"] == 0.0 and by[2]["fraction"] == 0.5 and by[3]["fraction"] == 1.0
    assert out["ensemble"]["fraction"] == pytest.approx(3 / 6)
    assert out["few"] == {"triples": 2, "fraction": 0.0}  # at most 3 / 3 = 1 teacher
    assert out["many"]["fraction"] == pytest.approx(3 / 4)


def test_self_kd_union_bookkeeping():
    t = np.array([[[1, 1], [0, 0], [1, 0]]], bool)
    c = np.array([[[1, 0], [1, 0], [0, 0]]], bool)
    s = np.array([[[1, 0], [1, 1], [1, 0]]], bool)
    out = mech.self_kd_inheritance(t, c, s)
    assert out["both"] == {"triples": 1, "fraction": 1.0}
    assert out["teacher"] == {"triples": 2, "fraction": 0.5}   # (0, 1) no, (2, 0) yes
    assert out["own_init"] == {"triples": 1, "fraction": 1.0}
    assert out["neither"] == {"triples": 2, "fraction": 0.5}   # (1, 1) yes, (2, 1) no
    assert out["union"] == {"triples": 4, "fraction": 0.75}
    assert sum(out[g]["triples"] for g in mech.SELF_KD_GROUPS) == t.size
    with pytest.raises(ValueError, match="one shape"):
        mech.self_kd_inheritance(t, c[:, :2], s)


def test_memorisation_splits_by_whether_the_sample_view_is_used():
    single = np.array([True, True, True, False])
    correct = np.array([[1, 1, 1, 1]], bool)
    clean = np.array([[0, 1, 1, 1]], bool)
    stored = np.array([[3.0, 0.5, 0.7, 9.0]])
    used = np.array([[False, True, True, False]])  # sample 3 is multi-view: ignored
    out = mech.memorisation(correct, clean, stored, used, single)
    assert out["unused"] == {"pairs": 1, "fitted": 1.0, "without_noise": 0.0, "median_stored_noise": 3.0}
    assert out["used"]["pairs"] == 2 and out["used"]["without_noise"] == 1.0
    assert out["used"]["median_stored_noise"] == pytest.approx(0.6)


def test_noise_response_is_the_largest_logit():
    logits = np.array([[[0.1, 0.3], [2.0, -1.0]], [[0.0, 0.0], [0.5, 0.4]]])
    out = mech.noise_response(logits)
    assert out["mean_max_logit"] == pytest.approx([1.15, 0.25])
    assert out["max_logit"] == pytest.approx([2.0, 0.5])


def test_the_race_reads_winner_loser_and_when_the_loser_grew_off_lambda():
    """Two models, two classes, two views, Lambda tracked at steps 0, 2, 4, 6, 8; varrho = 1.
    Model 0 class 0: view 1 crosses at step 4 while view 0 stands at 0.1, and never grows.
    Model 0 class 1: view 0 crosses at 2 with view 1 at 0.6; view 1 crosses at 6, after the fit (4).
    Model 1 class 0: both cross at step 2 (the larger, view 0, wins; the loser stood at 1.2).
    Model 1 class 1: nothing crosses."""
    steps = np.array([0, 2, 4, 6, 8])
    lam = np.zeros((5, 2, 2, 2))
    lam[:, 0, 0, 0] = 0.1
    lam[:, 0, 0, 1] = [0.2, 0.5, 1.5, 3.0, 4.0]
    lam[:, 0, 1, 0] = [0.3, 1.1, 2.0, 3.0, 3.0]
    lam[:, 0, 1, 1] = [0.2, 0.6, 0.9, 1.3, 2.0]
    lam[:, 1, 0, 0] = [0.4, 1.5, 2.0, 2.0, 2.0]
    lam[:, 1, 0, 1] = [0.4, 1.2, 2.0, 2.0, 2.0]
    lam[:, 1, 1] = 0.2
    used = np.array([[[False, True], [True, True]], [[True, True], [False, False]]])
    out = mech.race(steps, lam, 1.0, np.array([4, 8]), used)
    assert (out["pairs"], out["raced"]) == (4, 3)
    np.testing.assert_allclose(sorted(out["loser_at_win"]), [0.1, 0.6, 1.2])
    assert out["median_t_win"] == 2.0 and out["median_loser_at_win"] == pytest.approx(0.6)
    assert out["loser_below_half"] == 1
    assert (out["loser_crossed_with_winner"], out["loser_later_before_fit"], out["loser_later_after_fit"],
            out["loser_never"]) == (1, 0, 1, 1)
    bins = {b["lo"]: (b["pairs"], b["both_used"]) for b in out["by_loser_at_win"]}
    assert bins[-np.inf] == (1, 0.0) and bins[0.5] == (1, 1.0) and bins[0.75] == (1, 1.0) and bins[0.25] == (0, None)


def test_the_race_refuses_one_view_and_mismatched_shapes():
    with pytest.raises(ValueError, match="at least two views"):
        mech.race(np.arange(2), np.zeros((2, 1, 3, 1)), 1.0, np.zeros(1), np.zeros((1, 3, 1), bool))
    with pytest.raises(ValueError, match="lam must be"):
        mech.race(np.arange(3), np.zeros((2, 1, 3, 2)), 1.0, np.zeros(1), np.zeros((1, 3, 2), bool))


def test_single_view_samples_are_counted_per_class_and_view_and_split_by_how_they_are_fitted():
    # five samples: 0 multi-view; 1, 2 class 0 showing view 1; 3 class 1 showing view 0; 4 class 1 view 1
    y = np.array([0, 0, 0, 1, 1])
    shown = np.array([0, 1, 1, 0, 1])
    single = np.array([False, True, True, True, True])
    used = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 1]], bool)  # (S=2, n): the model uses the view shown
    correct = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1]], bool)
    clean = np.array([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1]], bool)
    out = mech.single_view_samples(y, shown, single, correct, clean, used, k=2, V=2)
    assert out["count"] == [[0, 2], [1, 1]] and out["samples"] == 4
    tv, tn = np.asarray(out["through_view"]), np.asarray(out["through_noise"])
    assert np.isnan(tv[0, 0]) and np.isnan(tn[0, 0])
    # class 0, view 1 (samples 1, 2 x 2 models): through the view (0, 1) only; through noise (0, 2) and (1, 1)
    assert tv[0, 1] == pytest.approx(1 / 4) and tn[0, 1] == pytest.approx(2 / 4)
    # class 1, view 0 (sample 3): model 0 uses it; model 1 does not but is right without noise: neither
    assert tv[1, 0] == pytest.approx(1 / 2) and tn[1, 0] == 0.0
    assert out["all_through_view"] == pytest.approx(3 / 8) and out["all_through_noise"] == pytest.approx(2 / 8)
