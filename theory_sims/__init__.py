"""The two-layer learner of Allen-Zhu & Li (arXiv 2012.09816), its trainers and experiments.

* :func:`train` trains S stacked learners (one per seed) with a numba or torch backend.
* :class:`LearnerConfig`, :class:`TrainConfig` say what and how; :class:`Probe` what to track.
* :mod:`theory_sims.losses` states every objective and its gradient.
"""

import os

# OpenBLAS worker threads spin for a while after each matrix product and then fight numba's
# threads for the cores during the elementwise kernels that follow; a short spin (2^4 cycles)
# removes that contention (a step ran 15% faster on 2 cores). It must be set before numpy
# loads OpenBLAS, so it takes effect when theory_sims is imported before numpy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# The same contention comes from torch's OpenMP threads spinning after each small torch op
# (the loss, the logits' sums) while numba and OpenBLAS work: passive waiting made a step of the
# Gaussian experiment 20% faster with the numba backend and 1.9x faster with the torch backend
# on 2 cores. It must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# torch multiplies through MKL; in its strict reproducibility mode a gemm gives the same bits on
# any number of threads, so the numba backend can use MKL's products on all cores and stay
# thread-independent (theory_sims.backends). MKL reads this at its first call.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from theory_sims.config import LearnerConfig, TrainConfig  # noqa: E402
from theory_sims.model import TwoLayerModel, init_model  # noqa: E402
from theory_sims.tracking import LEARNED_THRESHOLD, Probe  # noqa: E402
from theory_sims.train import TrainResult, train  # noqa: E402

__all__ = [
    "LEARNED_THRESHOLD",
    "LearnerConfig",
    "Probe",
    "TrainConfig",
    "TrainResult",
    "TwoLayerModel",
    "init_model",
    "train",
]
