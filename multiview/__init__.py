"""Data the theory of Allen-Zhu & Li (arXiv 2012.09816) assumes about the world.

* :class:`MultiViewDistribution` / :class:`MultiViewConfig`: k classes, each with V orthonormal
  view features, inputs made of P patches, a controllable fraction of single-view samples.
* :class:`GaussianTask` / :class:`GaussianConfig`: Gaussian or mixture inputs labelled by
  linear, fully connected, convolutional or residual teachers, with margin and label noise;
  the setting of the paper's negative results.
* :func:`load` reads back any dataset saved with ``.save(path)``.

Two small modules are shared by the whole project (``theory_sims`` and ``real_data`` build on
them, so their messages and flags read the same everywhere):

* :mod:`multiview.checks`: argument checks whose ``ValueError`` names the parameter, its value
  and the allowed range;
* :mod:`multiview.cli`: ``argparse`` helpers: a parser whose errors are one line with exit
  status 2, one ``--flag`` per config field, and the ``param`` field that carries its help text.

Command line: ``python -m multiview.generate --help``.
"""

from multiview.dataset import GaussianData, MultiViewData
from multiview.gaussian import GaussianConfig, GaussianTask, Teacher
from multiview.loading import load
from multiview.multiview import (
    MultiViewConfig,
    MultiViewDistribution,
    expected_single_fraction,
    orthonormal_features,
)

__all__ = [
    "GaussianConfig",
    "GaussianData",
    "GaussianTask",
    "MultiViewConfig",
    "MultiViewData",
    "MultiViewDistribution",
    "Teacher",
    "expected_single_fraction",
    "load",
    "orthonormal_features",
]
