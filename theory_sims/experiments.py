"""Building blocks of the experiments: evaluation, ensembles, distillation, training the average.

Conventions, stated once:

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

from theory_sims.config import LearnerConfig, TrainConfig
from theory_sims.stats import ensemble_output
from theory_sims.tracking import Probe
from theory_sims.train import TrainResult, train


@dataclass
class TestSets:
    """A multi-view and a single-view test set drawn from the same world, and the mixture weight
    ``mu`` (fraction of single-view data in the training distribution) used for ``test_acc``."""

    multi: object
    single: object
    mu: float


def accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Accuracy of every model in ``logits`` (S, n, k): shape (S,)."""
    return (logits.argmax(axis=-1) == y).mean(axis=-1)


def scores(logits_multi: np.ndarray, logits_single: np.ndarray, tests: TestSets) -> dict:
    """test / multi-view / single-view accuracy of every model, lists of length S.

    ``test_acc`` is the accuracy on the training distribution's mixture,
    (1 - mu) * multi-view accuracy + mu * single-view accuracy.
    """
    multi = accuracy(logits_multi, tests.multi.y)
    single = accuracy(logits_single, tests.single.y)
    return {
        "test_acc": (1 - tests.mu) * multi + tests.mu * single,
        "multi_view_acc": multi,
        "single_view_acc": single,
    }


def mean_scores(per_model: dict) -> dict:
    return {key: float(np.mean(v)) for key, v in per_model.items()}


class Evaluator:
    """Logits of trained stacks on the training inputs and the two test sets."""

    def __init__(self, train_set, tests: TestSets, backend: str = "numba", device: str = "cpu"):
        self.train_set, self.tests = train_set, tests
        self.backend, self.device = backend, device

    def logits(self, result: TrainResult) -> tuple[np.ndarray, np.ndarray]:
        return self.model_logits(result.model)

    def model_logits(self, m) -> tuple[np.ndarray, np.ndarray]:
        """Logits of a :class:`TwoLayerModel` stack on the multi-view and the single-view test set."""
        return (m.logits(self.tests.multi.X, self.backend, self.device),
                m.logits(self.tests.single.X, self.backend, self.device))

    def train_logits(self, result: TrainResult) -> np.ndarray:
        return result.model.logits(self.train_set.X, self.backend, self.device)

    def models(self, result: TrainResult) -> dict:
        """Scores of every model of the stack, as lists."""
        return {k: v.tolist() for k, v in scores(*self.logits(result), self.tests).items()}

    def ensemble(self, result: TrainResult) -> dict:
        """Scores of the average of the stack's outputs."""
        lm, ls = self.logits(result)
        return mean_scores(scores(ensemble_output(lm)[None], ensemble_output(ls)[None], self.tests))


def fit(train_set, seeds, learner: LearnerConfig, cfg: TrainConfig, teacher=None, progress=False) -> TrainResult:
    """Train ``seeds`` on ``train_set`` tracking its views (no noise memorisation: cheaper)."""
    probe = Probe(train_set.features, train_set.config.views)
    return train(train_set.X, train_set.y, seeds, learner, cfg, teacher=teacher, probe=probe, progress=progress)
