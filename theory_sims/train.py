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


def _check_inputs(X, y, seeds, learner: LearnerConfig, cfg: TrainConfig, teacher):
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n, P, d), got {X.shape}")
    n = X.shape[0]
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if y.min() < 0 or y.max() >= learner.k:
        raise ValueError(f"y must hold labels in [0, {learner.k - 1}] (k={learner.k}), got [{y.min()}, {y.max()}]")
    S = len(seeds)
    if S % cfg.group_size:
        raise ValueError(f"group_size must divide the number of models ({S}), got {cfg.group_size}")
    if cfg.loss in KD_LOSSES:
        if teacher is None:
            raise ValueError(f"teacher logits are required for loss={cfg.loss!r}")
        if teacher.shape not in ((n, learner.k), (S, n, learner.k)):
            raise ValueError(
                f"teacher must have shape ({n}, {learner.k}) or ({S}, {n}, {learner.k}), got {teacher.shape}"
            )
    if cfg.batch_size > n:
        raise ValueError(f"batch_size must be <= n = {n}, got {cfg.batch_size}")
    if cfg.backend == "torch" and cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'cpu': torch reports no CUDA device here")


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
    """
    X = np.asarray(X)
    y = np.asarray(y)
    seeds = tuple(seeds)
    _check_inputs(X, y, seeds, learner, cfg, teacher)
    augment = augmenter(cfg, X.shape[0], X.shape[1], learner, patch_views)
    t0 = time.perf_counter()
    dev, dtype = cfg.device, TORCH_DTYPES[cfg.dtype]
    n, P, d = X.shape
    S, k, m = len(seeds), learner.k, learner.m
    N = S * k * m

    model = init_model(learner, d, seeds, cfg.dtype, dev)
    be = make_backend(cfg.backend, X, dtype, learner.q, learner.varrho, dev, model_cols=k * m)
    y_all = torch.as_tensor(y, device=dev)
    teacher_all = None if teacher is None else torch.as_tensor(teacher).to(device=dev, dtype=dtype) * cfg.teacher_scale

    # What the optimiser moves, and the fixed parts of the non-default modes.
    H0_all = phi_all = None
    if learner.mode == "full":
        param = model.W
    elif learner.mode == "ntk":
        H0_all = be.set_linearisation(model.W.reshape(N, d))
        param = model.delta
    else:
        phi_all = random_features(be.patch_sums(model.W.reshape(N, d)), S)
        model.rf_scale = torch.stack([phi.pow(2).mean().sqrt().clamp(min=1e-30) for phi in phi_all])
        phi_all /= model.rf_scale[:, None, None]
        param = model.U
    velocity = torch.zeros_like(param) if cfg.momentum > 0 else None

    def rows(t: torch.Tensor | None, samples, dim: int = 0):
        """``t`` restricted to the mini-batch ``samples`` along ``dim`` (all of it for None)."""
        if t is None or samples is None:
            return t
        return t.index_select(dim, torch.as_tensor(samples, device=dev))

    def forward(samples, keep=None):
        if phi_all is not None:
            return model.rf_outputs(rows(phi_all, samples, dim=1))
        be.select(samples)
        if keep is not None:
            be.keep_patches(keep)
        return model.outputs(be.patch_sums(param.reshape(N, d)), rows(H0_all, samples))

    def backward(dF, samples):
        if phi_all is not None:
            phi = rows(phi_all, samples, dim=1)
            return torch.stack([dF[s].T @ phi[s] for s in range(S)])
        b = dF.shape[1]
        G = dF.permute(1, 0, 2).unsqueeze(-1).expand(b, S, k, m).reshape(b, N).contiguous()
        return be.grads(G).view(S, k, m, d)

    def objective(F, yb, tb):
        return loss_and_grad(cfg.loss, F, yb, tb, cfg.temperature, cfg.label_weight, cfg.group_size, cfg.kd_weight)

    def accuracy(F, yb):
        if cfg.loss in GROUP_LOSSES:  # a group is one model: its argmax is that of the members' mean (or sum)
            G = F.view(S // cfg.group_size, cfg.group_size, *F.shape[1:]).mean(dim=1)
            return (G.argmax(-1) == yb).to(F.dtype).mean(dim=1).repeat_interleave(cfg.group_size)
        return (F.argmax(-1) == yb).to(F.dtype).mean(dim=1)

    track = probe is not None
    if track:
        feats = torch.as_tensor(probe.features).to(device=dev, dtype=dtype)
        noise = None if probe.noise is None else torch.as_tensor(probe.noise).to(device=dev, dtype=dtype)
        labels = None if probe.labels is None else torch.as_tensor(probe.labels, device=dev)
    hist = {"loss": [], "acc": [], "step_length": [], "step": [], "lambda": [], "noise_memorisation": [], "corr": {}}

    def record(t):
        W = model.weights
        hist["step"].append(t)
        hist["lambda"].append(tracking.lambdas(W, feats, probe.views).cpu().numpy())
        if noise is not None:
            hist["noise_memorisation"].append(tracking.noise_memorisation(W, noise, labels).cpu().numpy())

    active = torch.ones(S, dtype=torch.bool, device=dev)
    fit_step = np.full(S, -1)
    stop_at = np.full(S, cfg.steps)
    updates = np.zeros(S, dtype=np.int64)
    snaps = {mult: [param.detach().clone(), np.full(S, -1)] for mult in cfg.snapshots}
    batches = _batches(n, cfg.batch_size, cfg.batch_seed)
    bar = tqdm(range(cfg.steps), desc=f"train {learner.mode} x{S}", disable=not progress, leave=False)
    with be.small_ops():  # through the final evaluation: the bits must not depend on the threads
        for t in bar:
            epoch_end, samples = next(batches)
            yb = rows(y_all, samples)
            tb = rows(teacher_all, samples, dim=teacher_all.dim() - 2) if teacher_all is not None else None
            F = forward(samples)
            loss, dF = objective(F, yb, tb)
            acc = accuracy(F, yb)
            if augment is not None:  # loss, accuracy and fit stay the whole training set's; the gradient is the crops'
                _, dF = objective(forward(samples, augment(t)), yb, tb)
            hist["loss"].append(loss.cpu().numpy())
            hist["acc"].append(acc.cpu().numpy())
            if track and (t in cfg.corr_at):
                hist["corr"][t] = tracking.correlations(model.weights, feats).cpu().numpy()
            if track and cfg.track_every and t % cfg.track_every == 0:
                record(t)

            grad = backward(dF, samples)  # before a full-set check below reuses the backend
            # Full-batch GD checks the fit on the step's own forward pass, whatever the stop rule;
            # SGD needs a pass over the whole set, made only where the fit stops training.
            if samples is None or (cfg.stop == "fit" and epoch_end):
                full_acc = acc if samples is None else accuracy(forward(None), y_all)
                newly = (full_acc.cpu().numpy() >= 1.0) & (fit_step < 0)
                fit_step[newly] = t
                if cfg.stop == "fit":
                    stop_at[newly] = np.minimum(stop_at[newly], t + cfg.extra_steps)
            if cfg.stop == "converge":
                done = (fit_step >= 0) & (t >= cfg.fit_multiple * fit_step) & (hist["loss"][-1] <= cfg.loss_target)
                stop_at[done] = np.minimum(stop_at[done], t)
            for mult, (kept, at) in snaps.items():  # the weights this step's forward pass used
                due = (fit_step >= 0) & (at < 0) & (t >= mult * fit_step) & (stop_at >= t)
                if due.any():
                    pick = torch.as_tensor(due, device=dev)
                    kept[pick] = param[pick]
                    at[due] = t
            active &= torch.as_tensor(stop_at > t, device=dev)
            if not bool(active.any()):
                break
            step = grad if velocity is None else velocity.mul_(cfg.momentum).add_(grad)
            scale = active.to(dtype)
            length = cfg.lr * _model_norms(step, cfg.group_size)
            hist["step_length"].append(length.cpu().numpy())
            if cfg.max_step > 0:
                scale = scale * torch.clamp(cfg.max_step / length.clamp(min=torch.finfo(dtype).tiny), max=1.0)
            param.sub_(cfg.lr * step * scale.view(S, *([1] * (param.dim() - 1))))
            updates += active.cpu().numpy()
            if progress and t % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.mean()):.3g}", acc=f"{float(acc.mean()):.3f}")

        F = forward(None)
        final_loss, _ = objective(F, y_all, teacher_all)
        final_acc = accuracy(F, y_all)
        if track:
            last = int(updates.max())
            if not hist["step"] or hist["step"][-1] != last:
                record(last)
            if cfg.corr_at:  # asked for correlations: also keep the final matrix
                hist["corr"].setdefault(last, tracking.correlations(model.weights, feats).cpu().numpy())
    history = {
        key: (np.stack(v) if v else np.empty((0,))) if isinstance(v, list) else v for key, v in hist.items()
    }
    history["step"] = np.asarray(hist["step"], dtype=np.int64)
    for kept, at in snaps.values():  # multiples a model never reached: its final parameters
        late = at < 0
        pick = torch.as_tensor(late, device=dev)
        kept[pick] = param[pick]
        at[late] = updates[late]
    return TrainResult(
        model=model,
        fit_step=fit_step,
        updates=updates,
        train_acc=final_acc.cpu().numpy(),
        train_loss=final_loss.cpu().numpy(),
        history=history,
        snapshots={mult: (kept, at) for mult, (kept, at) in snaps.items()},
        wall_s=time.perf_counter() - t0,
    )
