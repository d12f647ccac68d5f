"""Speed of a training step (pytest-benchmark), with the ratios the README quotes.

Run: ``python -m pytest benchmarks/test_trainer_speed.py`` (the summary prints at the end; add
``--benchmark-json out.json`` for the raw timings). Everything is measured in one run:

* the machine's float32 matrix-product rate (a 2048^3 product, numpy/OpenBLAS and torch/MKL: the faster);
* a full-batch step of the numba backend for 1 and 10 stacked models, at the default size, a
  larger one and the view-learning job's shapes, as achieved GFLOP/s (2 products of 2*n*P*d*N flops each, N = S*k*m);
* the same step on the torch backend (CPU), and a straightforward PyTorch autograd
  implementation that trains the models one at a time (what public code for this theory does);
* the numba step with bfloat16 products (``TrainConfig.products``), against float32;
* a stack whose models stop at different steps (the probe regime's single models: varrho 2, lr
  100, to 3x their fit step), against the same stack run to its slowest model with every model
  in the products (what the trainer did before a stopped model left the stack).

Step times: for the trainers, (time of ``train(..., steps=10)`` - time of ``train(..., steps=0)``) / 10,
so that setup and the final evaluation pass are not counted; for autograd, the training loop's
time divided by its steps.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as theory_sims sets it; before numpy loads

import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from theory_sims import LearnerConfig, TrainConfig, train  # noqa: E402
from theory_sims.backends import srelu  # noqa: E402

SIZES = {
    # the regime of shared/DESIGN.md: k = 10, m = 5, q = 3, n = 600, P = 50, d = 500
    "default": dict(n=600, P=50, d=500, m=5, q=3),
    "large": dict(n=2000, P=50, d=1000, m=5, q=3),
    # the view-learning job's defaults (theory_sims.view_learning: the regime search's shapes)
    "main job": dict(n=150, P=32, d=640, m=3, q=5),
}
K, STEPS = 10, 10
RESULTS: dict = {}


def flops_per_step(n, P, d, m, q, S):
    return 2 * (2 * n * P * d * S * K * m)


def data(n, P, d, **_):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, P, d), dtype=np.float32) * 0.05, rng.integers(0, K, n)


def run_train(X, y, S, backend, m, q, steps=STEPS, products="float32"):
    cfg = TrainConfig(lr=1.0, steps=steps, track_every=0, backend=backend, products=products)
    train(X, y, range(S), LearnerConfig(k=K, m=m, q=q), cfg)


def setup_time(X, y, S, backend, m, q, rounds=3):
    """Time of a train() call that takes no step: what the step time must not include."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        run_train(X, y, S, backend, m, q, steps=0)
        best = min(best, time.perf_counter() - t0)
    return best


def autograd_train(X, y, S, m, q, steps=STEPS, rho=1.0, lr=1.0):
    """Straightforward autograd training, one model after the other."""
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n, P, d = X.shape
    for seed in range(S):
        W = (torch.randn(K * m, d, generator=torch.Generator().manual_seed(seed)) * 0.05).requires_grad_(True)
        for _ in range(steps):
            A = Xt.reshape(n * P, d) @ W.T
            F = srelu(A, q, rho).view(n, P, K, m).sum(dim=(1, 3))
            loss = torch.nn.functional.cross_entropy(F, yt)
            loss.backward()
            with torch.no_grad():
                W -= lr * W.grad
                W.grad = None


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_matmul_rate(benchmark, library):
    """numpy's OpenBLAS and torch's MKL (strict CNR mode, as theory_sims sets it): the machine's
    float32 product rate is the faster of the two."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    fn = np.matmul if library == "numpy" else torch.matmul
    if library == "torch":
        a, b = torch.from_numpy(a), torch.from_numpy(b)
    benchmark.pedantic(fn, args=(a, b), rounds=10, iterations=1, warmup_rounds=2)
    RESULTS[("matmul", library)] = 2 * 2048**3 / benchmark.stats.stats.min / 1e9
    RESULTS["matmul_gflops"] = max(RESULTS.get("matmul_gflops", 0.0), RESULTS[("matmul", library)])


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("S", [1, 10])
@pytest.mark.parametrize("impl", ["numba", "numba-bf16", "torch", "autograd"])
def test_step(benchmark, impl, S, size):
    if impl == "autograd" and size == "large" and S == 10:
        S_run = 2  # one model after the other: time 2 and scale, to keep the run short
    else:
        S_run = S
    X, y = data(**SIZES[size])
    m, q = SIZES[size]["m"], SIZES[size]["q"]
    backend, products = ("numba", "bfloat16") if impl == "numba-bf16" else (impl, "float32")
    fn = autograd_train if impl == "autograd" else (lambda *a: run_train(*a[:3], backend, *a[3:], products=products))
    fn(X[:8], y[:8], S_run, m, q)  # warm-up: numba compilation, allocator
    rounds = 1 if size == "large" else 3
    benchmark.pedantic(fn, args=(X, y, S_run, m, q), rounds=rounds, iterations=1)
    setup = 0.0 if impl == "autograd" else setup_time(X, y, S_run, backend, m, q)
    step = (benchmark.stats.stats.min - setup) / STEPS * S / S_run
    RESULTS[(impl, S, size)] = step
    benchmark.extra_info["step_s"] = step
    benchmark.extra_info["gflops"] = flops_per_step(**SIZES[size], S=S) / step / 1e9


def test_staggered_stops(benchmark):
    """The probe regime's 10 single models (fit at different steps, each run to 3x its fit step and
    a loss of 0.01) with stopped models leaving the stack, against the same stack run to the slowest
    model's last step with all ten in the products (the trainer before, same updates)."""
    from theory_sims import view_learning as vl

    cfg = vl.configure(data={"noise_std": 0.0395}, learner={"varrho": 2.0})
    data, _ = vl.make_data(cfg)
    tc = vl.dataclasses.replace(cfg.train, lr=100.0, snapshots=(), track_every=0)
    result = {}

    def staggered():
        result["r"] = train(data.X, data.y, range(10), cfg.learner, tc)

    benchmark.pedantic(staggered, rounds=1, iterations=1)
    updates = result["r"].updates
    t0 = time.perf_counter()
    train(data.X, data.y, range(10), cfg.learner, vl.dataclasses.replace(tc, stop="steps", steps=int(updates.max())))
    RESULTS["staggered"] = (benchmark.stats.stats.min, time.perf_counter() - t0, updates.sum() / (10 * updates.max()))


def test_summary(capsys):
    """Print the table the README quotes: rates and ratios from this one run."""
    if ("matmul", "torch") not in RESULTS or len(RESULTS) < 4 + 8 * len(SIZES):
        pytest.skip("run the whole module to get the summary")
    mm = RESULTS["matmul_gflops"]
    lines = [f"float32 matrix product (2048^3): numpy/OpenBLAS {RESULTS[('matmul', 'numpy')]:.0f}, "
             f"torch/MKL {RESULTS[('matmul', 'torch')]:.0f} GFLOP/s; the step's share is of the faster, {mm:.0f}"]
    for size in sorted(SIZES):
        for S in (1, 10):
            fl = flops_per_step(**SIZES[size], S=S)
            nb, th, ag = (RESULTS[(i, S, size)] for i in ("numba", "torch", "autograd"))
            lines.append(
                f"{size:8s} S={S:2d}: numba step {nb * 1e3:8.1f} ms = {fl / nb / 1e9:5.0f} GFLOP/s "
                f"({fl / nb / 1e9 / mm:4.0%} of matmul) | torch {th * 1e3:8.1f} ms | "
                f"autograd one-by-one {ag * 1e3:8.1f} ms = {ag / nb:4.1f}x numba"
            )
        lines.append(
            f"{size:8s} 10 stacked / 1 model (numba): {RESULTS[('numba', 10, size)] / RESULTS[('numba', 1, size)]:.2f}x; "
            "bfloat16 / float32 products, 1 and 10 models: " + ", ".join(
                f"{RESULTS[('numba-bf16', S, size)] / RESULTS[('numba', S, size)]:.2f}x" for S in (1, 10)))
    alone, full, share = RESULTS["staggered"]
    lines.append(f"probe regime's 10 single models (stops spread): {alone:.1f} s with stopped models leaving the stack, "
                 f"{full:.1f} s with all in it to the last step ({alone / full:.2f}x; the model-steps that train: "
                 f"{share:.0%})")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
