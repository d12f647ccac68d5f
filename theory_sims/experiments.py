"""Building blocks of the experiments: test sets, scoring models and their ensemble, fitting a stack.

Distillation and training the average are stages of :class:`theory_sims.view_learning.Run`, built
from these blocks. Conventions, stated once:

* **ensemble**: the average of the models' outputs F_s(X) (the logits, before any softmax), as in
  the paper; its prediction is the argmax of that average (:func:`theory_sims.stats.ensemble_output`,
  the project's one definition).
* **knowledge distillation (KD)**: fresh students (new seeds) trained on the training inputs with
  the ensemble's logits on those inputs as the teacher, using the objective in the distillation
  :class:`TrainConfig` (see :mod:`theory_sims.losses` for the exact formula).
* **self-distillation**: student s trained, from a fresh seed, against the logits of single model s.
* **training the average**: S models trained jointly on the loss of their mean output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory_sims import mechanism
from theory_sims.config import LearnerConfig, TrainConfig
from theory_sims.stats import ensemble_output
from theory_sims.tracking import Probe
from theory_sims.train import TrainResult, patch_views, train


@dataclass
class TestSets:
    """The test sets of a run, all drawn from one world: multi-view samples (every view present),
    single-view samples (one view present), and the mixture weight ``mu`` (fraction of single-view
    data in the training distribution) used for ``test_acc``.

    Two diagnostic sets go with them: ``single_clean``, the single-view samples with their
    Gaussian noise removed (what a model does on the features alone), and ``noise_only``, inputs
    that are Gaussian noise alone (what memorised noise does on fresh inputs). Either may be None.
    """

    multi: object
    single: object
    mu: float
    single_clean: object = None
    noise_only: np.ndarray | None = None


def accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Accuracy of every model in ``logits`` (S, n, k): shape (S,)."""
    return (logits.argmax(axis=-1) == y).mean(axis=-1)


def scores(logits: dict, tests: TestSets) -> dict:
    """test / multi-view / single-view accuracy of every model, arrays of length S, from the
    logits on each test set (``{"multi": (S, n, k), "single": ..., "single_clean": ...}``).

    ``test_acc`` is the accuracy on the training distribution's mixture,
    (1 - mu) * multi-view accuracy + mu * single-view accuracy; ``single_view_clean_acc`` (where
    the run has that set) the single-view accuracy with the inputs' Gaussian noise removed.
    """
    multi = accuracy(logits["multi"], tests.multi.y)
    single = accuracy(logits["single"], tests.single.y)
    out = {
        "test_acc": (1 - tests.mu) * multi + tests.mu * single,
        "multi_view_acc": multi,
        "single_view_acc": single,
    }
    if "single_clean" in logits:
        out["single_view_clean_acc"] = accuracy(logits["single_clean"], tests.single_clean.y)
    return out


def mean_scores(per_model: dict) -> dict:
    return {key: float(np.mean(v)) for key, v in per_model.items()}


def score_lists(logits: dict, tests: TestSets) -> dict:
    """:func:`scores` of every model, as lists (the form of a stack's row in ``results.json``)."""
    return {key: v.tolist() for key, v in scores(logits, tests).items()}


def ensemble_logits(logits: dict) -> dict:
    """The ensemble's logits on each test set, as a stack of one: {name: (1, n, k)}."""
    return {name: ensemble_output(z)[None] for name, z in logits.items()}


class Evaluator:
    """The one owner of logits and scores: a trained stack's logits on the training inputs and on
    the test sets (computed once per stack and kept), and from them the scores of its models and
    of their ensemble."""

    def __init__(self, train_set, tests: TestSets, backend: str = "numba", device: str = "cpu"):
        self.train_set, self.tests = train_set, tests
        self.backend, self.device = backend, device
        self._logits: dict = {}  # id(result) -> (result, its logits): the result is held, so its id is not reused

    def logits(self, result: TrainResult) -> dict:
        """Logits of a trained stack on each test set: {name: (S, n, k)}, computed once per stack."""
        if id(result) not in self._logits:
            self._logits[id(result)] = (result, self.model_logits(result.model))
        return self._logits[id(result)][1]

    def model_logits(self, m) -> dict:
        """Logits of a :class:`TwoLayerModel` stack on each test set: {name: (S, n, k)}."""
        sets = {"multi": self.tests.multi, "single": self.tests.single, "single_clean": self.tests.single_clean}
        return {name: self.on(m, data.X) for name, data in sets.items() if data is not None}

    def on(self, m, X: np.ndarray) -> np.ndarray:
        """Logits (S, n, k) of the stack ``m`` on inputs ``X``."""
        return m.logits(X, self.backend, self.device)

    def train_logits(self, result: TrainResult) -> np.ndarray:
        return self.on(result.model, self.train_set.X)

    def views(self, logits: dict, row: dict) -> dict:
        """Add to ``row`` the views each model of ``logits`` uses (``views_used``, (S, k, V)), read
        off its accuracy on the single-view samples of each view (``view_acc``;
        :mod:`theory_sims.mechanism`)."""
        single = self.tests.single
        acc = mechanism.per_view_accuracy(logits["single"], single.y, single.views_present, logits["single"].shape[-1])
        row["view_acc"] = acc
        row["views_used"] = mechanism.views_used(acc)
        return row

    def models(self, result: TrainResult, views: bool = False) -> dict:
        """Scores of every model of the stack, as lists; with ``views`` the views each uses."""
        return self.model_row(self.logits(result), views)

    def model_row(self, logits: dict, views: bool = False) -> dict:
        row = score_lists(logits, self.tests)
        return self.views(logits, row) if views else row

    def ensemble(self, result: TrainResult, views: bool = False) -> dict:
        """Scores of the average of the stack's outputs; with ``views`` the views it uses."""
        logits = ensemble_logits(self.logits(result))
        row = mean_scores(scores(logits, self.tests))
        return self.views(logits, row) if views else row


def fit(train_set, seeds, learner: LearnerConfig, cfg: TrainConfig, teacher=None, progress=False) -> TrainResult:
    """Train ``seeds`` on ``train_set`` tracking its views (no noise memorisation: cheaper)."""
    probe = Probe(train_set.features, train_set.config.views)
    views = patch_views(train_set) if cfg.augment == "drop_view" else None
    return train(train_set.X, train_set.y, seeds, learner, cfg, teacher=teacher, probe=probe, progress=progress,
                 patch_views=views)
