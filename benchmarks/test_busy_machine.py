"""Fewer seeds never cost more than more seeds, even with another process busy on one core.

Run: ``python -m pytest benchmarks/test_busy_machine.py -s``. One run: a competing process spins
on one core for the whole file; with it running, 100 training steps on the KD students' schedule
(lr 200, steps capped at length 4, the default data of ``theory_sims.view_learning``) are timed
for 2, 5 and 10 stacked seeds, and the summary prints the times and their ratios.

Before the numba backend held OpenBLAS to one thread per product, the small per-model products
spun OpenBLAS threads against the numba kernels and the other process: 100 such steps took
22-25 s with 2 seeds and 4.4 s with 5 on a busy 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from theory_sims import train
from theory_sims import view_learning as vl

SEEDS = (2, 5, 10)
STEPS = 100
TIMES: dict[int, float] = {}


@pytest.fixture(scope="module")
def competitor():
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def setup():
    cfg = vl.configure()
    train_set, _ = vl.make_data(cfg)
    schedule = vl.dataclasses.replace(vl.control_config(cfg), steps=STEPS, track_every=0)
    train(train_set.X, train_set.y, range(2), cfg.learner, vl.dataclasses.replace(schedule, steps=2))  # compile
    return train_set, cfg.learner, schedule


@pytest.mark.parametrize("seeds", SEEDS)
def test_students_schedule(seeds, setup, competitor, benchmark):
    train_set, learner, schedule = setup

    def once():
        t0 = time.perf_counter()
        train(train_set.X, train_set.y, range(seeds), learner, schedule)
        TIMES[seeds] = time.perf_counter() - t0

    benchmark.pedantic(once, rounds=1, iterations=1)


def test_summary(capsys):
    if set(TIMES) != set(SEEDS):
        pytest.skip("run the whole file")
    with capsys.disabled():
        print(f"\n{STEPS} steps on the students' schedule, another process busy on one core: "
              + ", ".join(f"{s} seeds {TIMES[s]:.2f} s" for s in SEEDS)
              + f"; 2 / 10 seeds = {TIMES[2] / TIMES[10]:.2f}, 5 / 10 seeds = {TIMES[5] / TIMES[10]:.2f}")
