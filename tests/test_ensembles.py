"""Ensemble size, coverage, the independent-error null, disagreement and calibration, on hand-made cases."""

import numpy as np
import pytest

from theory_sims import ensembles as en


def one_hot_logits(pred, k, scale=5.0):
    """Logits (S, n, k) whose argmax is ``pred`` (S, n)."""
    pred = np.asarray(pred)
    z = np.zeros(pred.shape + (k,))
    np.put_along_axis(z, pred[..., None], scale, axis=-1)
    return z


@pytest.mark.parametrize("n, want", [(1, 0.0), (2, 0.5), (3, 0.75), (10, 1 - 2.0 ** -9)])
def test_fair_lottery_for_two_views_is_one_minus_two_to_the_one_minus_n(n, want):
    assert en.fair_lottery(n, 2) == pytest.approx(want)


def test_fair_lottery_is_a_probability_where_the_alternating_sum_rounds_below_zero():
    assert en.fair_lottery(2, 3) == 0.0 and en.fair_lottery(1, 3) == 0.0  # 2 members cannot cover 3 views


def test_fair_lottery_matches_a_simulated_lottery_for_three_views():
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 3, (200_000, 4))  # 4 members, each learns one of 3 views
    covered = np.mean([len(set(row)) == 3 for row in draws[:20_000]])
    assert en.fair_lottery(4, 3) == pytest.approx(4 / 9, abs=1e-12)  # 1 - 3 (2/3)^4 + 3 (1/3)^4
    assert covered == pytest.approx(4 / 9, abs=0.01)


def test_coverage_of_a_hand_made_pair_of_members():
    # 2 classes, 2 views; member 0 uses view 0 of both classes, member 1 view 1 of class 0 only
    used = np.array([[[1, 0], [1, 0]], [[0, 1], [0, 0]]], dtype=bool)
    y = np.array([0, 0, 1, 1])
    shown = np.array([0, 1, 0, 1])
    one, two = en.coverage_curve(used, y, shown, sizes=[1, 2])
    # one member: member 0 covers samples 0 and 2 (2/4), member 1 sample 1 (1/4); mean 3/8
    assert one["single_view_acc"] == pytest.approx(3 / 8) and one["classes_covered"] == 0.0
    # both: samples 0, 1, 2 (3/4); class 0 has both views, class 1 only one
    assert two["single_view_acc"] == pytest.approx(3 / 4) and two["classes_covered"] == pytest.approx(0.5)


def test_size_curve_averages_every_subset_and_brackets_it():
    # 3 members, 4 samples, 2 classes; member s errs on sample s only
    y = np.array([0, 1, 0, 1])
    pred = np.tile(y, (3, 1))
    for s in range(3):
        pred[s, s] = 1 - y[s]
    z = one_hot_logits(pred, 2)
    rows = en.size_curve(z, y, sizes=[1, 3], n_boot=200)
    assert rows[0]["acc"] == pytest.approx(0.75) and rows[0]["subsets"] == 3
    assert rows[1]["acc"] == 1.0 and rows[1]["subsets"] == 1  # the majority fixes every error
    assert rows[0]["lo"] <= rows[0]["acc"] <= rows[0]["hi"]


def test_independent_null_keeps_per_class_accuracy_and_decorrelates_errors():
    rng = np.random.default_rng(1)
    n, S = 400, 20
    y = np.repeat([0, 1], n // 2)
    wrong = rng.random(n) < 0.3  # every member errs on the same samples: perfectly correlated errors
    pred = np.where(wrong, 1 - y, y)
    z = one_hot_logits(np.tile(pred, (S, 1)), 2) + rng.normal(0, 0.1, (S, n, 2))
    null = en.independent_members(z, y, seed=0)
    for c in (0, 1):  # a permutation inside a class: each member's accuracy on the class is unchanged
        pick = y == c
        np.testing.assert_allclose((null[:, pick].argmax(-1) == c).mean(1), (z[:, pick].argmax(-1) == c).mean(1))
    real = en.size_curve(z, y, [1, S], n_boot=50)
    indep = en.size_curve(null, y, [1, S], n_boot=50)
    assert real[1]["acc"] == pytest.approx(real[0]["acc"], abs=0.01)  # correlated: no gain
    # independent errors at 30%: the vote of 20 is wrong with P(Binomial(20, 0.3) >= 10) = 0.048
    assert indep[1]["acc"] == pytest.approx(0.952, abs=0.03) and indep[1]["acc"] > real[1]["acc"] + 0.2


def test_pairwise_disagreement_counts_differing_predictions():
    pred = np.array([[0, 1, 2, 0], [0, 1, 1, 1], [0, 1, 2, 0]])
    D = en.pairwise_disagreement(one_hot_logits(pred, 3))
    np.testing.assert_allclose(D, [[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]])
    assert en.mean_off_diagonal(D) == pytest.approx(1 / 3)


def test_disagreement_by_views_splits_by_who_knows_the_view():
    # 2 seeds, 1 class (k = 2 outputs), 2 views; seed 0 knows both views, seed 1 only view 0
    used = np.array([[[1, 1]], [[1, 0]]], dtype=bool)
    y = np.zeros(4, dtype=int)
    shown = np.array([0, 0, 1, 1])
    pred = np.array([[0, 0, 0, 0], [0, 0, 1, 0]])  # seed 1 misses one of the view-1 samples
    out = en.disagreement_by_views(one_hot_logits(pred, 2), y, shown, used)
    assert out["both"] == {"disagreement": 0.0, "cases": 2}
    assert out["one"] == {"disagreement": 0.5, "cases": 2}
    assert out["neither"] == {"disagreement": None, "cases": 0}


def test_nll_and_ece_on_constructed_examples():
    y = np.array([0, 0, 0, 0])
    p = 0.8  # confidence 0.8 on class 0 everywhere, two classes
    z = np.tile([np.log(p), np.log(1 - p)], (4, 1))
    assert en.nll(z, y) == pytest.approx(-np.log(p))
    assert en.ece(z, y) == pytest.approx(0.2)  # always right, 0.8 confident
    y2 = np.array([0, 0, 0, 1])  # right 3 of 4 at 0.8: |0.75 - 0.8|
    assert en.ece(z, y2) == pytest.approx(0.05)
    # two bins: 0.6 confident and right half the time, 0.95 confident and always right
    z3 = np.log(np.array([[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.95, 0.05]]))
    y3 = np.array([0, 1, 0, 0])
    assert en.ece(z3, y3) == pytest.approx(0.5 * 0.1 + 0.5 * 0.05)


def test_calibration_of_a_stack_and_its_ensemble():
    """Two models, three classes: model 0 gets sample 1 wrong (5 of 6 right), their mean probability
    gets all three right. Every number below is worked out by hand from the probabilities."""
    y = np.array([0, 1, 2])
    p = np.array([[[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]],
                  [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])
    out = en.calibration(np.log(p), y, how="softmax")
    # the ensemble's probabilities: [0.6, 0.25, 0.15], [0.3, 0.6, 0.1], [0.15, 0.15, 0.7]
    assert out["ensemble"]["acc"] == 1.0 and out["models"]["acc"] == pytest.approx(5 / 6)
    assert out["ensemble"]["nll"] == pytest.approx(-np.mean(np.log([0.6, 0.6, 0.7])))
    assert out["ensemble"]["ece"] == pytest.approx((0.4 + 0.4 + 0.3) / 3)  # all right at 0.6, 0.6, 0.7
    model_nll = [-np.mean(np.log([0.7, 0.4, 0.8])), -np.mean(np.log([0.5, 0.8, 0.6]))]
    assert out["models"]["nll"] == pytest.approx(np.mean(model_nll))
    # model 0: right at 0.7 and 0.8, wrong at 0.5 (each alone in its bin); model 1: right at 0.5, 0.8, 0.6
    assert out["models"]["ece"] == pytest.approx(np.mean([(0.3 + 0.5 + 0.2) / 3, (0.5 + 0.2 + 0.4) / 3]))
    # the default ensemble averages logits: its probabilities are the normalised geometric means
    geo = np.sqrt(p[0] * p[1])
    geo /= geo.sum(-1, keepdims=True)
    by_logits = en.calibration(np.log(p), y)["ensemble"]
    assert by_logits["acc"] == 1.0 and by_logits["nll"] == pytest.approx(-np.mean(np.log(geo[[0, 1, 2], y])))
    assert by_logits["nll"] != pytest.approx(out["ensemble"]["nll"])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="logits must have shape"):
        en.size_curve(np.zeros((3, 4)), np.zeros(4, int), [1])
    with pytest.raises(ValueError, match="y must have shape"):
        en.size_curve(np.zeros((3, 4, 2)), np.zeros(5, int), [1])
    with pytest.raises(ValueError, match="size must be an integer"):
        en.size_curve(np.zeros((3, 4, 2)), np.zeros(4, int), [4])
    with pytest.raises(ValueError, match="logits must be"):
        en.ece(np.zeros((2, 3, 4)), np.zeros(2, int))
