"""Backends: the two matrix products of a step and the fused elementwise work between them.

A backend holds the training inputs X, flattened to ``(n*P, d)``, and computes for the stacked
first-layer weights ``W`` of shape ``(N, d)`` (N = S*k*m neurons of all models):

* ``patch_sums(W)``: H = sum over patches of sReLU(X W^T), shape ``(n, N)``; with ``D`` given
  (NTK mode), H = sum over patches of D * (X W^T) instead.
* ``grads(G)``: for G = dLoss/dH of shape ``(n, N)``, dLoss/dW = (sReLU'(A) * G)^T X, shape
  ``(N, d)``, where A = X W^T is the pre-activation kept from the last ``patch_sums``.

``NumbaBackend`` runs the elementwise work in the numba kernels of :mod:`theory_sims.kernels`,
reusing one pre-activation buffer in place, and multiplies by one of two paths, chosen once:

* **MKL, strict mode** (the default where it is available). torch's CPU build multiplies through
  Intel MKL; in MKL's strict conditional-numerical-reproducibility mode (``MKL_CBWR=AUTO,STRICT``,
  which ``import theory_sims`` sets before MKL's first call) its gemm gives the same bits on any
  number of threads, on its AVX2 and AVX-512 code branches. A product is then one call on all of
  torch's threads: 270-310 GFLOP/s at the main job's shapes on a 2-core Xeon, where the
  one-thread OpenBLAS blocks below ran at 155-166 (docs/performance.md). :func:`mkl_strict`
  asks MKL whether the mode is on (it is not when MKL_CBWR was set otherwise, when MKL ran before
  theory_sims was imported, on other code branches, or without MKL) and uses it on Intel
  processors only (where it was measured); elsewhere the backend takes the second path.
* **OpenBLAS, one thread per block.** OpenBLAS splits some products (a small output with a long
  inner dimension, e.g. the gradient of a 64-dimensional input) across its threads in an order
  that depends on how many it has. So every product runs with OpenBLAS held to one thread, cut
  into row blocks whose size depends on the product's shape alone (at least ``SMALL_PRODUCT``
  multiply-adds each, never on the number of threads), each block on a thread of a pool (numpy
  releases the GIL), with the patch sums of a forward block fused behind its product while it
  is in cache. Fixed blocks rather than one per thread because whether a row block equals the
  same rows of one whole product depends on the BLAS build. ``THEORY_SIMS_PRODUCTS=openblas``
  forces this path (to compare the two).

Either way a job's bits depend on neither the threads nor the cores (tested for both paths), and
are a pure function of the config on one machine; the two paths agree to float32 rounding, not
bit for bit (tested).

Stacked against alone. When one model's share of a product is below ``SMALL_PRODUCT``
multiply-adds, the backend multiplies model by model, with the very shapes a model trained alone
uses, so a model's bits are those it gets alone (tested). Above it, one stacked product is faster
(for 10 models on an AMD EPYC with OpenBLAS, stacked vs model by model: 124 vs 99 GFLOP/s at the
main job's shape, 165 vs 129 and 173 vs 141 at the benchmark's two sizes), and whether model s's
columns of it are the numbers it gets alone depends on the BLAS: OpenBLAS's float32 Haswell
kernels give a column block other bits beside other columns than alone. There, a model trained in
a stack of 10 ends 20 steps apart from the same seed alone by 1e-6 to 3e-6 (tested as a tolerance).
``TorchBackend`` states the same maths in torch, on CPU or CUDA. Both take and return torch
tensors (zero-copy views for numba) so the trainer is written once.
"""

from __future__ import annotations

import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from theory_sims import kernels
from theory_sims.config import PRODUCTS


def srelu(z: torch.Tensor, q: int, rho: float) -> torch.Tensor:
    """The smoothed ReLU in torch (reference and torch backend)."""
    zc = z.clamp(0.0, rho)
    return zc**q / (q * rho ** (q - 1)) + (z - rho).clamp(min=0.0)


def srelu_grad(z: torch.Tensor, q: int, rho: float) -> torch.Tensor:
    zc = z.clamp(0.0, rho)
    return torch.where(z > 0, (zc / rho) ** (q - 1), torch.zeros_like(z))


# Per-model multiply-adds below which products are done model by model (see module docstring).
SMALL_PRODUCT = 16_000_000


def bf16_product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out = a @ b`` with both factors rounded to bfloat16 (AMX or AVX-512 BF16 units where the
    processor has them) and the result, rounded to bfloat16 too, written into float32 ``out``; on
    one thread, where torch's bfloat16 kernels give the same bits whatever the threads (on 2 they
    split the gradient's long inner dimension and the bits moved)."""
    with torch_threads(1):
        out.copy_(torch.matmul(a if a.dtype == torch.bfloat16 else a.bfloat16(),
                               b if b.dtype == torch.bfloat16 else b.bfloat16()))


class _Backend:
    """What both backends share: the flattened inputs, the current rows, the NTK factor D, and the
    precision of the two products (``products``: 'float32', or 'bfloat16' factors)."""

    def __init__(self, X, P: int, q: int, products: str = "float32"):
        self.X = self.rows = X  # (n*P, d) in the backend's array type
        self.P, self.q = P, int(q)
        self._A = None  # pre-activations of the last patch_sums
        self.D = self._D_all = None  # NTK mode: sReLU'(X W0^T) for the current rows / all rows
        self._D_cols = None  # (neurons, D's columns for them) of the full batch, while they last
        if products not in ("float32", "bfloat16"):  # 'auto' is resolved before: resolve_products
            raise ValueError(f"products must be 'float32' or 'bfloat16', got {products!r}")
        self.products = products
        self._rows_bf16 = None  # (rows, its bfloat16 copy): the rows are a factor of both products

    def rows_bf16(self) -> torch.Tensor:
        """The current rows in bfloat16, converted once per selection of rows."""
        if self._rows_bf16 is None or self._rows_bf16[0] is not self.rows:
            rows = self.rows if isinstance(self.rows, torch.Tensor) else torch.from_numpy(self.rows)
            self._rows_bf16 = (self.rows, rows.bfloat16())
        return self._rows_bf16[1]

    def _row_index(self, samples):
        raise NotImplementedError

    def select(self, samples: np.ndarray | None, neurons: np.ndarray | None = None) -> None:
        """Restrict the next steps to ``samples`` (a mini-batch), or all samples for None, and (NTK
        mode) to the columns ``neurons`` of the fixed factor D, those of the models still training
        (None: all)."""
        if samples is None:
            self.rows, D = self.X, self._D_all
        else:
            rows = self._row_index(samples)
            self.rows = self.X[rows]
            D = None if self._D_all is None else self._D_all[rows]
        if D is None or neurons is None:
            self.D = D
        elif samples is None:  # full batch: the same columns step after step until a model stops
            key = neurons.tobytes()
            if self._D_cols is None or self._D_cols[0] != key:
                self._D_cols = (key, D[:, self._index(neurons)])
            self.D = self._D_cols[1]
        else:
            self.D = D[:, self._index(neurons)]

    def _index(self, index: np.ndarray):
        return index

    def keep_patches(self, keep: np.ndarray) -> None:
        """Zero, in the current rows only (``X`` is untouched), the patches where ``keep`` (n, P)
        is False: an augmented step. The next :meth:`select` brings the whole patches back."""
        mask = np.ascontiguousarray(keep, dtype=bool).reshape(-1)
        if isinstance(self.rows, np.ndarray):
            self.rows = self.rows * mask[:, None].astype(self.rows.dtype)
        else:
            self.rows = self.rows * torch.as_tensor(mask, device=self.rows.device).to(self.rows.dtype)[:, None]


_POOL: ThreadPoolExecutor | None = None
_BLAS = None
TASKS_PER_THREAD = 4


def _threads() -> int:
    """The threads the products may use: numba's (all cores, or what a Dask worker allows)."""
    return min(numba.get_num_threads(), os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int):
    """Hold torch's intra-op threads (and its MKL's) to ``n`` inside the block."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _one_thread_tasks(tasks) -> None:
    """Run every callable of ``tasks`` (each a matrix product and the elementwise work on its
    block) with OpenBLAS held to one thread, side by side on a pool of :func:`_threads` threads."""
    global _POOL, _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    threads = _threads()
    with _BLAS.limit(limits=1, user_api="blas"):
        if len(tasks) == 1 or threads == 1:
            _run_all(tasks)
            return
        if _POOL is None or _POOL._max_workers != threads:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="theory_sims-blas")
        # Many small blocks (a large product cut at SMALL_PRODUCT) go to the pool in runs of
        # consecutive blocks, TASKS_PER_THREAD runs per thread: the same calls, fewer hand-offs.
        runs = min(len(tasks), threads * TASKS_PER_THREAD)
        bounds = [len(tasks) * i // runs for i in range(runs + 1)]
        for f in [_POOL.submit(_run_all, tasks[a:b]) for a, b in zip(bounds, bounds[1:])]:
            f.result()


def _run_all(tasks) -> None:
    for task in tasks:
        task()


def _one_thread_products(products) -> None:
    """``np.matmul(a, b, out=out)`` for every (a, b, out) of ``products``, as :func:`_one_thread_tasks`."""
    _one_thread_tasks([functools.partial(np.matmul, a, b, out=out) for a, b, out in products])


MKL_CBWR_STRICT, MKL_CBWR_AVX2 = 0x10000, 10  # mkl_cbwr_get's strict bit, and its AVX2 branch number


@functools.cache
def mkl_strict() -> bool:
    """Whether torch multiplies through MKL in strict CNR mode on an AVX2 or AVX-512 branch of an
    Intel processor, where MKL's gemm gives the same bits on any number of threads."""
    import ctypes

    if os.environ.get("THEORY_SIMS_PRODUCTS", "") == "openblas" or not _intel_cpu():
        return False
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        setting, branch = lib.mkl_serv_cbwr_get(-1), lib.mkl_serv_cbwr_get_auto_branch()
    except (OSError, AttributeError):
        return False
    return bool(setting & MKL_CBWR_STRICT) and branch >= MKL_CBWR_AVX2


def _intel_cpu() -> bool:
    """MKL on other vendors' processors takes other code paths, where this project has not measured
    whether strict mode holds (the one-thread OpenBLAS blocks were measured on an AMD EPYC)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("vendor_id") and "GenuineIntel" in line for line in f)
    except OSError:
        return False


def _row_blocks(rows: int, macs_per_row: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of at least SMALL_PRODUCT multiply-adds (rounded up to 64 rows),
    fixed by the product's shape alone so that the bits never depend on the threads."""
    size = -(-max(1, SMALL_PRODUCT // max(1, macs_per_row)) // 64) * 64
    return [(a, min(a + size, rows)) for a in range(0, rows, size)]


class NumbaBackend(_Backend):
    name = "numba"

    def __init__(self, X: np.ndarray, dtype: torch.dtype, q: int, rho: float, model_cols: int | None = None,
                 products: str = "float32"):
        n, P, d = X.shape
        self.np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        super().__init__(np.ascontiguousarray(X.reshape(n * P, d), dtype=self.np_dtype), P, q, products)
        self.d = d
        self.model_cols = model_cols  # neurons per model (k*m); None: never split by model
        self.rho = kernels.as_rho(rho, self.np_dtype)
        self.mkl = mkl_strict()  # products through torch's MKL (strict CNR), else one-thread OpenBLAS blocks
        self.threads = torch.get_num_threads()  # what the products use, inside small_ops() too

    def _row_index(self, samples):
        return (samples[:, None] * self.P + np.arange(self.P)).ravel()

    def small_ops(self):
        """The context of a training loop: torch's own ops on the small arrays between the products
        (losses, logits, the update) on one thread, where waking a second one costs more than the op
        (on 2 cores: exp of 10 x 150 x 10 logits 80 us on 2 threads, 3 us on one; the squared norm
        of 10 models' weights 205 vs 37 us), and whose reductions then sum in one order whatever
        the threads; the products keep the threads torch had when the backend was made."""
        return torch_threads(1)

    def set_linearisation(self, W0: torch.Tensor) -> torch.Tensor:
        """NTK mode: fix D = sReLU'(X W0^T) and return F0's per-neuron sums, sum_p sReLU(X W0^T)."""
        H0 = self.patch_sums(W0)
        D = self._A.copy()
        kernels.srelu_grad_inplace(D, self.q, self.rho)
        self._D_all = self.D = D
        return H0

    def _buffer(self, rows: int, N: int) -> np.ndarray:
        if self._A is None or self._A.shape != (rows, N):
            self._A = np.empty((rows, N), dtype=self.np_dtype)
        return self._A

    def _split(self, N: int) -> int:
        """Models in a product of N neuron columns to multiply one by one (1: one product)."""
        c = self.model_cols
        if c is None or N == c or c * self.d * self.rows.shape[0] >= SMALL_PRODUCT:
            return 1
        return N // c

    def _products(self, products) -> None:
        """``out = a @ b`` for every (a, b, out): through MKL one after the other (each on all of
        torch's threads), or as :func:`_one_thread_products`."""
        if self.products == "bfloat16":
            for a, b, out in products:
                a = self.rows_bf16() if self._is_rows(a) else torch.from_numpy(a)
                b = self.rows_bf16() if self._is_rows(b) else torch.from_numpy(b)
                bf16_product(a, b, torch.from_numpy(out))
            return
        if not self.mkl:
            _one_thread_products(products)
            return
        with torch_threads(self.threads):
            for a, b, out in products:
                torch.matmul(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))

    def _is_rows(self, x: np.ndarray) -> bool:
        """Whether ``x`` is the current rows themselves (a whole-range view of them counts)."""
        return x.shape == self.rows.shape and x.ctypes.data == self.rows.ctypes.data and x.strides == self.rows.strides

    def _blocks(self, rows: int, macs_per_row: int) -> list[tuple[int, int]]:
        return [(0, rows)] if self.mkl or self.products == "bfloat16" else _row_blocks(rows, macs_per_row)

    def patch_sums(self, W: torch.Tensor) -> torch.Tensor:
        w = W.detach().numpy()
        P = self.P
        n = self.rows.shape[0] // P
        A = self._buffer(self.rows.shape[0], w.shape[0])
        H = np.empty((n, w.shape[0]), dtype=self.np_dtype)
        S = self._split(w.shape[0])
        if S == 1 and self.D is None and not self.mkl and self.products == "float32":
            # Each row block's product, then the patch sums of the samples wholly inside it, on
            # the same thread while the block is in cache; a sample split by a block edge after.
            rows, d = self.rows.shape
            blocks = _row_blocks(rows, d * w.shape[0])

            def task(a, b):
                np.matmul(self.rows[a:b], w.T, out=A[a:b])
                kernels.patch_sums_range(A, P, self.q, self.rho, H, -(-a // P), b // P)

            _one_thread_tasks([functools.partial(task, a, b) for a, b in blocks])
            for a, _ in blocks:
                if a % P:
                    kernels.patch_sums_range(A, P, self.q, self.rho, H, a // P, a // P + 1)
            return torch.from_numpy(H)
        if S == 1:
            rows, d = self.rows.shape
            self._products([(self.rows[a:b], w.T, A[a:b]) for a, b in self._blocks(rows, d * w.shape[0])])
        else:
            c = self.model_cols
            self._products([(self.rows, w[s * c : (s + 1) * c].T, A[:, s * c : (s + 1) * c]) for s in range(S)])
        if self.D is None:
            kernels.patch_sums(A, P, self.q, self.rho, H)
        else:
            kernels.linear_patch_sums(A, self.D, P, H)
        return torch.from_numpy(H)

    def grads(self, G: torch.Tensor) -> torch.Tensor:
        A, g = self._A, np.ascontiguousarray(G.numpy())
        N, (K, d) = A.shape[1], self.rows.shape
        out = np.empty((N, d), dtype=self.np_dtype)
        S = self._split(N)
        if S == 1:
            blocks = self._blocks(N, K * d)
        else:
            c = self.model_cols
            blocks = [(s * c, (s + 1) * c) for s in range(S)]
        if self.D is None:
            kernels.patch_grads(A, g, self.P, self.q, self.rho)
        else:
            kernels.linear_patch_grads(A, self.D, g, self.P)
        self._products([(A[:, a:b].T, self.rows, out[a:b]) for a, b in blocks])
        return torch.from_numpy(out)


class TorchBackend(_Backend):
    name = "torch"

    def __init__(self, X: np.ndarray, dtype: torch.dtype, q: int, rho: float, device: str = "cpu",
                 products: str = "float32"):
        n, P, d = X.shape
        super().__init__(torch.as_tensor(X.reshape(n * P, d)).to(device=device, dtype=dtype), P, q, products)
        self.rho = float(rho)

    def small_ops(self):
        """Torch's threads as they are: here the products are torch ops too."""
        return contextlib.nullcontext()

    def _index(self, index: np.ndarray):
        return torch.as_tensor(index, device=self.X.device)

    def _row_index(self, samples):
        idx = torch.as_tensor(samples, device=self.X.device)
        return (idx[:, None] * self.P + torch.arange(self.P, device=self.X.device)).reshape(-1)

    def set_linearisation(self, W0: torch.Tensor) -> torch.Tensor:
        H0 = self.patch_sums(W0)
        self._D_all = self.D = srelu_grad(self._A, self.q, self.rho)
        return H0

    def _product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.products == "float32":
            return a @ b
        out = torch.empty(a.shape[0], b.shape[1], dtype=self.X.dtype, device=self.X.device)
        bf16_product(self.rows_bf16() if a is self.rows else a, self.rows_bf16() if b is self.rows else b, out)
        return out

    def patch_sums(self, W: torch.Tensor) -> torch.Tensor:
        self._A = A = self._product(self.rows, W.T)
        n = A.shape[0] // self.P
        act = srelu(A, self.q, self.rho) if self.D is None else self.D * A
        return act.view(n, self.P, -1).sum(dim=1)

    def grads(self, G: torch.Tensor) -> torch.Tensor:
        n = G.shape[0]
        jac = srelu_grad(self._A, self.q, self.rho) if self.D is None else self.D
        dA = jac.view(n, self.P, -1) * G.unsqueeze(1)
        return self._product(dA.view(n * self.P, -1).T, self.rows)


@functools.cache
def has_amx_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in AMX tiles (Linux's ``amx_bf16`` flag), where the
    bfloat16 products are 2-4x faster than float32 (docs/performance.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


def resolve_products(products: str, backend: str = "numba", dtype: str = "float32") -> str:
    """The products a config's ``products`` means here: 'auto' is 'bfloat16' on the numba backend
    in float32 where the CPU has AMX-BF16 (:func:`has_amx_bf16`), 'float32' elsewhere (on a GPU
    too: its TF32 has not been measured against the verdicts); the others are themselves."""
    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {', '.join(PRODUCTS)}, got {products!r}")
    if products != "auto":
        return products
    return "bfloat16" if backend == "numba" and dtype == "float32" and has_amx_bf16() else "float32"


def make_backend(name: str, X: np.ndarray, dtype: torch.dtype, q: int, rho: float, device: str = "cpu",
                 model_cols: int | None = None, products: str = "float32"):
    if name == "numba":
        return NumbaBackend(X, dtype, q, rho, model_cols, resolve_products(products, name, str(dtype).removeprefix("torch.")))
    return TorchBackend(X, dtype, q, rho, device, resolve_products(products, name))
