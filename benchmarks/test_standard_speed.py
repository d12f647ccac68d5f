"""The standard learner: 10 seeds as one stack against a Python loop over the seeds.

Run: ``python -m pytest benchmarks/test_standard_speed.py -s``. One run: 10 width-512 MLPs on
the Gaussian grid's input size (2000 x 64, 10 classes), 60 full-batch Adam steps each way (no
early stop: ``max_steps`` caps both and no model fits that early); the summary prints both times
and their ratio.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

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


def test_summary(capsys):
    if set(TIMES) != {"stacked", "loop"}:
        pytest.skip("run the whole file")
    with capsys.disabled():
        print(f"\nstandard learner, {S} seeds x {STEPS} steps: stacked {TIMES['stacked']:.2f} s, loop over seeds "
              f"{TIMES['loop']:.2f} s, loop / stacked = {TIMES['loop'] / TIMES['stacked']:.2f}x")
