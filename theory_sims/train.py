"""Train S stacked two-layer learners at once.

One step for the whole stack is

1. ``A = X W^T`` for all S*k*m neurons at once (one matrix product),
2. H = sum_p sReLU(A) and the logits F (S, n, k) (a fused kernel),
3. the objective's closed-form gradient dF (:mod:`theory_sims.losses`),
4. ``dW = (sReLU'(A) * dF)^T X`` (a fused kernel, then one matrix product),
5. the update of every model still training.

Each model's numbers are those it would have trained alone: its init comes from its own seed,
its columns of the matrix products are computed with the same arithmetic whatever sits beside
them, and the mini-batch order depends on ``batch_seed`` only. ``tests/test_train.py`` checks
bit equality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from multiview.checks import check_finite, check_instance, check_seeds
from theory_sims import tracking
from theory_sims.backends import make_backend
from theory_sims.config import LearnerConfig, TrainConfig
from theory_sims.losses import GROUP_LOSSES, KD_LOSSES, loss_and_grad
from theory_sims.model import TORCH_DTYPES, TwoLayerModel, init_model, random_features


@dataclass
class TrainResult:
    """A trained stack and what was recorded on the way.

    Attributes:
        model: the trained :class:`TwoLayerModel` stack.
        fit_step: (S,) first step whose forward pass had 100% training accuracy, -1 if none
            (checked at every step for full-batch GD, whatever the stop rule; for SGD at epoch
            ends, and only with ``stop="fit"``).
        updates: (S,) number of updates each model made before its stop rule ended it.
        train_acc, train_loss: (S,) on the whole training set after training.
        history: ``loss`` and ``acc`` (steps, S) of every step's forward pass (the batch for
            SGD); ``step_length`` (updates, S) how far each update would move each model, lr
            times the norm of its step, before any ``max_step`` cap; ``step`` (T,) the tracked
            steps with ``lambda`` (T, S, k, V) and, with noise in the probe,
            ``noise_memorisation`` (T, S, n); ``corr`` {step: (S, k, m, F)}.
        snapshots: {multiple: (params, steps)} for every multiple of ``cfg.snapshots``: each
            model's trained parameters (W, or U / Delta in the other modes) at the first step
            >= multiple * its fit step, and that step; a model that never fitted, or stopped
            before that step, keeps its final parameters and its last step.
        wall_s: training time in seconds.
    """

    model: TwoLayerModel
    fit_step: np.ndarray
    updates: np.ndarray
    train_acc: np.ndarray
    train_loss: np.ndarray
    history: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def snapshot_model(self, multiple: float) -> TwoLayerModel:
        """The stack as it was at ``multiple`` times each model's fit step (see ``snapshots``)."""
        params, _ = self.snapshots[multiple]
        m = self.model.select(range(self.model.S))
        name = "U" if m.U is not None else "delta" if m.delta is not None else "W"
        setattr(m, name, params.clone())
        return m

    def views_learned(self, threshold: float = tracking.LEARNED_THRESHOLD) -> np.ndarray:
        """(S, k, V) booleans from the final Lambda; see :mod:`theory_sims.tracking`."""
        return tracking.views_learned(self.history["lambda"][-1], self.model.config.varrho, threshold)


def augmenter(cfg: TrainConfig, n: int, P: int, learner: LearnerConfig, patch_views=None):
    """None without augmentation, else ``keep(t)``: the (n, P) booleans of the patches that step t
    keeps, drawn from a generator seeded by (``cfg.batch_seed``, t) only (see :class:`TrainConfig`)."""
    if cfg.augment == "none":
        return None
    if learner.mode != "full":
        raise ValueError(f"augment needs the full learner (mode='full'), got mode={learner.mode!r}")
    if cfg.augment == "drop_patches":
        return lambda t: np.random.default_rng((cfg.batch_seed, t)).random((n, P)) >= cfg.augment_rate
    if patch_views is None:
        raise ValueError("augment='drop_view' needs patch_views: which view of its class each patch carries")
    views = np.asarray(patch_views)
    if views.shape != (n, P):
        raise ValueError(f"patch_views must have shape ({n}, {P}), got {views.shape}")
    V = max(int(views.max(initial=-1)) + 1, 1)  # views of a class that some patch carries

    def keep(t):
        dropped = np.random.default_rng((cfg.batch_seed, t)).integers(0, V, n)
        return views != dropped[:, None]

    return keep


def patch_views(data) -> np.ndarray:
    """(n, P): the view of its own class that each patch of a multi-view sample carries, -1 where
    the patch carries none (noise, or another class's feature)."""
    V = data.config.views
    feature = np.asarray(data.patch_feature, dtype=np.int64)
    own = (feature >= 0) & (feature // V == np.asarray(data.y)[:, None])
    return np.where(own, feature % V, -1)


def _check_inputs(X, y, seeds, learner: LearnerConfig, cfg: TrainConfig, teacher, probe):
    """Refuse what training would crash on deep inside, or train on silently as garbage: each
    array is checked once here (one pass for finiteness), never per step."""
    if X.ndim != 3 or 0 in X.shape:
        raise ValueError(f"X must have shape (n, P, d) with n, P, d >= 1, got {X.shape}")
    if X.dtype.kind not in "fiu":
        raise TypeError(f"X must be an array of real numbers, got dtype {X.dtype}")
    check_finite("X", X, "training inputs must be finite")
    n = X.shape[0]
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"y must hold integer class labels in [0, {learner.k - 1}], got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= learner.k:
        raise ValueError(f"y must hold labels in [0, {learner.k - 1}] (k={learner.k}), got [{y.min()}, {y.max()}]")
    S = len(seeds)
    if S % cfg.group_size:
        raise ValueError(f"group_size must divide the number of models ({S}), got {cfg.group_size}")
    if cfg.loss in KD_LOSSES:
        if teacher is None:
            raise ValueError(f"teacher logits are required for loss={cfg.loss!r}")
        if tuple(teacher.shape) not in ((n, learner.k), (S, n, learner.k)):
            raise ValueError(
                f"teacher must have shape ({n}, {learner.k}) or ({S}, {n}, {learner.k}), got {tuple(teacher.shape)}"
            )
        real = teacher.dtype.is_floating_point if isinstance(teacher, torch.Tensor) else teacher.dtype.kind in "fiu"
        if not real:
            raise TypeError(f"teacher must hold real-valued logits, got dtype {teacher.dtype}")
        check_finite("teacher", teacher, "teacher logits must be finite")
    if cfg.batch_size > n:
        raise ValueError(f"batch_size must be <= n = {n}, got {cfg.batch_size}")
    if cfg.backend == "torch" and cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'cpu': torch reports no CUDA device here")
    if probe is not None:
        check_instance("probe", probe, tracking.Probe).check_fits(X.shape, learner.k)


def _model_norms(step: torch.Tensor, group_size: int) -> torch.Tensor:
    """(S,) L2 norm of each model's step; members of a group trained as one average share the
    group's norm."""
    sq = step.reshape(step.shape[0], -1).pow(2).sum(dim=1)
    if group_size > 1:
        sq = sq.view(-1, group_size).sum(dim=1).repeat_interleave(group_size)
    return sq.sqrt()


def _batches(n: int, batch_size: int, seed: int):
    """Endless (epoch_end, samples) pairs: full batches for GD, shuffled epochs for SGD."""
    if batch_size == 0:
        while True:
            yield True, None
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        starts = range(0, n, batch_size)
        for i, a in enumerate(starts):
            yield i == len(starts) - 1, np.sort(order[a : a + batch_size])


class _Stack:
    """The parameters of S stacked models and the two halves of a step, computed for the models
    still training only (``live``, model positions): a stopped model leaves the products, the
    loss and the update, and the others get the numbers they get in any stack (module docstring).
    """

    def __init__(self, X, seeds, learner: LearnerConfig, cfg: TrainConfig, teacher):
        dev, self.dtype = cfg.device, TORCH_DTYPES[cfg.dtype]
        self.dev, self.learner, self.cfg = dev, learner, cfg
        self.n, self.P, self.d = X.shape
        self.S, k, m = len(seeds), learner.k, learner.m
        self.cols = k * m  # neurons per model
        self.model = init_model(learner, self.d, seeds, cfg.dtype, dev)
        self.be = make_backend(cfg.backend, X, self.dtype, learner.q, learner.varrho, dev, model_cols=self.cols,
                               products=cfg.products)
        self.teacher = (None if teacher is None
                        else torch.as_tensor(teacher).to(device=dev, dtype=self.dtype) * cfg.teacher_scale)
        # What the optimiser moves, and the fixed parts of the non-default modes.
        self.H0 = self.phi = None
        N = self.S * self.cols
        if learner.mode == "full":
            self.param = self.model.W
        elif learner.mode == "ntk":
            self.H0 = self.be.set_linearisation(self.model.W.reshape(N, self.d))
            self.param = self.model.delta
        else:
            phi = random_features(self.be.patch_sums(self.model.W.reshape(N, self.d)), self.S)
            self.model.rf_scale = torch.stack([p.pow(2).mean().sqrt().clamp(min=1e-30) for p in phi])
            self.phi = phi / self.model.rf_scale[:, None, None]
            self.param = self.model.U
        self.velocity = torch.zeros_like(self.param) if cfg.momentum > 0 else None
        self.all = torch.arange(self.S, device=dev)

    def rows(self, t: torch.Tensor | None, samples, dim: int = 0):
        """``t`` restricted to the mini-batch ``samples`` along ``dim`` (all of it for None)."""
        if t is None or samples is None:
            return t
        return t.index_select(dim, torch.as_tensor(samples, device=self.dev))

    def _models(self, t: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """``t`` (S, ...) restricted to the models ``live``."""
        return t if len(live) == self.S else t.index_select(0, live)

    def forward(self, live: torch.Tensor, samples=None, keep=None) -> torch.Tensor:
        """Logits (len(live), b, k) of the models ``live`` on the samples (all for None); ``keep``
        (b, P) zeroes the patches where it is False (an augmented step)."""
        if self.phi is not None:
            phi = self.rows(self._models(self.phi, live), samples, dim=1)
            return torch.bmm(phi, self._models(self.param, live).transpose(1, 2))
        S, k, m = len(live), self.learner.k, self.learner.m
        neurons = None if S == self.S else (live[:, None] * self.cols + torch.arange(self.cols, device=self.dev)).reshape(-1)
        self.be.select(samples, None if neurons is None else neurons.cpu().numpy())
        if keep is not None:
            self.be.keep_patches(keep)
        H = self.be.patch_sums(self._models(self.param, live).reshape(S * self.cols, self.d))
        if self.H0 is not None:
            H0 = self.rows(self.H0, samples)
            H = H + (H0 if neurons is None else H0.index_select(1, neurons))
        return H.view(H.shape[0], S, k, m).sum(dim=-1).permute(1, 0, 2)

    def backward(self, live: torch.Tensor, dF: torch.Tensor, samples=None) -> torch.Tensor:
        """d loss / d param of the models ``live`` from dF (len(live), b, k), for the inputs of the
        last :meth:`forward`."""
        S, k, m = len(live), self.learner.k, self.learner.m
        if self.phi is not None:
            phi = self.rows(self._models(self.phi, live), samples, dim=1)
            return torch.bmm(dF.transpose(1, 2), phi)
        b = dF.shape[1]
        G = dF.permute(1, 0, 2).unsqueeze(-1).expand(b, S, k, m).reshape(b, S * k * m).contiguous()
        return self.be.grads(G).view(S, k, m, self.d)

    def teacher_rows(self, live: torch.Tensor, samples):
        if self.teacher is None:
            return None
        t = self._models(self.teacher, live) if self.teacher.dim() == 3 else self.teacher
        return self.rows(t, samples, dim=t.dim() - 2)

    def update(self, live: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Move the models ``live`` one step down ``grad`` (momentum and the step cap applied);
        returns each one's step length before the cap."""
        cfg = self.cfg
        step = grad
        if self.velocity is not None:
            step = self._models(self.velocity, live).mul_(cfg.momentum).add_(grad)
            if len(live) < self.S:
                self.velocity[live] = step
        length = cfg.lr * _model_norms(step, cfg.group_size)
        scale = torch.ones_like(length)
        if cfg.max_step > 0:
            scale = torch.clamp(cfg.max_step / length.clamp(min=torch.finfo(self.dtype).tiny), max=1.0)
        move = cfg.lr * step * scale.view(-1, *([1] * (step.dim() - 1)))
        if len(live) == self.S:
            self.param.sub_(move)
        else:
            self.param[live] = self.param.index_select(0, live).sub_(move)
        return length


class _StopRules:
    """When each model fitted its training set and when it stops (``TrainConfig.stop``), and the
    parameters kept at multiples of its fit step (``TrainConfig.snapshots``)."""

    def __init__(self, cfg: TrainConfig, S: int, param: torch.Tensor):
        self.cfg = cfg
        self.fit_step = np.full(S, -1)
        self.stop_at = np.full(S, cfg.steps)
        self.snaps = {mult: [param.detach().clone(), np.full(S, -1)] for mult in cfg.snapshots}

    def fitted(self, t: int, acc: np.ndarray) -> None:
        """Models whose training accuracy ``acc`` (S,) at step t is 100% for the first time."""
        newly = (acc >= 1.0) & (self.fit_step < 0)
        self.fit_step[newly] = t
        if self.cfg.stop == "fit":
            self.stop_at[newly] = np.minimum(self.stop_at[newly], t + self.cfg.extra_steps)

    def converged(self, t: int, loss: np.ndarray, earlier: np.ndarray | None) -> None:
        """``stop='converge'``: models past fit_multiple x their fit step whose loss (S,) at step t is
        at most loss_target or, with ``plateau``, fell by less than that fraction since the loss
        ``earlier`` (S,) of ``plateau_window`` steps before (NaN: not known)."""
        c = self.cfg
        low = loss <= c.loss_target
        if c.plateau > 0 and earlier is not None:
            with np.errstate(invalid="ignore"):
                low |= loss >= (1 - c.plateau) * earlier
        done = (self.fit_step >= 0) & (t >= c.fit_multiple * self.fit_step) & low
        self.stop_at[done] = np.minimum(self.stop_at[done], t)

    def keep_snapshots(self, t: int, param: torch.Tensor) -> None:
        """The parameters this step's forward pass used, for models due a snapshot."""
        for mult, (kept, at) in self.snaps.items():
            due = (self.fit_step >= 0) & (at < 0) & (t >= mult * self.fit_step) & (self.stop_at >= t)
            if due.any():
                pick = torch.as_tensor(due, device=param.device)
                kept[pick] = param[pick]
                at[due] = t

    def final_snapshots(self, param: torch.Tensor, updates: np.ndarray) -> dict:
        """Multiples a model never reached: its final parameters and its last step."""
        for kept, at in self.snaps.values():
            late = at < 0
            pick = torch.as_tensor(late, device=param.device)
            kept[pick] = param[pick]
            at[late] = updates[late]
        return {mult: (kept, at) for mult, (kept, at) in self.snaps.items()}


def train(
    X: np.ndarray,
    y: np.ndarray,
    seeds,
    learner: LearnerConfig,
    cfg: TrainConfig = TrainConfig(),
    teacher: np.ndarray | None = None,
    probe: tracking.Probe | None = None,
    progress: bool = False,
    patch_views: np.ndarray | None = None,
) -> TrainResult:
    """Train one model per seed, stacked, on inputs X (n, P, d) with labels y (n,).

    ``teacher`` holds teacher logits for the KD losses, (n, k) or one set per model (S, n, k).
    ``probe`` says what to track (see :class:`theory_sims.tracking.Probe`). ``patch_views`` (n, P)
    says which view of its own class each patch carries (-1: none); ``augment='drop_view'`` needs it.

    A step runs over the models still training only: a model that stopped leaves the products.
    The history holds NaN for a model at the steps after it stopped.

    The arguments are checked once, on entry: a config of the wrong class, seeds that are not
    integers >= 0, labels that are not integers in [0, k), no samples, NaN or inf in X or in the
    teacher logits, or a probe built for other data raise TypeError / ValueError naming the argument.
    """
    check_instance("learner", learner, LearnerConfig)
    check_instance("cfg", cfg, TrainConfig)
    X = np.asarray(X)
    y = np.asarray(y)
    seeds = check_seeds("seeds", seeds)
    if teacher is not None and not isinstance(teacher, torch.Tensor):
        teacher = np.asarray(teacher)
    _check_inputs(X, y, seeds, learner, cfg, teacher, probe)
    augment = augmenter(cfg, X.shape[0], X.shape[1], learner, patch_views)
    t0 = time.perf_counter()
    stack = _Stack(X, seeds, learner, cfg, teacher)
    S, dev, dtype = stack.S, stack.dev, stack.dtype
    y_all = torch.as_tensor(y, device=dev)

    def objective(F, yb, tb):
        return loss_and_grad(cfg.loss, F, yb, tb, cfg.temperature, cfg.label_weight, cfg.group_size, cfg.kd_weight)

    def accuracy(F, yb):
        if cfg.loss in GROUP_LOSSES:  # a group is one model: its argmax is that of the members' mean (or sum)
            G = F.view(F.shape[0] // cfg.group_size, cfg.group_size, *F.shape[1:]).mean(dim=1)
            return (G.argmax(-1) == yb).to(F.dtype).mean(dim=1).repeat_interleave(cfg.group_size)
        return (F.argmax(-1) == yb).to(F.dtype).mean(dim=1)

    tracker = _Tracker(probe, cfg, dev, dtype)
    rules = _StopRules(cfg, S, stack.param)
    hist = {"loss": [], "acc": [], "step_length": []}

    def per_model(values: torch.Tensor, live: np.ndarray) -> np.ndarray:
        """(S,) with ``values`` at the models ``live``, NaN at the others."""
        out = np.full(S, np.nan, dtype=np.float64 if dtype == torch.float64 else np.float32)
        out[live] = values.cpu().numpy()
        return out

    live, live_t = np.arange(S), stack.all
    updates = np.zeros(S, dtype=np.int64)
    batches = _batches(stack.n, cfg.batch_size, cfg.batch_seed)
    bar = tqdm(range(cfg.steps), desc=f"train {learner.mode} x{S}", disable=not progress, leave=False)
    with stack.be.small_ops():  # through the final evaluation: the bits must not depend on the threads
        for t in bar:
            epoch_end, samples = next(batches)
            # 1. the forward pass of the models still training, their loss and gradient
            yb, tb = stack.rows(y_all, samples), stack.teacher_rows(live_t, samples)
            F = stack.forward(live_t, samples)
            loss, dF = objective(F, yb, tb)
            acc = accuracy(F, yb)
            if augment is not None:  # loss, accuracy and fit stay the whole training set's; the gradient is the crops'
                _, dF = objective(stack.forward(live_t, samples, augment(t)), yb, tb)
            hist["loss"].append(per_model(loss, live))
            hist["acc"].append(per_model(acc, live))
            tracker.at_step(t, stack.model)
            grad = stack.backward(live_t, dF, samples)  # before a full-set check below reuses the backend
            # 2. the stop rules. Full-batch GD checks the fit on the step's own forward pass, whatever
            # the stop rule; SGD needs a pass over the whole set, made only where the fit stops training.
            if samples is None or (cfg.stop == "fit" and epoch_end):
                full_acc = hist["acc"][-1] if samples is None else per_model(accuracy(stack.forward(live_t), y_all), live)
                rules.fitted(t, np.nan_to_num(full_acc))
            if cfg.stop == "converge":
                w = cfg.plateau_window
                earlier = hist["loss"][-1 - w] if cfg.plateau > 0 and len(hist["loss"]) > w else None
                rules.converged(t, hist["loss"][-1], earlier)
            rules.keep_snapshots(t, stack.param)
            # 3. the update of the models whose stop rule has not ended them
            going = rules.stop_at[live] > t
            if not going.any():
                break
            live, keep = live[going], torch.as_tensor(np.flatnonzero(going), device=dev)
            if len(keep) < len(going):
                grad = grad.index_select(0, keep)
            live_t = torch.as_tensor(live, device=dev)
            length = stack.update(live_t, grad)
            hist["step_length"].append(per_model(length, live))
            updates[live] += 1
            if progress and t % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.mean()):.3g}", acc=f"{float(acc.mean()):.3f}", training=len(live))

        F = stack.forward(stack.all)
        final_loss, _ = objective(F, y_all, stack.teacher)
        final_acc = accuracy(F, y_all)
        tracker.finish(int(updates.max()), stack.model)
    history = {key: np.stack(v) if v else np.empty((0,)) for key, v in hist.items()}
    history.update(tracker.history())
    return TrainResult(
        model=stack.model,
        fit_step=rules.fit_step,
        updates=updates,
        train_acc=final_acc.cpu().numpy(),
        train_loss=final_loss.cpu().numpy(),
        history=history,
        snapshots=rules.final_snapshots(stack.param, updates),
        wall_s=time.perf_counter() - t0,
    )


class _Tracker:
    """What the probe asks for, recorded every ``track_every`` steps and at the end: Lambda, with
    noise in the probe the noise memorisation, and the correlation matrices at ``corr_at``."""

    def __init__(self, probe, cfg: TrainConfig, dev, dtype):
        self.probe, self.cfg = probe, cfg
        self.steps, self.lambdas, self.memorised, self.corr = [], [], [], {}
        if probe is None:
            return
        self.feats = torch.as_tensor(probe.features).to(device=dev, dtype=dtype)
        self.noise = None if probe.noise is None else torch.as_tensor(probe.noise).to(device=dev, dtype=dtype)
        self.labels = None if probe.labels is None else torch.as_tensor(probe.labels, device=dev)

    def _record(self, t: int, model) -> None:
        W = model.weights
        self.steps.append(t)
        self.lambdas.append(tracking.lambdas(W, self.feats, self.probe.views).cpu().numpy())
        if self.noise is not None:
            self.memorised.append(tracking.noise_memorisation(W, self.noise, self.labels).cpu().numpy())

    def at_step(self, t: int, model) -> None:
        if self.probe is None:
            return
        if t in self.cfg.corr_at:
            self.corr[t] = tracking.correlations(model.weights, self.feats).cpu().numpy()
        if self.cfg.track_every and t % self.cfg.track_every == 0:
            self._record(t, model)

    def finish(self, last: int, model) -> None:
        """The state after the last update (step ``last``), if not recorded yet."""
        if self.probe is None:
            return
        if not self.steps or self.steps[-1] != last:
            self._record(last, model)
        if self.cfg.corr_at:  # asked for correlations: also keep the final matrix
            self.corr.setdefault(last, tracking.correlations(model.weights, self.feats).cpu().numpy())

    def history(self) -> dict:
        stack = lambda v: np.stack(v) if v else np.empty((0,))  # noqa: E731
        return {"step": np.asarray(self.steps, dtype=np.int64), "lambda": stack(self.lambdas),
                "noise_memorisation": stack(self.memorised), "corr": self.corr}
