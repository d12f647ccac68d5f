"""The mechanism behind the paper's theorems, measured: which views a model uses, who decided it,
what a student inherits, and how the samples a model cannot explain are fitted.

Every function here takes plain arrays (logits, booleans, Lambdas) and returns numbers, so each
can be checked on hand-made models whose answer is known (``tests/test_mechanism.py``).

* **Per-view accuracy** (:func:`per_view_accuracy`): on single-view test samples, split by the
  class and by which of its views is present, the fraction a model gets right. It is the
  behavioural answer to "which views did this model learn": a view is **used** when the model gets
  most of the samples that show only that view right (:data:`USED_THRESHOLD`). Lambda, the
  weights' alignment with a view (:mod:`theory_sims.tracking`), is kept for when a view grew;
  :func:`lambda_calibration` says how the two relate.
* **The lottery** (:func:`init_lottery`): the theory says the view a class learns is the one its
  init favours (larger Lambda at step 0). For every (model, class) that uses exactly one view: is
  it the init's favourite? Chance is 1/V; the theory says about 1.
* **Inheritance** (:func:`kd_inheritance`, :func:`self_kd_inheritance`): which of its teachers'
  views a KD student uses, by how many teachers used each; and for a self-KD student, views in its
  teacher's set, in its own init's set (the control: the student's seed trained on labels alone) and
  outside both: the paper's "union".
* **Memorisation** (:func:`memorisation`): a single-view training sample whose view the model does
  not use can only be fitted through its own noise; removing that noise then undoes the fit.
* **Noise response** (:func:`noise_response`): the largest logit a model gives to inputs that are
  noise alone. Noise a model stored to fit its training samples fires on fresh noise when d is
  small against the number of noise patches it stored.
"""

from __future__ import annotations

import numpy as np

# A view is used when a model classifies at least this fraction of the single-view samples that
# show only that view correctly: most of them.
USED_THRESHOLD = 0.5
# Lambda bins (in units of varrho) for :func:`lambda_calibration`.
LAMBDA_EDGES = (-np.inf, 1.0, 2.0, 3.0, 4.0, np.inf)


def per_view_accuracy(logits: np.ndarray, y: np.ndarray, views_present: np.ndarray, k: int) -> np.ndarray:
    """(S, k, V) accuracy of each model on the single-view samples of class j that show view l
    (NaN where the set holds no such sample).

    ``logits`` (S, n, k); ``y`` (n,); ``views_present`` (n, V) booleans. Samples with more than one
    view present are ignored."""
    logits, y, present = np.asarray(logits), np.asarray(y), np.asarray(views_present, dtype=bool)
    if logits.ndim != 3 or logits.shape[1] != y.shape[0] or present.shape[0] != y.shape[0]:
        raise ValueError(f"logits must be (S, n, k) with n = len(y) = len(views_present), got {logits.shape}, "
                         f"{y.shape}, {present.shape}")
    S, V = logits.shape[0], present.shape[1]
    correct = (logits.argmax(-1) == y).astype(np.float64)  # (S, n)
    single = present.sum(axis=1) == 1
    out = np.full((S, k, V), np.nan)
    for j in range(k):
        for l in range(V):
            pick = single & (y == j) & present[:, l]
            if pick.any():
                out[:, j, l] = correct[:, pick].mean(axis=1)
    return out


def views_used(view_acc: np.ndarray, threshold: float = USED_THRESHOLD) -> np.ndarray:
    """Booleans of the shape of ``view_acc``: the model gets at least ``threshold`` of that view's
    single-view samples right (False where there were none)."""
    acc = np.asarray(view_acc, dtype=np.float64)
    return np.nan_to_num(acc, nan=-1.0) >= threshold


def lambda_calibration(lam: np.ndarray, view_acc: np.ndarray, varrho: float, edges=LAMBDA_EDGES) -> list[dict]:
    """How final Lambda relates to per-view accuracy: for each bin of Lambda / varrho, the number
    of (model, class, view) triples and their mean per-view accuracy."""
    ratio = np.asarray(lam, dtype=np.float64).ravel() / varrho
    acc = np.asarray(view_acc, dtype=np.float64).ravel()
    if ratio.shape != acc.shape:
        raise ValueError(f"lam and view_acc must have the same shape, got {np.shape(lam)} and {np.shape(view_acc)}")
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        pick = (ratio >= lo) & (ratio < hi) & ~np.isnan(acc)
        rows.append({"lambda_lo": float(lo), "lambda_hi": float(hi), "triples": int(pick.sum()),
                     "mean_view_acc": float(acc[pick].mean()) if pick.any() else None})
    return rows


def init_lottery(lam0: np.ndarray, used: np.ndarray) -> dict:
    """Is the lottery decided by the init? ``lam0`` (S, k, V) Lambda at step 0, ``used`` (S, k, V).

    Returns the number of (model, class) pairs that use exactly one view, the fraction of them
    whose view is the one with the largest initial Lambda (``init_winner``; chance 1/V), the
    numbers that use several or none, and the median gap between the two largest initial Lambdas
    for the pairs that use one view and for those that use several (a class that learns two views
    should be one whose init had no clear favourite)."""
    lam0, used = np.asarray(lam0, dtype=np.float64), np.asarray(used, dtype=bool)
    if lam0.shape != used.shape or lam0.ndim != 3:
        raise ValueError(f"lam0 and used must both be (S, k, V), got {lam0.shape} and {used.shape}")
    count = used.sum(axis=-1)
    one = count == 1
    favourite = lam0.argmax(axis=-1)
    learned = used.argmax(axis=-1)
    top2 = np.sort(lam0, axis=-1)[..., -2:] if lam0.shape[-1] > 1 else np.concatenate([lam0, lam0], -1)
    gap = top2[..., 1] - top2[..., 0]
    several = count > 1
    return {
        "pairs": int(count.size),
        "one_view": int(one.sum()),
        "several_views": int(several.sum()),
        "no_view": int((count == 0).sum()),
        "init_winner": float((favourite == learned)[one].mean()) if one.any() else None,
        "chance": 1.0 / lam0.shape[-1],
        "median_gap_one_view": float(np.median(gap[one])) if one.any() else None,
        "median_gap_several_views": float(np.median(gap[several])) if several.any() else None,
    }


def kd_inheritance(teacher_used: np.ndarray, student_used: np.ndarray) -> dict:
    """Which of the ensemble's views the KD students use, by how many teachers used each.

    ``teacher_used`` (S, k, V) and ``student_used`` (K, k, V). Returns ``by_teachers``: one row per
    count c = 0..S of teachers that used a (class, view), with the (student, class, view) triples
    at that count and the fraction the students use; and the fractions for the views that at most
    a third of the teachers used (``few``) and for the rest of the ensemble's views (``many``)."""
    teacher_used, student_used = np.asarray(teacher_used, dtype=bool), np.asarray(student_used, dtype=bool)
    if teacher_used.shape[1:] != student_used.shape[1:]:
        raise ValueError(f"teacher_used and student_used must agree on (k, V), got {teacher_used.shape} "
                         f"and {student_used.shape}")
    S, K = teacher_used.shape[0], student_used.shape[0]
    c = teacher_used.sum(axis=0)  # (k, V)
    rows = []
    for n in range(S + 1):
        at = c == n
        if at.any():
            got = student_used[:, at]
            rows.append({"teachers": n, "triples": int(got.size), "fraction": float(got.mean())})

    def frac(mask):
        got = student_used[:, mask]
        return {"triples": int(got.size), "fraction": float(got.mean()) if got.size else None}

    few = (c >= 1) & (c <= S / 3)
    return {"teachers": S, "students": K, "by_teachers": rows, "ensemble": frac(c >= 1), "few": frac(few),
            "many": frac(c > S / 3)}


SELF_KD_GROUPS = {
    "both": "both the teacher and the own init",
    "teacher": "only the teacher",
    "own_init": "only the own init (the control)",
    "neither": "neither",
}


def self_kd_inheritance(teacher_used: np.ndarray, control_used: np.ndarray, student_used: np.ndarray) -> dict:
    """The paper's "union" for self-distillation: student s (trained against teacher s from a fresh
    init) should use the views its teacher uses and those its own init favours, read off the
    control (the same fresh init trained on the labels alone).

    All three (K, k, V). Returns, for each group of :data:`SELF_KD_GROUPS`, the number of
    (student, class, view) triples and the fraction the students use, and for the union
    (teacher or own init) and the rest."""
    t, c, s = (np.asarray(a, dtype=bool) for a in (teacher_used, control_used, student_used))
    if not t.shape == c.shape == s.shape:
        raise ValueError(f"teacher_used, control_used and student_used must have one shape, got {t.shape}, "
                         f"{c.shape}, {s.shape}")
    masks = {"both": t & c, "teacher": t & ~c, "own_init": ~t & c, "neither": ~t & ~c,
             "union": t | c}

    def frac(mask):
        return {"triples": int(mask.sum()), "fraction": float(s[mask].mean()) if mask.any() else None}

    return {name: frac(mask) for name, mask in masks.items()}


def memorisation(correct: np.ndarray, clean_correct: np.ndarray, stored: np.ndarray,
                 sample_used: np.ndarray, single: np.ndarray) -> dict:
    """How the single-view training samples are fitted, split by whether the model uses the
    sample's view.

    All (S, n) but ``single`` (n,): ``correct`` the model classifies the training sample right,
    ``clean_correct`` it still does with the sample's Gaussian noise removed, ``stored`` how
    strongly the sample's own noise is stored in its class's neurons (max_{r,p} <w_{y,r}, xi_p>),
    ``sample_used`` the model uses the view the sample shows. Returns, for the (model, sample)
    pairs whose view is ``unused`` and ``used``: their count, the fraction fitted, the fraction
    still right without their noise, and the median stored noise."""
    correct, clean, stored, used = (np.asarray(a) for a in (correct, clean_correct, stored, sample_used))
    single = np.broadcast_to(np.asarray(single, dtype=bool), correct.shape)
    out = {}
    for name, mask in (("unused", single & ~used.astype(bool)), ("used", single & used.astype(bool))):
        n = int(mask.sum())
        out[name] = {"pairs": n,
                     "fitted": float(correct[mask].mean()) if n else None,
                     "without_noise": float(clean[mask].mean()) if n else None,
                     "median_stored_noise": float(np.median(stored[mask])) if n else None}
    return out


def noise_response(logits: np.ndarray) -> dict:
    """The largest logit each model gives to noise-only inputs (S, n, k): per model the mean over
    inputs of max_j F_j, and the largest over all inputs."""
    top = np.asarray(logits).max(axis=-1)  # (S, n)
    return {"mean_max_logit": top.mean(axis=1).tolist(), "max_logit": top.max(axis=1).tolist()}


# Loser Lambda / varrho at the step the winner crossed varrho, binned for :func:`race`.
RACE_EDGES = (-np.inf, 0.25, 0.5, 0.75, np.inf)


def race(steps: np.ndarray, lam: np.ndarray, varrho: float, fit_step: np.ndarray, used: np.ndarray) -> dict:
    """The race between a class's views, read off the tracked Lambdas.

    ``steps`` (T,) and ``lam`` (T, S, k, V) as in a training history, ``fit_step`` (S,) the first
    step at 100% training accuracy (-1 never), ``used`` (S, k, V) the views each model uses. For
    every (model, class) pair in which some view crossed varrho, the **winner** is the view that
    crossed first (ties: the larger Lambda then) at step ``t_win``; the **loser** is the largest
    other view, and ``loser_at_win`` its Lambda / varrho at ``t_win``. Below varrho the sReLU is a
    power q, so a loser far below varrho at ``t_win`` is one whose growth the winner's lead has
    outrun (the race ran in the power phase); one near varrho crossed with it. Returns the pairs,
    the median ``t_win`` and ``loser_at_win``, whether each loser crossed later, before or after
    its model fitted the training set, or never, and, binned by ``loser_at_win``
    (:data:`RACE_EDGES`), how many pairs fall in each bin and the fraction of them whose model uses
    both views (the behavioural outcome of the race)."""
    steps, lam = np.asarray(steps), np.asarray(lam, dtype=np.float64)
    fit, used = np.asarray(fit_step), np.asarray(used, dtype=bool)
    if lam.ndim != 4 or lam.shape[0] != steps.shape[0] or used.shape != lam.shape[1:] or fit.shape != lam.shape[1:2]:
        raise ValueError(f"lam must be (T, S, k, V) with T = len(steps), used (S, k, V) and fit_step (S,), got "
                         f"{lam.shape}, {steps.shape}, {used.shape} and {fit.shape}")
    if lam.shape[-1] < 2:
        raise ValueError(f"a race needs at least two views per class, got V = {lam.shape[-1]}")
    crossed = lam >= varrho  # (T, S, k, V)
    ever = crossed.any(axis=0)
    first = np.where(ever, crossed.argmax(axis=0), lam.shape[0])  # tracked index of each view's crossing
    t_idx = first.min(axis=-1)  # (S, k): the winner's crossing
    raced = ever.any(axis=-1)
    S, k, V = used.shape
    s_i, j_i = np.nonzero(raced)
    at_win = lam[t_idx[s_i, j_i], s_i, j_i]  # (pairs, V): every view's Lambda when the winner crossed
    winner = np.where(first[s_i, j_i] == t_idx[s_i, j_i, None], at_win, -np.inf).argmax(axis=-1)
    others = at_win.copy()
    others[np.arange(len(s_i)), winner] = -np.inf
    loser = others.argmax(axis=-1)
    loser_at_win = others.max(axis=-1) / varrho
    loser_idx = first[s_i, j_i, loser]
    loser_step = np.where(loser_idx < lam.shape[0], steps[np.minimum(loser_idx, lam.shape[0] - 1)], -1)
    t_win = steps[t_idx[s_i, j_i]]
    fitted = fit[s_i]
    later = (loser_step >= 0) & (loser_idx > t_idx[s_i, j_i])
    both = used[s_i, j_i].sum(axis=-1) >= 2
    bins = []
    for lo, hi in zip(RACE_EDGES, RACE_EDGES[1:]):
        pick = (loser_at_win >= lo) & (loser_at_win < hi)
        bins.append({"lo": lo, "hi": hi, "pairs": int(pick.sum()),
                     "both_used": float(both[pick].mean()) if pick.any() else None})
    n = len(s_i)
    return {
        "pairs": int(S * k),
        "raced": int(n),
        "median_t_win": float(np.median(t_win)) if n else None,
        "median_loser_at_win": float(np.median(loser_at_win)) if n else None,
        "loser_below_half": int((loser_at_win < 0.5).sum()),
        "loser_crossed_with_winner": int(((loser_step >= 0) & ~later).sum()),
        "loser_later_before_fit": int((later & (fitted >= 0) & (loser_step <= fitted)).sum()),
        "loser_later_after_fit": int((later & ~((fitted >= 0) & (loser_step <= fitted))).sum()),
        "loser_never": int((loser_step < 0).sum()),
        "by_loser_at_win": bins,
        "loser_at_win": loser_at_win.tolist(),
    }


def single_view_samples(y: np.ndarray, shown: np.ndarray, single: np.ndarray, correct: np.ndarray,
                        clean_correct: np.ndarray, sample_used: np.ndarray, k: int, V: int) -> dict:
    """The single-view training samples of each (class, view), and how the models fit each one.

    ``y``, ``shown`` (the view a single-view sample shows) and ``single`` (n,); ``correct``,
    ``clean_correct`` and ``sample_used`` (S, n) as in :func:`memorisation`. A (model, sample) pair
    is fitted **through its view** when the model uses the view the sample shows and gets it right,
    **through its noise** when it does not use the view, gets it right, and gets it wrong without
    its Gaussian noise. Returns ``count`` (k, V), and ``through_view`` / ``through_noise`` (k, V)
    fractions over the models and the (class, view)'s samples (NaN where there are none), and the
    same over all single-view samples."""
    y, shown, single = np.asarray(y), np.asarray(shown), np.asarray(single, dtype=bool)
    correct, clean, used = (np.asarray(a, dtype=bool) for a in (correct, clean_correct, sample_used))
    view = correct & used
    noise = correct & ~used & ~clean
    count = np.zeros((k, V), dtype=np.int64)
    through_view = np.full((k, V), np.nan)
    through_noise = np.full((k, V), np.nan)
    for j in range(k):
        for l in range(V):
            pick = single & (y == j) & (shown == l)
            count[j, l] = int(pick.sum())
            if pick.any():
                through_view[j, l] = float(view[:, pick].mean())
                through_noise[j, l] = float(noise[:, pick].mean())
    return {"count": count.tolist(), "through_view": through_view.tolist(), "through_noise": through_noise.tolist(),
            "samples": int(single.sum()),
            "all_through_view": float(view[:, single].mean()) if single.any() else None,
            "all_through_noise": float(noise[:, single].mean()) if single.any() else None}
