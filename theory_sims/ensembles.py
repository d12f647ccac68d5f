"""Ensembles beyond the paper's tables: how accuracy grows with the number of members, what the
multi-view theory predicts for that growth, what independent errors would give, how often two
seeds disagree, and how well calibrated a model is.

Every function takes plain arrays (logits (S, n, k), labels, booleans) and returns numbers, so each
is checked on hand-made cases (``tests/test_ensembles.py``); ``theory_sims.ensemble_size`` runs them
on the theory's data and ``real_data.reproduce`` on CIFAR.

* **Ensemble size** (:func:`size_curve`): the accuracy of the average of n members' logits, averaged
  over random n-subsets of the S trained seeds, with a percentile bootstrap over the test samples.
* **Coverage** (:func:`coverage_curve`, :func:`fair_lottery`): under the multi-view theory an
  ensemble classifies a single-view sample right when one of its members learned the view it shows,
  so its single-view accuracy stops growing once the members cover every view of every class. With
  V views and a fair lottery (each member learns one view of a class, uniformly) a class is covered
  by n members with probability sum_i (-1)^i C(V, i) (1 - i/V)^n, 1 - 2^(1-n) for V = 2.
* **The variance-reduction null** (:func:`independent_members`): the same members with their errors
  made independent by construction. Each member's outputs are shuffled among the test samples of
  one class, so it keeps its accuracy on every class while which samples it gets wrong is drawn
  afresh for each member. Independent errors keep averaging out as members are added; errors set by
  the views a member missed do not.
* **Disagreement** (:func:`pairwise_disagreement`, :func:`disagreement_by_views`): the fraction of
  test samples on which two seeds predict different classes, and on single-view samples split by
  whether both, one or neither of the two uses the view the sample shows.
* **Calibration** (:func:`nll`, :func:`ece`): the mean negative log-likelihood of the true class and
  the expected calibration error over equal-width confidence bins (15, the uncertainty-baselines
  convention).
"""

from __future__ import annotations

from math import comb

import numpy as np
from scipy.special import logsumexp, softmax

from multiview.checks import check_int
from theory_sims.stats import ensemble_output

ECE_BINS = 15


def _logits(logits, y=None):
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"logits must have shape (S, n, k), got {z.shape}")
    if y is not None and np.shape(y) != z.shape[1:2]:
        raise ValueError(f"y must have shape ({z.shape[1]},), got {np.shape(y)}")
    return z


def subsets(S: int, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(c, size) member indices: every subset when there are at most ``count`` of them, else
    ``count`` subsets drawn uniformly (each without repetition inside it)."""
    check_int("size", size, 1, S)
    if comb(S, size) <= count:
        from itertools import combinations

        return np.array(list(combinations(range(S), size)), dtype=np.int64)
    return np.stack([rng.choice(S, size, replace=False) for _ in range(count)])


def size_curve(logits, y, sizes, count: int = 200, n_boot: int = 1000, level: float = 0.95,
               seed: int = 0) -> list[dict]:
    """For each n in ``sizes``: the accuracy of the ensemble of n members (the mean of their logits),
    averaged over up to ``count`` random n-subsets of the S members, and a percentile bootstrap
    interval of that average over the test samples (the subsets held fixed). Returns one dict per
    size: ``size``, ``subsets``, ``acc``, ``lo``, ``hi``."""
    z = _logits(logits, y)
    y = np.asarray(y)
    S, n, k = z.shape
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        members = subsets(S, int(size), count, rng)
        weights = np.zeros((len(members), S))
        np.put_along_axis(weights, members, 1.0 / size, axis=1)
        pred = (weights @ z.reshape(S, n * k)).reshape(len(members), n, k).argmax(-1)  # (c, n)
        per_sample = (pred == y).mean(axis=0)  # each test sample: the fraction of subsets right
        boot = per_sample[rng.integers(0, n, (n_boot, n))].mean(axis=1)
        tail = (1 - level) / 2 * 100
        lo, hi = np.percentile(boot, [tail, 100 - tail])
        rows.append({"size": int(size), "subsets": len(members), "acc": float(per_sample.mean()),
                     "lo": float(lo), "hi": float(hi)})
    return rows


def fair_lottery(size: int, views: int = 2) -> float:
    """Probability that ``size`` members, each learning one of a class's ``views`` views uniformly at
    random, together cover all of them: sum_i (-1)^i C(V, i) (1 - i/V)^n (1 - 2^(1-n) for V = 2)."""
    check_int("size", size, 1)
    check_int("views", views, 1)
    total = sum((-1) ** i * comb(views, i) * (1 - i / views) ** size for i in range(views + 1))
    return float(min(1.0, max(0.0, total)))  # the alternating sum can round a hair below 0


def coverage_curve(used, y, shown, sizes, count: int = 200, seed: int = 0) -> list[dict]:
    """What the members' views predict for the ensemble, for each n in ``sizes`` (averaged over up
    to ``count`` random n-subsets, drawn as in :func:`size_curve` with the same ``seed``):

    * ``single_view_acc``: the fraction of single-view test samples (labels ``y``, the view each
      shows ``shown``) whose view (class, view) at least one member uses; the theory's prediction of
      the ensemble's single-view accuracy;
    * ``classes_covered``: the fraction of classes every view of which some member uses.

    ``used`` (S, k, V) booleans: member s uses view l of class j (:func:`mechanism.views_used`)."""
    used = np.asarray(used, dtype=bool)
    if used.ndim != 3:
        raise ValueError(f"used must have shape (S, k, V), got {used.shape}")
    y, shown = np.asarray(y), np.asarray(shown)
    S = used.shape[0]
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        members = subsets(S, int(size), count, rng)
        union = used[members].any(axis=1)  # (c, k, V)
        rows.append({"size": int(size), "single_view_acc": float(union[:, y, shown].mean()),
                     "classes_covered": float(union.all(axis=-1).mean())})
    return rows


def independent_members(logits, y, seed: int = 0) -> np.ndarray:
    """The members with independent errors, by construction: member s's outputs (n, k) shuffled
    among the test samples of each class, with its own permutation. Each keeps its accuracy on
    every class; which samples of a class it gets wrong is drawn independently of the others."""
    z = _logits(logits, y)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out = np.empty_like(z)
    for s in range(z.shape[0]):
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            out[s, idx] = z[s, rng.permutation(idx)]
    return out


def pairwise_disagreement(logits) -> np.ndarray:
    """(S, S) fraction of the samples on which the argmax of seed a and seed b differ (0 on the diagonal)."""
    pred = _logits(logits).argmax(-1)  # (S, n)
    S, n = pred.shape
    onehot = np.zeros((S, n, int(pred.max()) + 1))
    np.put_along_axis(onehot, pred[..., None], 1.0, axis=-1)
    agree = np.einsum("anc,bnc->ab", onehot, onehot) / n
    return 1.0 - agree


def mean_off_diagonal(matrix) -> float:
    """The mean of a square matrix over its pairs a != b."""
    m = np.asarray(matrix, dtype=np.float64)
    S = m.shape[0]
    return float((m.sum() - np.trace(m)) / (S * (S - 1))) if S > 1 else float("nan")


def disagreement_by_views(logits, y, shown, used) -> dict:
    """Disagreement of every pair of seeds on single-view samples, split by how many of the two use
    the view the sample shows: ``"both"``, ``"one"`` or ``"neither"``. The paper's reading: seeds
    agree where both learned the view and disagree where one of them missed it. Returns, per
    split, the pooled disagreement rate and the number of (pair, sample) cases."""
    pred = _logits(logits, y).argmax(-1)  # (S, n)
    used = np.asarray(used, dtype=bool)
    y, shown = np.asarray(y), np.asarray(shown)
    knows = used[:, y, shown]  # (S, n): seed s uses the view sample i shows
    S = pred.shape[0]
    a, b = np.triu_indices(S, 1)
    differ = pred[a] != pred[b]  # (pairs, n)
    count = knows[a].astype(int) + knows[b]
    out = {}
    for name, c in (("both", 2), ("one", 1), ("neither", 0)):
        pick = count == c
        out[name] = {"disagreement": float(differ[pick].mean()) if pick.any() else None, "cases": int(pick.sum())}
    return out


def nll(logits, y) -> float:
    """Mean negative log-likelihood of the true class under softmax(logits) (n, k)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"logits must be (n, k) with n = len(y), got {z.shape} and {y.shape}")
    return float(np.mean(logsumexp(z, axis=-1) - z[np.arange(len(y)), y]))


def ece(logits, y, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over ``bins`` equal-width bins of the confidence (the largest
    softmax probability), the sample-weighted mean of |accuracy - mean confidence| in each bin."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"logits must be (n, k) with n = len(y), got {z.shape} and {y.shape}")
    check_int("bins", bins, 1)
    p = softmax(z, axis=-1)
    conf, correct = p.max(axis=-1), (p.argmax(axis=-1) == y)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        pick = which == b
        if pick.any():
            total += pick.sum() * abs(correct[pick].mean() - conf[pick].mean())
    return float(total / len(y))


def calibration(logits, y, how: str = "logits") -> dict:
    """Accuracy, NLL and ECE of each model of a stack (S, n, k) (means) and of their ensemble."""
    z = _logits(logits, y)
    y = np.asarray(y)
    ens = ensemble_output(z, how)
    return {
        "models": {"acc": float(np.mean(z.argmax(-1) == y)), "nll": float(np.mean([nll(m, y) for m in z])),
                   "ece": float(np.mean([ece(m, y) for m in z]))},
        "ensemble": {"acc": float(np.mean(ens.argmax(-1) == y)), "nll": nll(ens, y), "ece": ece(ens, y)},
    }
