"""Configs of the learner and of its training, validated on construction and serialisable to JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from multiview.checks import check_choice, check_float, check_int
from multiview.cli import param
from theory_sims.losses import GROUP_LOSSES, LOSSES

MODES = ("full", "random_features", "ntk")
BACKENDS = ("numba", "torch")
DTYPES = ("float32", "float64")
STOPS = ("steps", "fit", "converge")
PRODUCTS = ("float32", "bfloat16", "auto")
AUGMENTS = ("none", "drop_patches", "drop_view")


@dataclass(frozen=True)
class LearnerConfig:
    """The two-layer learner F_i(X) = sum_{r<m} sum_{p<P} sReLU(<w_{i,r}, x_p>), i < k.

    sReLU(z) = 0 for z <= 0, z^q / (q varrho^(q-1)) on [0, varrho], z - (1 - 1/q) varrho above;
    w_{i,r} ~ N(0, sigma0^2 I) at init.

    ``mode="full"`` trains the first layer (the theory's learner). ``mode="random_features"``
    freezes the first layer at its init and trains a linear read-out U on the random features
    phi_c(X) = sum_p sReLU(<w_c, x_p>) of all k*m neurons: F_i(X) = sum_c U_{i,c} phi_c(X) / scale,
    with ``scale`` the features' RMS on the training set (one constant per model, set once: a
    change of learning rate, not of the model). ``mode="ntk"`` trains the model linearised around
    its init, F(W0 + Delta) ~ F(W0) + <grad_W F(W0), Delta>.
    """

    k: int = param("number of classes (output neurons groups)", 10)
    m: int = param("neurons per class", 5)
    q: int = param("power of the smoothed ReLU's polynomial part", 3)
    varrho: float = param("width of the smoothed ReLU's polynomial part", 1.0)
    sigma0: float = param("std of the Gaussian init of the first layer", 0.05)
    mode: str = param("'full', 'random_features' or 'ntk'", "full")

    def __post_init__(self):
        check_int("k", self.k, 2)
        check_int("m", self.m, 1)
        check_int("q", self.q, 1)
        check_float("varrho", self.varrho, 0.0, lo_open=True)
        check_float("sigma0", self.sigma0, 0.0, lo_open=True)
        check_choice("mode", self.mode, MODES)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: objective, optimiser, stop rule, numerics and what to record.

    Optimiser: full-batch gradient descent by default (``batch_size=0``); with ``batch_size > 0``
    mini-batch SGD over epochs shuffled by ``batch_seed`` (the same for every model, so a model's
    trajectory does not depend on the others stacked with it). ``momentum`` is heavy-ball:
    v <- momentum v + grad, w <- w - lr v. ``max_step > 0`` caps the length of every step: a model
    whose step lr v would be longer than ``max_step`` (L2 norm over all of its parameters; over the
    whole group for ``loss="average"``, which is one model) takes lr v scaled down to that length.
    This is gradient-norm clipping: a clipped step points where the unclipped one does, so the path
    is that of gradient descent with a smaller learning rate on those steps, and a large ``lr`` can
    cross the slow stretches (tiny gradients) without overshooting where the gradient is large.

    Stop rule: ``stop="steps"`` runs ``steps`` steps. ``stop="fit"`` stops each model (each group
    for ``loss="average"``) ``extra_steps`` steps after its training accuracy first reaches 100%,
    and at ``steps`` at the latest; for full-batch GD the check uses the step's own forward pass,
    for SGD a pass over the whole training set at the end of every epoch. ``stop="converge"``
    (full-batch GD) trains each model to convergence: it stops at the first step t at which it
    has trained at least ``fit_multiple`` times as long as it took to fit (t >= fit_multiple *
    fit_step) *and* its training loss is at most ``loss_target`` or, with ``plateau > 0``, fell by
    less than that fraction over the last ``plateau_window`` steps (a loss with a floor above 0,
    such as distillation's, stops where it flattens); at ``steps`` at the latest.
    ``snapshots`` names multiples of the fit step (e.g. (1, 3, 10)) at which each model's weights
    are kept, to see what it had learned at 1x, 3x, 10x the time it took to fit.

    Augmentation (``augment``): at step t every training sample loses some of its patches, drawn
    from a generator seeded by (``batch_seed``, t) alone, the same for every model of a stack. The
    gradient is that of the augmented inputs; the stop rule, the fit and the recorded loss and
    accuracy are those of the whole training set (one more forward pass a step): a model is
    trained until it fits its data, not until it fits every crop of it.

    Distillation: the teacher's logits are multiplied by ``teacher_scale`` before any KD loss (the
    paper's teacher G is the ensemble's output scaled by a constant). ``kd_weight`` is the
    paper's eta'/eta for ``loss="kd_paper"``; ``temperature`` is T for ``"kd"`` and tau for
    ``"kd_paper"`` (0: the paper's 1/log^2 k) and ``"kd_capped"``.
    """

    lr: float = param("learning rate", 1.0)
    steps: int = param("training steps (the most, with stop='fit')", 400)
    stop: str = param("'steps' or 'fit' (100%% train accuracy, then extra_steps more)", "steps")
    extra_steps: int = param("stop='fit': steps to keep training after 100%% train accuracy", 0)
    batch_size: int = param("0 for full-batch gradient descent, else the SGD mini-batch size", 0)
    momentum: float = param("heavy-ball momentum in [0, 1)", 0.0)
    max_step: float = param("the longest step a model may take (L2 norm over its parameters); 0: no limit", 0.0)
    batch_seed: int = param("seed of the mini-batch order", 0)
    fit_multiple: float = param("stop='converge': train at least this many times the fit step", 10.0)
    loss_target: float = param("stop='converge': and until the training loss is at most this", 0.01)
    plateau: float = param("stop='converge': or until the loss fell by less than this fraction over the last "
                           "plateau_window steps (0: off)", 0.0)
    plateau_window: int = param("stop='converge' with plateau: the steps over which the loss's fall is measured", 50)
    snapshots: tuple = param("multiples of the fit step at which to keep each model's weights", ())
    loss: str = param("'ce', 'kd' (Hinton), 'kd_paper' (the paper's one-sided KD), 'kd_capped', 'average' or 'sum' "
                      "(a group of models trained as one: their mean or their sum)", "ce")
    temperature: float = param("KD temperature: T for 'kd'; tau for 'kd_paper' (0: 1/log^2 k) and 'kd_capped'", 1.0)
    label_weight: float = param("'kd', 'kd_capped': weight alpha of the label cross-entropy; 1 - alpha on the teacher", 0.0)
    kd_weight: float = param("'kd_paper': eta'/eta, the weight of the teacher's push against the label term", 1.0)
    teacher_scale: float = param("KD: the teacher's logits are multiplied by this", 1.0)
    group_size: int = param("'average', 'sum': number of consecutive models trained as one network", 1)
    backend: str = param("'numba' (CPU) or 'torch' (CPU or CUDA)", "numba")
    device: str = param("torch device for backend='torch': 'cpu' or 'cuda'", "cpu")
    dtype: str = param("'float32' or 'float64'", "float32")
    products: str = param("precision of the two matrix products of a step: 'float32', 'bfloat16' (both factors "
                          "rounded to bfloat16 on one thread; the rest of the step, the weights and every evaluation "
                          "stay float32; about 2-4x faster products on CPUs with AMX) or 'auto' (bfloat16 on the numba "
                          "backend where the CPU has AMX-BF16, float32 elsewhere: backends.resolve_products); the "
                          "evidence that bfloat16 leaves the verdicts alone is in docs/performance.md", "float32")
    augment: str = param("augmentation at every step (full-batch GD, full learner): 'none', 'drop_patches' (each "
                         "patch of each sample zeroed with probability augment_rate) or 'drop_view' (each sample loses "
                         "the patches of one of its class's views, drawn at random: a crop in patch space)", "none")
    augment_rate: float = param("augment='drop_patches': the probability that a patch is zeroed", 0.5)
    track_every: int = param("record Lambda and noise memorisation every this many steps (0: never)", 10)
    corr_at: tuple = param("steps at which to store the full neuron x feature correlation matrix", ())

    def __post_init__(self):
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_int("steps", self.steps, 0)
        check_choice("stop", self.stop, STOPS)
        check_int("extra_steps", self.extra_steps, 0)
        check_int("batch_size", self.batch_size, 0)
        check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_float("max_step", self.max_step, 0.0)
        check_int("batch_seed", self.batch_seed)
        check_choice("loss", self.loss, LOSSES)
        check_float("fit_multiple", self.fit_multiple, 1.0)
        check_float("loss_target", self.loss_target, 0.0, lo_open=True)
        check_float("plateau", self.plateau, 0.0, 1.0, hi_open=True)
        check_int("plateau_window", self.plateau_window, 1)
        object.__setattr__(self, "snapshots", tuple(check_float("snapshots", s, 1.0) for s in self.snapshots))
        if self.stop == "converge" and self.batch_size:
            raise ValueError(f"stop='converge' needs full-batch training (batch_size=0), got batch_size={self.batch_size}")
        if self.snapshots and self.batch_size:
            raise ValueError(f"snapshots need full-batch training (batch_size=0), got batch_size={self.batch_size}")
        check_float("temperature", self.temperature, 0.0, lo_open=self.loss != "kd_paper")
        check_float("label_weight", self.label_weight, 0.0, 1.0)
        if self.loss == "kd_paper" and self.label_weight:
            raise ValueError("label_weight must be 0 with loss='kd_paper' (its label term always has weight 1; "
                             f"kd_weight weighs the teacher's push), got {self.label_weight}")
        check_float("kd_weight", self.kd_weight, 0.0)
        check_float("teacher_scale", self.teacher_scale, 0.0, lo_open=True)
        check_int("group_size", self.group_size, 1)
        if self.group_size > 1 and self.loss not in GROUP_LOSSES:
            raise ValueError(f"group_size must be 1 unless loss is 'average' or 'sum', got {self.group_size}")
        check_choice("backend", self.backend, BACKENDS)
        check_choice("device", self.device, ("cpu", "cuda"))
        if self.backend == "numba" and self.device != "cpu":
            raise ValueError(f"device must be 'cpu' with backend='numba', got {self.device!r}")
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("products", self.products, PRODUCTS)
        if self.products == "bfloat16" and self.dtype != "float32":
            raise ValueError(f"products='bfloat16' needs dtype='float32', got dtype={self.dtype!r}")
        check_choice("augment", self.augment, AUGMENTS)
        check_float("augment_rate", self.augment_rate, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.augment != "none" and self.batch_size:
            raise ValueError(f"augment needs full-batch training (batch_size=0), got batch_size={self.batch_size}")
        check_int("track_every", self.track_every, 0)
        object.__setattr__(self, "corr_at", tuple(check_int("corr_at", s, 0) for s in self.corr_at))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
