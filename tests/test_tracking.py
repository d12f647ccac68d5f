"""When views are learned: learned_step and second_views against hand-built trajectories."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory_sims.tracking import learned_step, second_views, views_learned


def trajectories():
    """Two models, two classes, two views, tracked at steps 0, 2, 4, 6."""
    steps = np.array([0, 2, 4, 6])
    lam = np.zeros((4, 2, 2, 2))
    lam[:, 0, 0, 0] = [0.1, 0.5, 1.0, 3.0]  # reaches varrho = 1 exactly at step 4
    lam[:, 0, 0, 1] = [0.1, 0.2, 0.3, 1.5]  # at step 6
    lam[:, 0, 1, 0] = [0.1, 0.1, 0.1, 0.1]  # never
    lam[:, 0, 1, 1] = [2.0, 2.0, 2.0, 2.0]  # already at init
    lam[:, 1, 0, 0] = [0.1, 1.2, 0.9, 0.8]  # crosses, then falls back below
    lam[:, 1, 0, 1] = [0.1, 0.1, 1.1, 1.3]
    lam[:, 1, 1, :] = 0.2  # neither view
    return steps, lam


def test_learned_step_is_the_first_tracked_step_at_or_above_the_threshold():
    steps, lam = trajectories()
    got = learned_step(steps, lam, varrho=1.0)
    assert got.shape == (2, 2, 2)
    np.testing.assert_array_equal(got[0], [[4, 6], [-1, 0]])
    np.testing.assert_array_equal(got[1], [[2, 4], [-1, -1]])
    # the threshold scales with varrho: at varrho 2 only the views reaching 2 count
    np.testing.assert_array_equal(learned_step(steps, lam, varrho=2.0)[0], [[6, -1], [-1, 0]])


def test_second_views_counts_pairs_with_more_than_one_view_against_the_fit_step():
    steps, lam = trajectories()
    got = learned_step(steps, lam, varrho=1.0)
    # model 0 fitted at step 4 (its second view of class 0 came at 6, after), model 1 at step 4
    assert second_views(got, np.array([4, 4])) == {
        "pairs": 4, "several_views": 2, "last_view_by_fit": 1, "median_lag_steps": 2.0}
    # a model that never fitted has no view "by its fit"
    assert second_views(got, np.array([6, -1]))["last_view_by_fit"] == 1
    none = np.full((2, 3, 2), -1)
    none[:, :, 0] = 5
    assert second_views(none, np.array([9, 9])) == {
        "pairs": 6, "several_views": 0, "last_view_by_fit": 0, "median_lag_steps": None}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.5, 3.0))
def test_monotone_trajectories_are_learned_exactly_when_they_end_above_the_threshold(seed, varrho):
    rng = np.random.default_rng(seed)
    lam = np.cumsum(rng.exponential(0.3, size=(6, 3, 4, 2)), axis=0)  # non-decreasing in time
    steps = np.arange(6) * 3
    got = learned_step(steps, lam, varrho)
    np.testing.assert_array_equal(got >= 0, views_learned(lam[-1], varrho))
    when = np.where(got >= 0, got // 3, 0)
    reached = np.take_along_axis(lam, when[None], axis=0)[0]
    assert (reached[got >= 0] >= varrho).all()  # at its step the view is at the threshold ...
    before = np.take_along_axis(lam, np.maximum(when - 1, 0)[None], axis=0)[0]
    assert (before[got > 0] < varrho).all()  # ... and one tracked step earlier it was not


@pytest.mark.parametrize("call, message", [
    (lambda: learned_step(np.arange(3), np.zeros((4, 1, 2, 2)), 1.0), "lam must have shape"),
    (lambda: learned_step(np.arange(3), np.zeros((3, 2, 2)), 1.0), "lam must have shape"),
    (lambda: second_views(np.zeros((2, 3, 2), int), np.zeros(3, int)), "fit_step"),
])
def test_bad_shapes_are_refused_with_the_expected_shape(call, message):
    with pytest.raises(ValueError, match=message):
        call()
