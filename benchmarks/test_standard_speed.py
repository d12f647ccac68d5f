"""The standard learner: 10 seeds as one stack against a Python loop over the seeds, and the
CNN's first layer (one product and a backward pass of its own) against plain autograd.

Run: ``python -m pytest benchmarks/test_standard_speed.py -s``. One run: 10 width-512 MLPs on
the Gaussian grid's input size (2000 x 64, 10 classes), 60 full-batch Adam steps each way (no
early stop: ``max_steps`` caps both and no model fits that early); then 10 mean-pooled CNNs of
width 512 on the conv cells' input (2000 samples of 4 patches of 16), 30 Adam steps through
``standard.forward``, through the same formula as plain autograd sees it (``baddbmm``, ``relu_``,
the patches averaged), and through that with the ReLU on the patches' view, as the code was
before. The summary prints the times and their ratios.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from theory_sims import standard

S, STEPS = 10, 60
CFG = standard.StandardConfig(width=512, max_steps=STEPS)
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 1, 64), dtype=np.float32) / 8
    y = rng.integers(0, 10, 2000)  # random labels: nothing fits in 60 steps
    standard.fit(X[:100], y[:100], range(2), 10, standard.StandardConfig(width=512, max_steps=2))  # warm up
    return X, y


@pytest.mark.parametrize("how", ["stacked", "loop"])
def test_ten_seeds(how, data, benchmark):
    X, y = data

    def once():
        t0 = time.perf_counter()
        if how == "stacked":
            standard.fit(X, y, range(S), 10, CFG)
        else:
            for s in range(S):
                standard.fit(X, y, [s], 10, CFG)
        TIMES[how] = time.perf_counter() - t0

    benchmark.pedantic(once, rounds=1, iterations=1)


def autograd_forward(params, X, patches, pool, relu_on_view=False):
    """The CNN's logits through plain autograd: the ReLU on the product, then the patches averaged;
    ``relu_on_view``: the ReLU on the patches' view of it, as ``standard.forward`` did before its
    first layer had a backward pass of its own (autograd then copies the product back through
    the view)."""
    W, b = params[0], params[1]
    h = torch.baddbmm(b, X.expand(W.shape[0], *X.shape), W)
    if relu_on_view:
        h = torch.relu_(h.reshape(W.shape[0], -1, patches, W.shape[-1])).mean(2)
    else:
        h = torch.relu_(h).reshape(W.shape[0], -1, patches, W.shape[-1]).mean(2)
    return torch.baddbmm(params[3], h, params[2])


CNN_STEPS = 30


@pytest.mark.parametrize("how", ["own backward", "autograd", "autograd, relu on the view"])
def test_cnn_steps(how, benchmark):
    standard._keep_freed_memory()  # as fit() runs
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.standard_normal((2000 * 4, 16), dtype=np.float32))
    y = torch.as_tensor(rng.integers(0, 10, 2000))
    forward = {"own backward": standard.forward, "autograd": autograd_forward,
               "autograd, relu on the view": lambda *a: autograd_forward(*a, relu_on_view=True)}[how]
    params = [p.requires_grad_() for p in standard.init_params(range(S), standard.layer_sizes(16, 4, 10, CFG))]
    opt = torch.optim.Adam(params, lr=CFG.adam_lr)

    def step():
        loss = F.cross_entropy(forward(params, X, 4, "mean").reshape(-1, 10), y.repeat(S), reduction="sum") / 2000
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm up

    def once():
        t0 = time.perf_counter()
        for _ in range(CNN_STEPS):
            step()
        TIMES[how] = time.perf_counter() - t0

    benchmark.pedantic(once, rounds=1, iterations=1)


def test_summary(capsys):
    if set(TIMES) != {"stacked", "loop", "own backward", "autograd", "autograd, relu on the view"}:
        pytest.skip("run the whole file")
    with capsys.disabled():
        print(f"\nstandard learner, {S} seeds x {STEPS} steps: stacked {TIMES['stacked']:.2f} s, loop over seeds "
              f"{TIMES['loop']:.2f} s, loop / stacked = {TIMES['loop'] / TIMES['stacked']:.2f}x")
        print(f"the CNN, {S} seeds x {CNN_STEPS} Adam steps: its own backward {TIMES['own backward']:.2f} s, "
              f"plain autograd {TIMES['autograd']:.2f} s ({TIMES['autograd'] / TIMES['own backward']:.2f}x), "
              f"with the ReLU on the patches' view (the code before) {TIMES['autograd, relu on the view']:.2f} s "
              f"({TIMES['autograd, relu on the view'] / TIMES['own backward']:.2f}x)")
