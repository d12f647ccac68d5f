"""Numba kernels for the elementwise work between the two matrix products of a training step.

Layout. The pre-activations of all S stacked models are one matrix ``A = X W^T`` of shape
``(n*P, N)`` with ``N = S*k*m``: row ``b*P + p`` is patch p of sample b, column
``(s*k + i)*m + r`` is neuron r of class i of model s. The kernels

* ``patch_sums``:   H[b, c] = sum_p sReLU(A[b*P + p, c])        (forward)
* ``patch_grads``:  A[row, c] <- sReLU'(A[row, c]) * G[b, c]       (backward, in place)

and ``patch_sums_range``, the forward's numbers for a range of samples only, serial and without
the GIL, so that a thread can run it on the rows of A its block of the matrix product has just
written, while they are still in cache (the same fusion in the backward, a block of neuron
columns before its gradient product, was measured slower: strided rows, and no parallel loop);

and, for the model linearised around its initialisation (NTK mode), with D = sReLU'(X W0^T),

* ``linear_patch_sums``:  H[b, c] = sum_p D[row, c] * A[row, c]
* ``linear_patch_grads``: A[row, c] <- D[row, c] * G[b, c]

The activation is written branch-free, sReLU(z) = min(max(z, 0), rho)^q / (q rho^(q-1)) +
max(z - rho, 0), so that the inner loop over c vectorises. Every kernel works in the dtype of
its arrays (float32 or float64); ``rho`` must be given in that dtype.
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit, prange


@njit(inline="always")
def _ipow(x, e):
    out = x * 0 + 1
    for _ in range(e):
        out *= x
    return out


@njit(inline="always")
def srelu(z, q, rho, inv_q_rho):
    """z^q / (q rho^(q-1)) on [0, rho], z - (1 - 1/q) rho above, 0 below; inv_q_rho = 1/(q rho^(q-1))."""
    zc = min(max(z, z * 0), rho)
    return _ipow(zc, q) * inv_q_rho + max(z - rho, z * 0)


@njit(inline="always")
def srelu_grad(z, q, rho, inv_rho):
    """(z / rho)^(q-1) on [0, rho], 1 above, 0 at and below 0."""
    zc = min(max(z, z * 0), rho)
    g = _ipow(zc * inv_rho, q - 1)
    return g if z > 0 else z * 0


# Integer powers are computed by repeated multiplication. With the exponent known when a kernel
# is compiled, its loop unrolls and the loop over neurons vectorises (about 4x faster than with a
# runtime exponent, measured at the default size); the numbers are the same either way. So each
# kernel picks, once per call, a copy compiled for its q (literal_unroll compiles one per value of
# SPECIALISED_Q); other q run the general loop.
SPECIALISED_Q = (1, 2, 3, 4, 5, 6, 7, 8)


@njit(inline="always")
def _patch_sums(A, P, q, rho, out, b0, b1):
    N = out.shape[1]
    inv_q_rho = rho / (rho * 0 + q) / _ipow(rho, q)
    for b in prange(b0, b1):
        for c in range(N):
            out[b, c] = 0
        for p in range(P):
            row = b * P + p
            for c in range(N):
                out[b, c] += srelu(A[row, c], q, rho, inv_q_rho)


@njit(parallel=True, cache=True)
def patch_sums(A, P, q, rho, out):
    done = False
    for Q in literal_unroll(SPECIALISED_Q):
        if not done and q == Q:
            _patch_sums(A, P, Q, rho, out, 0, out.shape[0])
            done = True
    if not done:
        _patch_sums(A, P, q, rho, out, 0, out.shape[0])


@njit(nogil=True, cache=True)
def patch_sums_range(A, P, q, rho, out, b0, b1):
    """``patch_sums`` for samples b0 <= b < b1 only, on the calling thread (GIL released): what a
    worker runs on the rows of A its product just wrote. Same numbers as ``patch_sums``."""
    done = False
    for Q in literal_unroll(SPECIALISED_Q):
        if not done and q == Q:
            _patch_sums(A, P, Q, rho, out, b0, b1)
            done = True
    if not done:
        _patch_sums(A, P, q, rho, out, b0, b1)


@njit(inline="always")
def _patch_grads(A, G, P, q, rho):
    n, N = G.shape
    inv_rho = 1 / rho
    for row in prange(n * P):
        b = row // P
        for c in range(N):
            A[row, c] = srelu_grad(A[row, c], q, rho, inv_rho) * G[b, c]


@njit(parallel=True, cache=True)
def patch_grads(A, G, P, q, rho):
    done = False
    for Q in literal_unroll(SPECIALISED_Q):
        if not done and q == Q:
            _patch_grads(A, G, P, Q, rho)
            done = True
    if not done:
        _patch_grads(A, G, P, q, rho)


@njit(parallel=True, cache=True)
def linear_patch_sums(A, D, P, out):
    n, N = out.shape
    for b in prange(n):
        for c in range(N):
            out[b, c] = 0
        for p in range(P):
            row = b * P + p
            for c in range(N):
                out[b, c] += D[row, c] * A[row, c]


@njit(parallel=True, cache=True)
def linear_patch_grads(A, D, G, P):
    n, N = G.shape
    for row in prange(n * P):
        b = row // P
        for c in range(N):
            A[row, c] = D[row, c] * G[b, c]


@njit(parallel=True, cache=True)
def srelu_grad_inplace(A, q, rho):
    """A <- sReLU'(A), elementwise (the fixed Jacobian factor D of NTK mode)."""
    inv_rho = 1 / rho
    for row in prange(A.shape[0]):
        for c in range(A.shape[1]):
            A[row, c] = srelu_grad(A[row, c], q, rho, inv_rho)


def as_rho(rho: float, dtype) -> np.floating:
    """``rho`` as a numpy scalar of ``dtype`` so that kernels stay in that precision."""
    return np.dtype(dtype).type(rho)
