"""The backends' forward and gradient against a plain torch autograd model in float64."""

import numpy as np
import pytest
import torch

from theory_sims import LearnerConfig, backends, init_model
from theory_sims.backends import make_backend, srelu, srelu_grad
from theory_sims.losses import loss_and_grad

S, k, m, n, P, d = 3, 4, 2, 6, 5, 8
REL = 1e-8


def reference_logits(W, X, q, rho):
    """F[s, b, i] = sum_r sum_p sReLU(<w_{s,i,r}, x_{b,p}>), written the obvious way."""
    A = torch.einsum("simd,bpd->sbimp", W, X)
    return srelu(A, q, rho).sum(dim=(-1, -2))


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, P, d))
    y = rng.integers(0, k, n)
    teacher = rng.standard_normal((n, k)) * 2
    return X, y, teacher


def test_srelu_matches_its_definition():
    q, rho = 3, 0.5
    z = torch.linspace(-1, 2, 301, dtype=torch.float64)
    expected = torch.where(z <= 0, 0.0, torch.where(z <= rho, z**q / (q * rho ** (q - 1)), z - (1 - 1 / q) * rho))
    torch.testing.assert_close(srelu(z, q, rho), expected, rtol=0, atol=1e-15)
    zz = z.clone().requires_grad_(True)
    srelu(zz, q, rho).sum().backward()
    torch.testing.assert_close(srelu_grad(z, q, rho), zz.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("q", [1, 3, 5])
@pytest.mark.parametrize(
    "loss, kw",
    [("ce", {}), ("kd", dict(temperature=2.5, label_weight=0.3)),
     ("kd_capped", dict(temperature=0.8, label_weight=0.1)), ("average", dict(group_size=3))],
)
def test_full_model_gradient_matches_autograd(backend, q, loss, kw, problem):
    X, y, teacher = problem
    rho = 0.7
    model = init_model(LearnerConfig(k=k, m=m, q=q, varrho=rho, sigma0=0.6), d, range(S), "float64")
    N = S * k * m
    be = make_backend(backend, X, torch.float64, q, rho)
    Xt, yt, tt = torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(teacher)

    F = model.outputs(be.patch_sums(model.W.reshape(N, d)))
    W = model.W.clone().requires_grad_(True)
    F_ref = reference_logits(W, Xt, q, rho)
    torch.testing.assert_close(F, F_ref.detach(), rtol=1e-12, atol=1e-12)

    _, dF = loss_and_grad(loss, F, yt, tt, **kw)
    G = dF.permute(1, 0, 2).unsqueeze(-1).expand(n, S, k, m).reshape(n, N).contiguous()
    dW = be.grads(G).view(S, k, m, d)

    ref_loss, _ = loss_and_grad(loss, F_ref, yt, tt, **kw)
    (ref_loss.sum() / kw.get("group_size", 1)).backward()
    assert rel_err(dW, W.grad) < REL


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_ntk_gradient_matches_autograd_of_the_linearised_model(backend, problem):
    X, y, _ = problem
    q, rho = 3, 1.0
    model = init_model(LearnerConfig(k=k, m=m, q=q, varrho=rho, sigma0=0.5, mode="ntk"), d, range(S), "float64")
    N = S * k * m
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    delta = torch.randn(S, k, m, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1

    be = make_backend(backend, X, torch.float64, q, rho)
    H0 = be.set_linearisation(model.W.reshape(N, d))
    F = model.outputs(be.patch_sums(delta.reshape(N, d)), H0)
    _, dF = loss_and_grad("ce", F, yt)
    G = dF.permute(1, 0, 2).unsqueeze(-1).expand(n, S, k, m).reshape(n, N).contiguous()
    dDelta = be.grads(G).view(S, k, m, d)

    D = delta.clone().requires_grad_(True)
    W0 = model.W
    F_lin = torch.func.jvp(lambda w: reference_logits(w, Xt, q, rho), (W0,), (D,))
    F_ref = F_lin[0] + F_lin[1]
    torch.testing.assert_close(F, F_ref.detach(), rtol=1e-12, atol=1e-12)
    loss, _ = loss_and_grad("ce", F_ref, yt)
    loss.sum().backward()
    assert rel_err(dDelta, D.grad) < REL


def test_backends_agree_in_float32(problem):
    X, _, _ = problem
    X = X.astype(np.float32)
    W = torch.randn(S * k * m, d, generator=torch.Generator().manual_seed(2)) * 0.5
    G = torch.randn(n, S * k * m, generator=torch.Generator().manual_seed(3))
    out = {}
    for name in ("numba", "torch"):
        be = make_backend(name, X, torch.float32, 4, 0.8)
        out[name] = (be.patch_sums(W).clone(), be.grads(G).clone())
    for a, b in zip(out["numba"], out["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("products", ["mkl", "openblas"])
@pytest.mark.parametrize("model_cols", [None, 100])
def test_numba_products_do_not_depend_on_the_cores_or_blas_threads(monkeypatch, model_cols, products):
    """A skinny gradient product (output 1000 x 64 over 2000 rows), one OpenBLAS (and MKL outside
    its strict mode) splits across its threads in a thread-count-dependent order: the backend's
    bits must not move with the number of threads (torch's, or its own row blocks and pool) nor
    with the BLAS threads the caller set, on either product path."""
    from threadpoolctl import threadpool_limits

    from theory_sims import backends

    if products == "mkl" and not backends.mkl_strict():
        pytest.skip("torch's MKL is not in strict CNR mode on an AVX2/AVX-512 branch here")
    monkeypatch.setattr(backends, "mkl_strict", lambda: products == "mkl")
    torch_threads = torch.get_num_threads()

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 1, 64), dtype=np.float32) * 0.1
    W = torch.from_numpy(rng.standard_normal((1000, 64), dtype=np.float32) * 0.1)
    G = torch.from_numpy(rng.standard_normal((2000, 1000), dtype=np.float32))

    def run(cores, blas):
        monkeypatch.setattr(backends, "_threads", lambda: cores)
        torch.set_num_threads(cores)
        try:
            with threadpool_limits(blas):
                be = make_backend("numba", X, torch.float32, 3, 1.0, model_cols=model_cols)
                assert be.mkl == (products == "mkl")
                return be.patch_sums(W).numpy().copy(), be.grads(G).numpy().copy()
        finally:
            torch.set_num_threads(torch_threads)

    ref_h, ref_g = run(1, 1)
    for cores, blas in ((2, 2), (4, 1), (3, 2)):
        h, g = run(cores, blas)
        assert np.array_equal(h, ref_h) and np.array_equal(g, ref_g), (cores, blas)


def test_the_two_product_paths_agree_to_float32_rounding(monkeypatch):
    """MKL (strict mode) and one-thread OpenBLAS blocks sum in other orders: other bits, the same
    numbers to float32 rounding, at a shape where the OpenBLAS path cuts several row blocks."""
    from theory_sims import backends

    if not backends.mkl_strict():
        pytest.skip("torch's MKL is not in strict CNR mode on an AVX2/AVX-512 branch here")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((150, 32, 640), dtype=np.float32) * 0.05
    W = torch.from_numpy(rng.standard_normal((300, 640), dtype=np.float32) * 0.1)
    G = torch.from_numpy(rng.standard_normal((150, 300), dtype=np.float32))
    out = {}
    for products in ("mkl", "openblas"):
        monkeypatch.setattr(backends, "mkl_strict", lambda: products == "mkl")
        be = make_backend("numba", X, torch.float32, 5, 0.77, model_cols=30)
        assert be.mkl == (products == "mkl")
        out[products] = (be.patch_sums(W).clone(), be.grads(G).clone())
    assert len(backends._row_blocks(150 * 32, 640 * 300)) > 2
    for a, b in zip(out["mkl"], out["openblas"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_compiled_per_q_equal_the_general_loop(dtype):
    """patch_sums / patch_grads branch to a copy compiled for their q (1..8); each must give the
    bits of the general kernel with a runtime exponent (called here through the inner function,
    which numba compiles with q as a plain argument)."""
    from theory_sims import kernels

    rng = np.random.default_rng(7)
    P = 16
    A = (rng.standard_normal((10 * P, 23)) * 0.7).astype(dtype)
    G = rng.standard_normal((10, 23)).astype(dtype)
    rho = kernels.as_rho(0.8, dtype)
    for q in (1, 2, 3, 5, 8, 9):
        fast, general = np.empty((10, 23), dtype), np.empty((10, 23), dtype)
        kernels.patch_sums(A, P, q, rho, fast)
        kernels._patch_sums(A, P, q, rho, general, 0, 10)
        np.testing.assert_array_equal(fast, general, err_msg=f"patch_sums q={q}")
        fast_g, general_g = A.copy(), A.copy()
        kernels.patch_grads(fast_g, G, P, q, rho)
        kernels._patch_grads(general_g, G, P, q, rho)
        np.testing.assert_array_equal(fast_g, general_g, err_msg=f"patch_grads q={q}")


@pytest.mark.parametrize("P", [7, 64, 150])
def test_fused_blocks_give_the_bits_of_products_then_kernels(monkeypatch, P):
    """The numba backend runs each row block's product and the patch sums of the samples inside
    it on one thread (a sample cut by a block edge after): the bits must be those of the whole
    product followed by the whole-array kernel, whatever P does to the block edges."""
    from theory_sims import backends, kernels

    monkeypatch.setattr(backends, "mkl_strict", lambda: False)  # the one-thread OpenBLAS path
    monkeypatch.setattr(backends, "SMALL_PRODUCT", 64 * 40 * 3)  # many row blocks of 64 rows
    rng = np.random.default_rng(3)
    n, d, N, q = 40, 40, 30, 5
    X = rng.standard_normal((n, P, d), dtype=np.float32) * 0.3
    W = torch.from_numpy(rng.standard_normal((N, d), dtype=np.float32) * 0.3)
    G = torch.from_numpy(rng.standard_normal((n, N), dtype=np.float32))
    be = make_backend("numba", X, torch.float32, q, 0.8)
    H, grad = be.patch_sums(W).numpy().copy(), be.grads(G).numpy().copy()

    from threadpoolctl import threadpool_limits

    rows, rho = be.rows, kernels.as_rho(0.8, np.float32)
    A = np.empty((n * P, N), np.float32)
    with threadpool_limits(1, "blas"):  # the same one-thread products, then the whole kernels
        for a, b in backends._row_blocks(n * P, d * N):
            np.matmul(rows[a:b], W.numpy().T, out=A[a:b])
        want_h = np.empty((n, N), np.float32)
        kernels.patch_sums(A, P, q, rho, want_h)
        kernels.patch_grads(A, G.numpy(), P, q, rho)
        want_g = np.empty((N, d), np.float32)
        for a, b in backends._row_blocks(N, n * P * d):
            np.matmul(A[:, a:b].T, rows, out=want_g[a:b])
    assert len(backends._row_blocks(n * P, d * N)) > 3  # and, for P = 7, 64, 150, edges inside samples
    np.testing.assert_array_equal(H, want_h)
    np.testing.assert_array_equal(grad, want_g)


def test_auto_products_are_bfloat16_only_on_numba_in_float32_where_amx_is(monkeypatch):
    """products='auto': bfloat16 on the numba backend in float32 on a CPU with AMX-BF16, float32
    on any other CPU, backend or dtype; the explicit choices are themselves; a bad one is named."""
    for amx in (True, False):
        monkeypatch.setattr(backends, "has_amx_bf16", lambda: amx)
        assert backends.resolve_products("auto") == ("bfloat16" if amx else "float32")
        assert backends.resolve_products("auto", "torch") == "float32"
        assert backends.resolve_products("auto", "numba", "float64") == "float32"
        assert backends.resolve_products("float32") == "float32" and backends.resolve_products("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="products must be one of float32, bfloat16, auto, got 'half'"):
        backends.resolve_products("half")
