"""The standard learner of the Gaussian grid: an over-parameterised ReLU network trained to fit.

The paper's negative results (Figure 4) are about networks that fit their training data. The
theory's learner (a sum of ReLUs with fixed positive output weights and no bias) under-fits the
harder teachers, and seeds that under-fit differently are what an ensemble repairs; so the grid's
default learner is the kind of network a practitioner would train on such data:

* vector inputs (one patch): an MLP, ``depth`` hidden ReLU layers of ``width`` units with biases,
  and a linear read-out with trained signed weights and biases;
* patched inputs (the conv teacher's, and the multi-view data's): a small CNN, one layer of
  ``width`` filters shared over the P patches (a convolution whose stride is the patch), ReLU,
  then the patches' features pooled: ``pool="mean"`` averages each filter over the patches
  (global average pooling, as the conv teacher does; the read-out cannot tell where in the input
  a feature was), ``pool="concat"`` concatenates them (``width * P`` features, a read-out weight
  per position); then ``depth - 1`` hidden ReLU layers and the read-out. On multi-view data,
  where a view may sit in any of the feature patches, only the pooled CNN generalises: the
  concatenating one tests at chance there.

Every layer starts as PyTorch's ``nn.Linear`` does (weights and biases uniform in
+-1/sqrt(fan_in)), drawn for model s from ``torch.Generator().manual_seed(seeds[s])`` alone.
Training is full-batch Adam on the mean cross-entropy. **The fit rule:** a model stops at the
first step whose forward pass classifies every training sample as labelled (100% training
accuracy on the labels it is given, flipped ones included), or after ``max_steps``; its weights
are those of that step. All seeds train as one stack (batched matrix products; Adam acts element
by element and each model's loss only reaches its own weights), so a model trained in a stack
follows the run it has alone up to float32 round-off of the batched products (tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from multiview.checks import check_choice, check_float, check_int
from multiview.cli import param

POOLS = ("mean", "concat")


@dataclass(frozen=True)
class StandardConfig:
    """The standard learner and its training; serialised with the grid's config."""

    width: int = param("hidden units of every layer (the CNN: filters per patch)", 512)
    depth: int = param("hidden layers (the CNN's filter layer counts as one)", 1)
    adam_lr: float = param("learning rate of full-batch Adam", 3e-3)
    max_steps: int = param("most Adam steps; a model stops at its first step that fits every training sample", 2000)
    pool: str = param("how the CNN reads its patches' features: 'mean' averages each filter over the patches (global "
                      "average pooling, as the conv teacher does), 'concat' concatenates them (a read-out weight per "
                      "position)", "mean")

    def __post_init__(self):
        check_choice("pool", self.pool, POOLS)
        check_int("width", self.width, 1)
        check_int("depth", self.depth, 1)
        check_float("adam_lr", self.adam_lr, 0.0, lo_open=True)
        check_int("max_steps", self.max_steps, 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StandardResult:
    """A trained stack: ``params`` (weights and biases, each (S, ...)), whether it is a CNN over
    ``patches`` patches and how it pools them (``pool``), and per model the first step with 100%
    training accuracy (-1 if none within ``max_steps``), its final training accuracy and loss."""

    params: list
    patches: int
    pool: str
    fit_step: np.ndarray
    train_acc: np.ndarray
    train_loss: np.ndarray

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Outputs of every model on inputs X (n, P, d): float numpy array (S, n, k)."""
        with torch.no_grad():
            return forward(self.params, _inputs(X, self.patches), self.patches, self.pool).numpy()


def _inputs(X: np.ndarray, patches: int) -> torch.Tensor:
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    n = X.shape[0]
    return X.reshape(n * patches, -1) if patches > 1 else X.reshape(n, -1)


def layer_sizes(in_dim: int, patches: int, k: int, cfg: StandardConfig) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every layer; with ``patches`` > 1 the first acts on one patch (``width``
    filters) and the next sees the patches' features pooled (``width`` of them with ``cfg.pool``
    'mean', ``width * patches`` with 'concat')."""
    sizes = [(in_dim, cfg.width)]
    hidden = cfg.width * patches if cfg.pool == "concat" else cfg.width
    for _ in range(cfg.depth - 1):
        sizes.append((hidden, cfg.width))
        hidden = cfg.width
    return sizes + [(hidden, k)]


def init_params(seeds, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Weights (S, fan_in, fan_out) and biases (S, 1, fan_out) of every layer, model s drawn from
    its own generator seeded by ``seeds[s]`` (so a model's init does not depend on its stack)."""
    per_model = []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        layers = []
        for fan_in, fan_out in sizes:
            bound = fan_in ** -0.5
            layers.append((torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound)
            layers.append((torch.rand(1, fan_out, generator=g) * 2 - 1) * bound)
        per_model.append(layers)
    return [torch.stack(ts) for ts in zip(*per_model)]


class _PatchFilters(torch.autograd.Function):
    """The CNN's filters on every patch for every model of a stack, ReLU, and the patches'
    features pooled, as one matrix product and a backward pass of our own.

    All models read the same patches, so their filters (with the biases as one more input row,
    the patches given a column of ones) side by side make one product, (n P, d + 1) by
    (d + 1, S w); its rows stay in (sample, patch) order, so pooling a sample's patches reads
    neighbouring rows. The backward pass needs the gradient only where a unit was on (the saved
    activations' sign) and one product back, (d + 1, n P) by (n P, S w), for the weights and
    biases at once. On the conv cells' CNN (width 512, 2000 samples of 4 patches, 10 models) an
    Adam step through plain autograd (``baddbmm``, ``relu_``, the patches averaged) took 1.4 times
    as long, and 2.1 times with the ReLU on the patches' view, as this module did before
    (``benchmarks/test_standard_speed.py``); the MLP's single patch gains nothing and keeps the
    plain path. The gradients are autograd's of the plain formula (tested in float64)."""

    @staticmethod
    def forward(ctx, X, W, b, patches: int, pool: str):
        S, d, w = W.shape
        Xa = torch.cat([X, X.new_ones(X.shape[0], 1)], 1)
        h = (Xa @ torch.cat([W, b], 1).permute(1, 0, 2).reshape(d + 1, S * w)).clamp_min_(0)
        ctx.save_for_backward(Xa, h)
        ctx.shape = S, d, w, patches, pool
        h = h.view(-1, patches, S, w)  # (sample, patch, model, unit)
        pooled = h.mean(1) if pool == "mean" else h.permute(0, 2, 1, 3).reshape(-1, S, patches * w)
        return pooled.transpose(0, 1)  # (S, n, features)

    @staticmethod
    def backward(ctx, grad):
        Xa, h = ctx.saved_tensors
        S, d, w, patches, pool = ctx.shape
        grad = grad.transpose(0, 1)  # (n, S, features)
        if pool == "mean":
            grad = (grad / patches).unsqueeze(1)
        else:
            grad = grad.reshape(-1, S, patches, w).transpose(1, 2)
        dh = torch.sign(h)  # the activations are >= 0: 1 where a unit was on, else 0
        dh.view(-1, patches, S, w).mul_(grad)
        dWb = (Xa.t() @ dh).view(d + 1, S, w).transpose(0, 1)
        return None, dWb[:, :d], dWb[:, d:], None, None


def forward(params: list[torch.Tensor], X: torch.Tensor, patches: int, pool: str) -> torch.Tensor:
    """Logits (S, n, k) of the stack on flattened inputs X: (n, D), or (n * patches, d) for a CNN
    whose patches' features are pooled by ``pool`` ('mean' or 'concat')."""
    if patches > 1:
        h, first = _PatchFilters.apply(X, params[0], params[1], patches, pool), 2
    else:
        h, first = X.expand(params[0].shape[0], *X.shape), 0
    for i in range(first, len(params), 2):
        h = torch.baddbmm(params[i + 1], h, params[i])  # b + h @ W, the bias added by the product itself
        if i + 2 < len(params):
            h = torch.relu_(h)
    return h


_MALLOC_TUNED = False


def _keep_freed_memory() -> None:
    """Let glibc keep freed blocks of up to 1 GiB for reuse instead of returning them to the system.

    Every step allocates and frees activations of tens of MB; by default glibc maps each one
    afresh and the kernel zeroes its pages, which cost as much system time as the products' user
    time (a step at width 512: 65 ms, 38 ms with this; ``MALLOC_MMAP_THRESHOLD_`` does the same
    from the environment). Elsewhere than glibc this does nothing."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def fit(X: np.ndarray, y: np.ndarray, seeds, k: int, cfg: StandardConfig = StandardConfig()) -> StandardResult:
    """Train one standard learner per seed on inputs X (n, P, d) and labels y, stacked, each
    until it fits its training set (see the module docstring)."""
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one model")
    _keep_freed_memory()
    n, P, d = np.asarray(X).shape
    patches = P
    Xt = _inputs(X, patches)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    params = [p.requires_grad_() for p in init_params(seeds, layer_sizes(d, P, k, cfg))]
    opt = torch.optim.Adam(params, lr=cfg.adam_lr)
    S = len(seeds)
    fit_step = np.full(S, -1)
    kept: list[list[torch.Tensor] | None] = [None] * S
    for step in range(cfg.max_steps + 1):
        out = forward(params, Xt, patches, cfg.pool)
        acc = (out.argmax(-1) == yt).float().mean(-1)
        for s in np.flatnonzero((acc == 1.0).numpy() & (fit_step < 0)):
            fit_step[s] = step
            kept[s] = [p[s].detach().clone() for p in params]
        if (fit_step >= 0).all() or step == cfg.max_steps:
            break
        # the sum of the models' mean losses: each model's gradient is that of its own loss
        loss = F.cross_entropy(out.reshape(-1, k), yt.repeat(S), reduction="sum") / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    final = [p.detach().clone() for p in params]
    for s, snapshot in enumerate(kept):
        if snapshot is not None:
            for p, v in zip(final, snapshot):
                p[s] = v
    with torch.no_grad():
        out = forward(final, Xt, patches, cfg.pool)
        losses = F.cross_entropy(out.permute(0, 2, 1), yt.expand(S, n), reduction="none").mean(-1)
        train_acc = (out.argmax(-1) == yt).float().mean(-1)
    return StandardResult(final, patches, cfg.pool, fit_step, train_acc.numpy(), losses.numpy())
