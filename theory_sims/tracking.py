"""What a model has learned: view correlations Lambda, the neuron x feature matrix, memorisation.

For model s, class j and view l,

    Lambda_{j,l} = max_r <w_{j,r}, v_{j,l}>,

the best alignment of class j's neurons with its own view l. The theory: at init all Lambda are
about sigma0 * sqrt(log m); during training one view per class (a random one, decided by the
init) grows to Theta(1) and the others stay near their init, while the samples that miss the
learned view are fitted by memorising their noise.

A view counts as **learned** when Lambda_{j,l} >= ``LEARNED_THRESHOLD`` * varrho. With the default
1.0 that is the point where the smoothed ReLU turns linear: a patch holding the view at unit
weight then drives the neuron in its linear regime. Learned views of the theory reach several
varrho; unlearned ones stay near sigma0, orders of magnitude below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from multiview.checks import check_int

LEARNED_THRESHOLD = 1.0


@dataclass
class Probe:
    """What the trainer should measure: the feature dictionary and, optionally, training noise.

    Attributes:
        features: (k*V, d) view features, row j*V + l = v_{j,l}.
        views: V.
        noise: (n, P, d) Gaussian noise of the training inputs, for memorisation; or None.
        labels: (n,) training labels (memorisation is measured for each sample's own class).
    """

    features: np.ndarray
    views: int
    noise: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self):
        check_int("views", self.views, 1)
        shape = tuple(np.shape(self.features))
        if len(shape) < 2 or math.prod(shape[:-1]) % self.views:
            raise ValueError(f"features must have shape (k * views, d) with views = {self.views}, got {shape}")
        if (self.noise is None) != (self.labels is None):
            raise ValueError("noise and labels go together: give both (to measure memorisation) or neither")

    def check_fits(self, X_shape: tuple, k: int) -> None:
        """Raise ValueError unless this probe fits training inputs of shape ``X_shape`` (n, P, d) and
        a learner of ``k`` classes: features (k * views, d), noise (n, P, d), labels (n,)."""
        n, _, d = X_shape
        shape = tuple(np.shape(self.features))
        if shape[-1] != d:
            raise ValueError(f"probe.features must have dimension d = {d} (that of X), got {shape[-1]} "
                             f"(shape {shape}): a probe built for other data?")
        if math.prod(shape[:-1]) != k * self.views:
            raise ValueError(f"probe.features must have k * views = {k} * {self.views} = {k * self.views} rows "
                             f"(the learner's k), got shape {shape}")
        if self.noise is not None and tuple(np.shape(self.noise)) != tuple(X_shape):
            raise ValueError(f"probe.noise must have the shape of X {tuple(X_shape)}, "
                             f"got {tuple(np.shape(self.noise))}")
        if self.labels is not None and tuple(np.shape(self.labels)) != (n,):
            raise ValueError(f"probe.labels must have shape ({n},) (one per training sample), "
                             f"got {tuple(np.shape(self.labels))}")

    @classmethod
    def from_data(cls, data, memorisation: bool = True) -> "Probe":
        """A probe for a :class:`multiview.MultiViewData` training set."""
        return cls(
            features=data.features,
            views=data.config.views,
            noise=data.noise if memorisation else None,
            labels=data.y if memorisation else None,
        )


def correlations(W: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """<w_{s,i,r}, v_f> for every model, class, neuron and feature: (S, k, m, F)."""
    return W @ features.T


def lambdas(W: torch.Tensor, features: torch.Tensor, views: int) -> torch.Tensor:
    """Lambda (S, k, V): max over neurons r of <w_{s,j,r}, v_{j,l}>."""
    S, k, m, d = W.shape
    own = W @ features.view(k, views, d).transpose(1, 2)  # (S, k, m, V), class j against its views
    return own.max(dim=2).values


def noise_memorisation(W: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(S, n): for each model and training sample b, max over neurons r of class y_b and patches p
    of <w_{y_b, r}, xi_{b,p}>, how strongly the sample's own noise is stored in its class's neurons."""
    S, k, m, d = W.shape
    out = []
    for a in range(0, noise.shape[0], chunk):
        xi, y = noise[a : a + chunk], labels[a : a + chunk]
        Wy = W[:, y]  # (S, b, m, d)
        corr = torch.einsum("sbmd,bpd->sbmp", Wy, xi)
        out.append(corr.amax(dim=(2, 3)))
    return torch.cat(out, dim=1)


def views_learned(lam: np.ndarray, varrho: float, threshold: float = LEARNED_THRESHOLD) -> np.ndarray:
    """Boolean array of the same shape as ``lam``: Lambda >= threshold * varrho."""
    return np.asarray(lam) >= threshold * varrho


def learned_step(steps: np.ndarray, lam: np.ndarray, varrho: float, threshold: float = LEARNED_THRESHOLD) -> np.ndarray:
    """(S, k, V) integers: the first tracked step at which Lambda_{j,l} reached ``threshold * varrho``,
    -1 for a view that never did. ``steps`` (T,) and ``lam`` (T, S, k, V) as in a training history.

    Set against a model's ``fit_step`` it says whether a view was learned in the race before the
    model fitted its training set or afterwards, while it was trained on."""
    lam = np.asarray(lam)
    steps = np.asarray(steps)
    if lam.ndim != 4 or lam.shape[0] != steps.shape[0]:
        raise ValueError(f"lam must have shape (T, S, k, V) with T = len(steps) = {steps.shape[0]}, got {lam.shape}")
    reached = views_learned(lam, varrho, threshold)
    first = reached.argmax(axis=0)
    return np.where(reached.any(axis=0), steps[first], -1)


def second_views(learned: np.ndarray, fit_step: np.ndarray) -> dict:
    """How the (model, class) pairs that learned more than one view learned the extra ones.

    ``learned``: (S, k, V) steps from :func:`learned_step`; ``fit_step``: (S,) first step at 100%
    training accuracy (-1 if never). Returns the number of pairs, how many learned more than one
    view, how many of those learned their last view at or before the model fitted its training set
    (so during the race, not from training on after the fit), and the median number of steps
    between a pair's first and last learned view."""
    learned = np.asarray(learned)
    fit = np.asarray(fit_step)
    if learned.ndim != 3 or fit.shape != learned.shape[:1]:
        raise ValueError(f"learned must be (S, k, V) and fit_step (S,), got {learned.shape} and {fit.shape}")
    got = learned >= 0
    several = got.sum(axis=-1) > 1  # (S, k)
    last = learned.max(axis=-1)  # unlearned views hold -1
    first = np.where(got, learned, np.iinfo(learned.dtype).max).min(axis=-1)
    fitted = np.broadcast_to(fit[:, None], several.shape)
    before = several & (fitted >= 0) & (last <= fitted)
    lags = (last - first)[several]
    return {
        "pairs": int(several.size),
        "several_views": int(several.sum()),
        "last_view_by_fit": int(before.sum()),
        "median_lag_steps": float(np.median(lags)) if lags.size else None,
    }
