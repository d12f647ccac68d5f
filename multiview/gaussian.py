"""Gaussian-like inputs labelled by teacher networks: the paper's negative-result setting.

Allen-Zhu & Li report that on inputs without view structure an ensemble of independently trained
networks is no more accurate than its members. This module makes such data:

* **inputs** ``input="gaussian"``: every coordinate N(0, 1/patch_dim), so each patch has norm
  about 1. ``input="mixture"``: ``components`` Gaussians with means drawn once per task,
  ``mean ~ N(0, separation^2/patch_dim I)``, plus the same within-component noise; an input picks
  its component uniformly.
* **teachers** (random, fixed per task; inputs flattened to D = patches * patch_dim unless said):
  ``linear`` (logits = W x); ``fc`` (``teacher_depth`` hidden ReLU layers of width
  ``teacher_width``, then a linear read-out: 2+ layers); ``conv`` (``teacher_width`` filters
  shared across the patches, ReLU, mean-pooled over patches, linear read-out); ``residual``
  (a linear stem, ``teacher_depth`` blocks h <- h + W2 relu(W1 h) / sqrt(depth), a ReLU and
  a linear read-out). Each teacher is calibrated on 4096 inputs of its own: one scale makes
  its centred logits' std 1, so ``margin`` is in units of that std, and per-class biases make
  every class the argmax for about 1/k of the inputs.
* **sampling** ``uniform``: inputs as drawn, label = teacher argmax, classes as the teacher
  makes them. ``rejection``: an input is kept, with ``balance``, only while its class has fewer
  than its share n/k of the samples. In both, ``margin > 0`` also rejects every input whose
  teacher margin (top logit minus runner-up) is below ``margin``.
* **label noise**, two readings. ``label_noise`` (flips): exactly ``round(label_noise * n)``
  samples, chosen uniformly, get a label drawn uniformly from the other k - 1 classes; the noise
  is the training set's, and a model is judged on the teacher's clean labels. ``logit_noise``
  (noisy logits): every sample's label is the argmax of the teacher's logits plus independent
  Gumbel noise of that scale (in units of the logits' std), so the noise is part of the
  distribution, training and test alike: with the Gumbel-max rule a label is class j with
  probability softmax(logits / logit_noise)_j. ``clean_y`` keeps the teacher's argmax in both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from multiview.checks import check_choice, check_float, check_instance, check_int, check_seed
from multiview.cli import param
from multiview.dataset import GaussianData

INPUTS = ("gaussian", "mixture")
SAMPLINGS = ("uniform", "rejection")
TEACHERS = ("linear", "fc", "conv", "residual")
CALIBRATION_DRAWS = 4096


@dataclass(frozen=True)
class GaussianConfig:
    """Parameters of a Gaussian-like task; every field is validated on construction."""

    k: int = param("number of classes", 10)
    patches: int = param("patches per input (P); the conv teacher filters each patch", 1)
    patch_dim: int = param("dimension of each patch; inputs have patches * patch_dim coordinates", 64)
    input: str = param("'gaussian' or 'mixture' (of Gaussians)", "gaussian")
    components: int = param("mixture components (input='mixture')", 20)
    separation: float = param("std of the mixture means, in units of the within-component std", 2.0)
    teacher: str = param("labelling network: 'linear', 'fc', 'conv' or 'residual'", "fc")
    teacher_width: int = param("hidden width (fc, residual) or filter count (conv) of the teacher", 64)
    teacher_depth: int = param("hidden layers (fc) or residual blocks (residual)", 2)
    sampling: str = param("'uniform' (classes as drawn) or 'rejection' (classes balanced)", "uniform")
    margin: float = param("keep only inputs whose teacher margin is >= this (logit std units)", 0.0)
    balance: bool = param("rejection: give every class an equal share of the samples", True)
    label_noise: float = param("fraction of labels flipped to a uniformly random other class", 0.0)
    logit_noise: float = param("scale of Gumbel noise added to the teacher's logits before the argmax, for "
                               "every sample drawn (labels then follow softmax(logits / scale))", 0.0)

    def __post_init__(self):
        check_int("k", self.k, 2)
        check_int("patches", self.patches, 1)
        check_int("patch_dim", self.patch_dim, 1)
        check_choice("input", self.input, INPUTS)
        check_int("components", self.components, 1)
        check_float("separation", self.separation, 0.0)
        check_choice("teacher", self.teacher, TEACHERS)
        check_int("teacher_width", self.teacher_width, 1)
        check_int("teacher_depth", self.teacher_depth, 1)
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_float("margin", self.margin, 0.0)
        if not isinstance(self.balance, bool):
            raise ValueError(f"balance must be True or False, got {self.balance!r}")
        check_float("label_noise", self.label_noise, 0.0, 1.0, hi_open=True)  # 1 would flip every label
        check_float("logit_noise", self.logit_noise, 0.0)

    @property
    def dim(self) -> int:
        return self.patches * self.patch_dim

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Teacher:
    """A random network mapping inputs ``(n, P, patch_dim)`` to calibrated logits ``(n, k)``."""

    def __init__(self, config: GaussianConfig, rng: np.random.Generator):
        c = self.config = config
        D, w = c.dim, c.teacher_width

        def gauss(fan_in, *shape, gain=1.0):
            return rng.standard_normal(shape) * np.sqrt(gain / fan_in)

        if c.teacher == "linear":
            self.weights = [gauss(D, D, c.k)]
        elif c.teacher == "fc":
            dims = [D] + [w] * c.teacher_depth
            self.weights = [gauss(a, a, b, gain=2.0) for a, b in zip(dims[:-1], dims[1:])]
            self.weights.append(gauss(w, w, c.k))
        elif c.teacher == "conv":
            self.weights = [gauss(c.patch_dim, c.patch_dim, w, gain=2.0), gauss(w, w, c.k)]
        else:  # residual
            self.weights = [gauss(D, D, w)]
            for _ in range(c.teacher_depth):
                self.weights += [gauss(w, w, w, gain=2.0), gauss(w, w, w)]
            self.weights.append(gauss(w, w, c.k))
        self.bias = np.zeros(c.k)
        self.scale = 1.0

    def raw_logits(self, X: np.ndarray) -> np.ndarray:
        c, W = self.config, self.weights
        X = np.asarray(X, dtype=np.float64)
        flat = X.reshape(X.shape[0], -1)
        relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
        if c.teacher == "linear":
            return flat @ W[0]
        if c.teacher == "fc":
            h = flat
            for layer in W[:-1]:
                h = relu(h @ layer)
            return h @ W[-1]
        if c.teacher == "conv":
            return relu(X @ W[0]).mean(axis=1) @ W[1]
        h = flat @ W[0]
        blocks = W[1:-1]
        for w1, w2 in zip(blocks[0::2], blocks[1::2]):
            h = h + relu(h @ w1) @ w2 / np.sqrt(c.teacher_depth)
        return relu(h) @ W[-1]

    def calibrate(self, X: np.ndarray, steps: int = 200) -> None:
        """Fit per-class biases and one scale on the inputs ``X``.

        The logits are centred per class and scaled to unit std; then the biases are nudged
        (multiplicative-weights steps on the label frequencies) until every class is the argmax
        for about 1/k of ``X``, so uniform sampling gives roughly balanced labels.
        """
        raw = self.raw_logits(X)
        self.scale = 1.0 / max(float((raw - raw.mean(axis=0)).std()), 1e-12)
        z = raw * self.scale
        b = -z.mean(axis=0)  # in units of the calibrated logits
        k, floor = z.shape[1], 0.5 / len(z)
        for _ in range(steps):
            freq = np.bincount((z + b).argmax(axis=1), minlength=k) / len(z)
            b -= 0.2 * np.log(np.maximum(freq, floor) * k)
        self.bias = b / self.scale

    def logits(self, X: np.ndarray) -> np.ndarray:
        return (self.raw_logits(X) + self.bias) * self.scale

    def label_and_margin(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.logits(X)
        top2 = np.partition(z, -2, axis=1)[:, -2:]
        return z.argmax(axis=1), top2[:, 1] - top2[:, 0]


class GaussianTask:
    """A Gaussian-like world: input distribution (with its mixture means) and a teacher."""

    def __init__(self, config: GaussianConfig | None = None, seed: int | np.random.Generator = 0):
        self.config = c = check_instance("config", config, GaussianConfig) if config is not None else GaussianConfig()
        rng = np.random.default_rng(check_seed("seed", seed))
        std = 1.0 / np.sqrt(c.patch_dim)
        self.means = (
            rng.standard_normal((c.components, c.patches, c.patch_dim)) * (c.separation * std)
            if c.input == "mixture"
            else None
        )
        self.teacher = Teacher(c, rng)
        self.teacher.calibrate(self.draw_inputs(CALIBRATION_DRAWS, rng)[0])

    def draw_inputs(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` inputs (float32, (n, P, patch_dim)) as drawn, and their mixture components."""
        c = self.config
        X = rng.standard_normal((n, c.patches, c.patch_dim), dtype=np.float32)
        X *= np.float32(1.0 / np.sqrt(c.patch_dim))
        if self.means is None:
            return X, np.full(n, -1, dtype=np.int64)
        comp = rng.integers(0, c.components, size=n)
        X += self.means[comp].astype(np.float32)
        return X, comp

    def sample(self, n: int, seed: int | np.random.Generator = 0, max_draws: int | None = None) -> GaussianData:
        """Draw ``n`` labelled samples. The same ``seed`` gives bit-identical data.

        Rejection sampling gives up after ``max_draws`` inputs (default ``1000 * n + 100_000``)
        with a ValueError naming the class it could not fill.
        """
        n = check_int("n", n, 1)
        c = self.config
        rng = np.random.default_rng(check_seed("seed", seed))
        if c.sampling == "uniform" and c.margin == 0:
            X, comp = self.draw_inputs(n, rng)
            y, margin = self.teacher.label_and_margin(X)
        else:
            X, comp, y, margin = self._rejection(n, rng, max_draws or 1000 * n + 100_000)

        clean_y = y.astype(np.int64)
        y = clean_y.copy()
        if c.logit_noise > 0:  # drawn after the inputs, so the inputs are those of the noiseless task
            y = (self.teacher.logits(X) + c.logit_noise * rng.gumbel(size=(n, c.k))).argmax(axis=1).astype(np.int64)
        flipped = y != clean_y  # changed by the noise (none without logit_noise)
        n_flip = int(round(c.label_noise * n))
        if n_flip:
            idx = rng.choice(n, size=n_flip, replace=False)
            y[idx] = (y[idx] + rng.integers(1, c.k, size=n_flip)) % c.k
            flipped[idx] = True
        return GaussianData(
            X=X, y=y, clean_y=clean_y, flipped=flipped, margin=margin.astype(np.float32),
            component=comp.astype(np.int64), config=c,
        )

    def _rejection(self, n: int, rng: np.random.Generator, max_draws: int):
        c = self.config
        balance = c.sampling == "rejection" and c.balance
        quota = np.full(c.k, n // c.k) + (np.arange(c.k) < n % c.k) if balance else None
        kept: list[tuple] = []
        filled = np.zeros(c.k, dtype=np.int64)
        total, drawn = 0, 0
        batch = max(1024, 2 * n)
        while total < n:
            if drawn >= max_draws:
                short = int(np.argmax(quota - filled)) if quota is not None else None
                where = f"class {short} has {filled[short]} of its {quota[short]} samples" if short is not None else f"{total} of {n} samples kept"
                raise ValueError(
                    f"rejection sampling gave up after {drawn} draws: {where}; "
                    f"lower margin (now {c.margin}) or set balance=False"
                )
            X, comp = self.draw_inputs(batch, rng)
            drawn += batch
            y, margin = self.teacher.label_and_margin(X)
            ok = margin >= c.margin
            if quota is not None:
                # keep, in draw order, at most the remaining quota of every class
                rank = np.zeros(batch, dtype=np.int64)
                for j in range(c.k):
                    idx = np.flatnonzero(ok & (y == j))
                    rank[idx] = np.arange(idx.size)
                ok &= rank < (quota - filled)[y]
            else:
                ok &= np.cumsum(ok) <= n - total
            kept.append((X[ok], comp[ok], y[ok], margin[ok]))
            filled += np.bincount(y[ok], minlength=c.k)
            total += int(ok.sum())
        X, comp, y, margin = (np.concatenate(parts) for parts in zip(*kept))
        order = rng.permutation(n)  # classes were filled at different speeds: shuffle
        return X[order], comp[order], y[order], margin[order]
