"""The ensemble gain and its bootstrap interval.

For S models with logits (S, n, k) on n test samples with labels y, the **ensemble gain** is

    gain = acc(argmax of the mean logits) - mean_s acc(model s),

in accuracy units (0.01 = one percentage point). Its 95% interval is a percentile bootstrap that
resamples, jointly, the seeds (S models drawn with replacement, the ensemble recomputed from the
drawn models' logits) and the test samples (n drawn with replacement, the same draw for the
ensemble and its members, so the comparison stays paired). Resampling the seeds accounts for
which inits happened to be drawn, resampling the tests for the finite test set.

**The ensemble**, one definition for the project (:func:`ensemble_output`): the paper's ensemble
is "an average of the outputs" F_s of independently trained networks, and its theory averages the
logits, so ``"logits"`` (mean of F_s) is the default everywhere. ``"softmax"`` (mean of the
probabilities softmax(F_s), common in deep-learning practice) is offered by name where models are
compared on real data (``real_data.reproduce --ensemble softmax``).
"""

from __future__ import annotations

import numpy as np

from multiview.checks import check_choice, check_float, check_int, check_seed

RESAMPLE = ("seeds", "tests")
ENSEMBLES = ("logits", "softmax")


def ensemble_output(logits, how: str = "logits"):
    """The ensemble of S models from their logits (S, ..., k), as logits (..., k): ``"logits"``
    averages them (the paper's definition); ``"softmax"`` gives log of the mean of softmax(z_s), so
    that softmax of the result is the mean probability. The ensemble predicts the argmax; its
    distillation target at temperature T is ``softmax(ensemble_output(z / T, how))`` (for
    ``"logits"`` that is softmax(mean z / T)). Works on numpy arrays and torch tensors alike."""
    check_choice("ensemble", how, ENSEMBLES)
    if how == "logits":
        return logits.mean(0)
    if type(logits).__module__.startswith("torch"):
        import torch

        return torch.logsumexp(torch.log_softmax(logits, -1), 0) - float(np.log(logits.shape[0]))
    from scipy.special import log_softmax, logsumexp

    return logsumexp(log_softmax(logits, -1), 0) - np.log(logits.shape[0])


def ensemble_gain(logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the ensemble (mean of the logits) minus the mean accuracy of its members."""
    logits, y = _check(logits, y)
    member = (logits.argmax(-1) == y).mean()
    ensemble = (ensemble_output(logits).argmax(-1) == y).mean()
    return float(ensemble - member)


def gain_interval(
    logits: np.ndarray,
    y: np.ndarray,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    resample: tuple[str, ...] = RESAMPLE,
    chunk: int = 100,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of :func:`ensemble_gain` at ``level``.

    ``resample`` names what is redrawn: ``"seeds"``, ``"tests"`` or both (the default).
    """
    logits, y = _check(logits, y)
    check_float("level", level, 0.0, 1.0, lo_open=True, hi_open=True)
    check_int("n_boot", n_boot, 1)
    for r in resample:
        if r not in RESAMPLE:
            raise ValueError(f"resample must name 'seeds' and/or 'tests', got {r!r}")
    S, n, k = logits.shape
    rng = np.random.default_rng(check_seed("seed", seed))
    correct = (logits.argmax(-1) == y).astype(np.float64)  # (S, n)
    flat = logits.reshape(S, n * k).astype(np.float64)
    gains = np.empty(n_boot)
    for a in range(0, n_boot, chunk):
        b = min(chunk, n_boot - a)
        if "seeds" in resample:
            counts = np.stack([np.bincount(rng.integers(0, S, S), minlength=S) for _ in range(b)]) / S  # (b, S)
        else:
            counts = np.full((b, S), 1.0 / S)
        ens_correct = ((counts @ flat).reshape(b, n, k).argmax(-1) == y).astype(np.float64)  # (b, n)
        diff = ens_correct - counts @ correct  # per test sample: ensemble minus mean member
        if "tests" in resample:
            diff = np.take_along_axis(diff, rng.integers(0, n, (b, n)), axis=1)
        gains[a : a + b] = diff.mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(gains, [tail, 100 - tail])
    return float(lo), float(hi)


def _check(logits, y):
    logits, y = np.asarray(logits), np.asarray(y)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (S, n, k), got {logits.shape}")
    if 0 in logits.shape:  # numpy gives NaN (an empty mean) or an argmax error naming nothing
        raise ValueError(f"logits must have shape (S, n, k) with S, n, k >= 1 (at least one model, test sample "
                         f"and class), got {logits.shape}")
    if y.shape != logits.shape[1:2]:
        raise ValueError(f"y must have shape ({logits.shape[1]},), got {y.shape}")
    return logits, y
