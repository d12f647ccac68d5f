"""The stacked two-layer learner: S models of the same shape held in one set of tensors.

Model s of a stack is initialised from ``numpy.random.default_rng(seeds[s])`` alone, so a model's
initial weights, and (see :mod:`theory_sims.train`) its whole training run, do not depend on which
other models are stacked with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from multiview.checks import check_seeds
from theory_sims.backends import make_backend
from theory_sims.config import LearnerConfig

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class TwoLayerModel:
    """S stacked learners.

    Attributes:
        config: the learner's :class:`LearnerConfig`.
        seeds: the init seed of each model.
        W: (S, k, m, d) first-layer weights: trained (``full``), frozen at init
            (``random_features``) or the linearisation point W0 (``ntk``).
        U: (S, k, k*m) read-out of ``random_features`` mode, else None.
        rf_scale: (S,) RMS of each model's random features on its training set, else None.
        delta: (S, k, m, d) displacement from W0 in ``ntk`` mode, else None.
    """

    config: LearnerConfig
    seeds: tuple
    W: torch.Tensor
    U: torch.Tensor | None = None
    rf_scale: torch.Tensor | None = None
    delta: torch.Tensor | None = None

    @property
    def S(self) -> int:
        return self.W.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        """The effective first-layer weights, (S, k, m, d): W, or W0 + Delta in ``ntk`` mode."""
        return self.W if self.delta is None else self.W + self.delta

    def select(self, index) -> "TwoLayerModel":
        """The sub-stack of models ``index`` (a list of positions)."""
        index = list(index)
        pick = lambda t: None if t is None else t[index].clone()  # noqa: E731
        return TwoLayerModel(self.config, tuple(self.seeds[i] for i in index), pick(self.W),
                             pick(self.U), pick(self.rf_scale), pick(self.delta))

    def outputs(self, H: torch.Tensor, H0: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (S, n, k) from the per-neuron patch sums H (n, S*k*m) of the current inputs."""
        c, S = self.config, self.S
        n = H.shape[0]
        if self.U is not None:
            return self.rf_outputs(random_features(H, S) / self.rf_scale[:, None, None])
        if H0 is not None:
            H = H + H0
        return H.view(n, S, c.k, c.m).sum(dim=-1).permute(1, 0, 2)

    def rf_outputs(self, phi: torch.Tensor) -> torch.Tensor:
        """Random-feature logits (S, n, k) from scaled features phi (S, n, k*m): one batched
        product, each model its own matrix product (so a model's numbers do not depend on the
        stack; tested against models trained alone)."""
        return torch.bmm(phi, self.U.transpose(1, 2))

    @torch.no_grad()
    def logits(self, X: np.ndarray, backend: str = "numba", device: str = "cpu", chunk: int = 1024) -> np.ndarray:
        """Outputs F_s(X) of every model on inputs X (n, P, d): float numpy array (S, n, k)."""
        c = self.config
        N, d = self.S * c.k * c.m, self.W.shape[-1]
        if X.shape[-1] != d:
            raise ValueError(f"X must have patch dimension {d} (the model's d), got {X.shape[-1]}")
        W = self.W.to(device).reshape(N, d)
        delta = None if self.delta is None else self.delta.to(device).reshape(N, d)
        out = []
        for a in range(0, X.shape[0], chunk):
            be = make_backend(backend, X[a : a + chunk], self.W.dtype, c.q, c.varrho, device, c.k * c.m)
            if delta is None:
                out.append(self.outputs(be.patch_sums(W)))
            else:
                H0 = be.set_linearisation(W)
                out.append(self.outputs(be.patch_sums(delta), H0))
        return torch.cat(out, dim=1).cpu().numpy()


def random_features(H: torch.Tensor, S: int) -> torch.Tensor:
    """Per-neuron patch sums H (n, S*k*m) as each model's feature matrix, (S, n, k*m) contiguous."""
    return H.view(H.shape[0], S, -1).permute(1, 0, 2).contiguous()


def init_model(config: LearnerConfig, d: int, seeds, dtype: str = "float32", device: str = "cpu") -> TwoLayerModel:
    """Fresh models: W_s = sigma0 * N(0, I) drawn from ``default_rng(seeds[s])`` in float64, then cast."""
    seeds = check_seeds("seeds", seeds)
    c = config
    W = np.stack([np.random.default_rng(s).standard_normal((c.k, c.m, d)) * c.sigma0 for s in seeds])
    W = torch.as_tensor(W).to(device=device, dtype=TORCH_DTYPES[dtype])
    model = TwoLayerModel(c, seeds, W)
    if c.mode == "random_features":
        model.U = torch.zeros(len(seeds), c.k, c.k * c.m, dtype=W.dtype, device=device)
    elif c.mode == "ntk":
        model.delta = torch.zeros_like(W)
    return model
