"""Data the theory of Allen-Zhu & Li (arXiv 2012.09816) assumes about the world.

* :class:`MultiViewDistribution` / :class:`MultiViewConfig`: k classes, each with V orthonormal
  view features, inputs made of P patches, a controllable fraction of single-view samples.
* :class:`GaussianTask` / :class:`GaussianConfig`: Gaussian or mixture inputs labelled by
  linear, fully connected, convolutional or residual teachers, with margin and label noise;
  the setting of the paper's negative results.
* :func:`load` reads back any dataset saved with ``.save(path)``.

Command line: ``python -m multiview.generate --help``.
"""

from multiview.dataset import GaussianData, MultiViewData, load
from multiview.gaussian import GaussianConfig, GaussianTask, Teacher
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
