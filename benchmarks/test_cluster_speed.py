"""The Gaussian grid's ``--quick`` on a local Dask cluster of 2 workers against ``--cluster serial``.

Run: ``python -m pytest benchmarks/test_cluster_speed.py -s`` (one run each, in the same session,
alternating order is not needed: each is a whole command of about a minute). Reported: the wall
time of each as a subprocess (imports, cluster start-up and numba's first compile included, as a
user sees them) and their ratio. Both write a fresh run folder; their results are checked equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

COMMAND = [sys.executable, "-m", "theory_sims.gaussian_negative", "--quick", "--quiet", "--no-figures"]
WALL: dict[str, float] = {}


def cells(out) -> list[dict]:
    res = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in c.items() if k != "wall_s"} for c in res["cells"]]


@pytest.mark.parametrize("where", [["--cluster", "serial"], ["--cluster", "local", "--workers", "2"]],
                         ids=["serial", "local-2"])
def test_gaussian_quick(where, tmp_path, benchmark):
    out = tmp_path / "run"

    def once():
        t0 = time.perf_counter()
        subprocess.run(COMMAND + where + ["--out", str(out)], check=True, capture_output=True)
        WALL[where[1]] = time.perf_counter() - t0

    benchmark.pedantic(once, rounds=1, iterations=1)
    WALL[where[1] + "_cells"] = cells(out)


def test_summary(capsys):
    if "serial" not in WALL or "local" not in WALL:
        pytest.skip("run the whole file")
    assert WALL["serial_cells"] == WALL["local_cells"]
    with capsys.disabled():
        print(f"\ngaussian_negative --quick: serial {WALL['serial']:.1f} s, local cluster of 2 workers "
              f"{WALL['local']:.1f} s, serial / local = {WALL['serial'] / WALL['local']:.2f}x")
