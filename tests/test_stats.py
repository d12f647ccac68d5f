"""The ensemble gain and its bootstrap interval: hand cases, degenerate cases, error size, coverage."""

import numpy as np
import pytest

from theory_sims.stats import ensemble_gain, ensemble_output, gain_interval


def three_models(n: int, rng: np.random.Generator):
    """Logits of 3 models on n two-class samples with label 0, from a known mixture of cases.

    60%: all three right (gain 0). 20%: two right with +1, one wrong with -1 (mean +1/3: the
    ensemble is right while the members average 2/3; gain 1/3). 20%: one right with +3, two wrong
    with -1 (mean +1/3: ensemble right, members 1/3; gain 2/3). True gain: 0.2/3 + 0.4/3 = 0.2.
    """
    kind = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])
    margin = np.ones((3, n))
    for i in np.flatnonzero(kind == 1):
        margin[rng.integers(3), i] = -1
    for i in np.flatnonzero(kind == 2):
        margin[:, i] = -1
        margin[rng.integers(3), i] = 3
    logits = np.stack([margin, np.zeros_like(margin)], axis=-1)  # class 0 wins where margin > 0
    return logits, np.zeros(n, dtype=np.int64)


def test_ensemble_output_definitions_by_hand_and_across_numpy_and_torch():
    import torch

    # two models, one sample, two classes: model 0 is very sure of class 0, model 1 mildly of class 1
    z = np.array([[[10.0, 0.0]], [[0.0, 2.0]]])
    np.testing.assert_allclose(ensemble_output(z), [[5.0, 1.0]])  # the paper's: the mean logit
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    soft = ensemble_output(z, "softmax")
    np.testing.assert_allclose(np.exp(soft), p.mean(0), rtol=1e-12)  # softmax: log of the mean probability
    np.testing.assert_allclose(np.exp(soft).sum(-1), 1.0, rtol=1e-12)
    # where they disagree: one model sure of class 0 (margin 10) against four mildly for class 1
    # (margin 2 each): the mean logit follows the sure one, the mean probability (capped at 1) the four
    z2 = np.array([[[10.0, 0.0]]] + [[[0.0, 2.0]]] * 4)
    assert ensemble_output(z2).argmax(-1)[0] == 0 and ensemble_output(z2, "softmax").argmax(-1)[0] == 1
    rng = np.random.default_rng(0)
    big = rng.normal(size=(4, 7, 5)) * 3
    for how in ("logits", "softmax"):
        np.testing.assert_allclose(ensemble_output(torch.from_numpy(big), how).numpy(), ensemble_output(big, how),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="ensemble must be one of 'logits', 'softmax', got 'vote'"):
        ensemble_output(big, "vote")


def test_gain_is_ensemble_minus_mean_member_by_hand():
    # 2 models, 3 samples, 2 classes; labels 0, 1, 0
    logits = np.array([[[2, 0], [0, 1], [0, 1]],
                       [[0, 1], [0, 1], [3, 0]]], dtype=float)
    y = np.array([0, 1, 0])
    # members: 2/3 and 2/3; ensemble means: [1, .5] right, [0, 1] right, [1.5, .5] right -> 1
    assert ensemble_gain(logits, y) == pytest.approx(1 - 2 / 3)


def test_identical_models_have_zero_gain_and_a_zero_interval():
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 300, 5))
    logits = np.repeat(one, 4, axis=0)
    y = rng.integers(0, 5, 300)
    assert ensemble_gain(logits, y) == 0.0
    assert gain_interval(logits, y, n_boot=200) == (0.0, 0.0)


def test_interval_contains_the_estimate_and_is_reproducible():
    logits, y = three_models(500, np.random.default_rng(1))
    g = ensemble_gain(logits, y)
    lo, hi = gain_interval(logits, y, n_boot=400, seed=3)
    assert lo < g < hi
    assert gain_interval(logits, y, n_boot=400, seed=3) == (lo, hi)


def test_test_resampling_width_matches_the_paired_standard_error():
    logits, y = three_models(2000, np.random.default_rng(2))
    diff = (logits.mean(0).argmax(-1) == y) - (logits.argmax(-1) == y).mean(0)
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    lo, hi = gain_interval(logits, y, n_boot=2000, resample=("tests",))
    assert (hi - lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.12)


def test_resampling_seeds_as_well_widens_the_interval_when_seeds_differ():
    logits, y = three_models(2000, np.random.default_rng(4))
    lo_t, hi_t = gain_interval(logits, y, n_boot=1000, resample=("tests",))
    lo_b, hi_b = gain_interval(logits, y, n_boot=1000)
    assert hi_b - lo_b > 1.2 * (hi_t - lo_t)


def test_coverage_of_the_test_resampling_interval():
    """Over 150 independent test sets the 95% interval holds the true gain (0.2) about 95% of
    the time; a band of [0.88, 0.995] allows for 150 Bernoulli trials."""
    rng = np.random.default_rng(5)
    hits = 0
    for rep in range(150):
        logits, y = three_models(300, rng)
        lo, hi = gain_interval(logits, y, n_boot=300, seed=rep, resample=("tests",))
        hits += lo <= 0.2 <= hi
    assert 0.88 <= hits / 150 <= 0.995


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(level=1.0), "level must be a number in (0.0, 1.0)"),
     (dict(n_boot=0), "n_boot must be an integer >= 1"),
     (dict(resample=("models",)), "resample must name 'seeds' and/or 'tests'")],
)
def test_bad_arguments_name_the_parameter(kwargs, message):
    logits, y = three_models(20, np.random.default_rng(0))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gain_interval(logits, y, **kwargs)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"logits must have shape \(S, n, k\)"):
        ensemble_gain(np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        ensemble_gain(np.zeros((2, 4, 3)), np.zeros(5))
