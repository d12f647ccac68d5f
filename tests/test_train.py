"""The trainer: stacking, backends, stop rules, modes, tracking and bad input."""

import numpy as np
import pytest
import torch

from multiview import MultiViewConfig, MultiViewDistribution
from theory_sims import LearnerConfig, Probe, TrainConfig, train

WORLD = MultiViewDistribution(
    MultiViewConfig(k=4, views=2, d=48, patches=12, feature_patches=2, other_features=2, missing=0.25,
                    noise_std=0.1),
    seed=0,
)
DATA = WORLD.sample(60, seed=1)
TEST = WORLD.sample(200, seed=2)
LEARNER = LearnerConfig(k=4, m=3, q=3, varrho=1.0, sigma0=0.1)


def run(seeds, learner=LEARNER, **cfg):
    cfg = {"lr": 2.0, "steps": 25, "track_every": 5, **cfg}
    return train(DATA.X, DATA.y, seeds, learner, TrainConfig(**cfg), probe=Probe.from_data(DATA))


def run_kd(seeds, teacher, **cfg):
    cfg = {"lr": 2.0, "steps": 25, "loss": "kd", "temperature": 2.0, "label_weight": 0.2, **cfg}
    return train(DATA.X, DATA.y, seeds, LEARNER, TrainConfig(**cfg), teacher=teacher)


def assert_same_model(a, b, index):
    sub = a.model.select(index)
    for name in ("W", "U", "delta"):
        x, y = getattr(sub, name), getattr(b.model, name)
        if x is None:
            assert y is None
        else:
            np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=name)


@pytest.mark.parametrize(
    "learner, cfg",
    [
        (LEARNER, {}),
        (LEARNER, dict(dtype="float64")),
        (LEARNER, dict(batch_size=16, momentum=0.9, batch_seed=3)),
        (LEARNER, dict(stop="fit", extra_steps=3, steps=60)),
        # models that stop at different steps leave the stack: the others keep their alone bits
        (LEARNER, dict(stop="converge", lr=5.0, steps=300, fit_multiple=2.0, loss_target=0.2)),
        (LEARNER, dict(stop="converge", lr=5.0, steps=300, fit_multiple=2.0, loss_target=0.2, momentum=0.5)),
        (LearnerConfig(k=4, m=3, q=3, sigma0=0.5, mode="ntk"), dict(stop="fit", extra_steps=2, lr=5.0, steps=200)),
        (LearnerConfig(k=4, m=3, q=3, sigma0=0.5, mode="random_features"), dict(stop="fit", extra_steps=2, lr=20.0,
                                                                              steps=200)),
        (LEARNER, dict(lr=20.0, max_step=0.3)),
        (LearnerConfig(k=4, m=3, q=3, sigma0=0.5, mode="ntk"), {}),
        (LearnerConfig(k=4, m=3, q=3, sigma0=0.5, mode="random_features"), dict(lr=5.0)),
    ],
)
def test_stacked_models_are_bit_identical_to_models_trained_alone(learner, cfg):
    stacked = run([11, 12, 13], learner=learner, **cfg)
    for i, seed in enumerate([11, 12, 13]):
        alone = run([seed], learner=learner, **cfg)
        assert_same_model(stacked, alone, [i])
        common, a, b = np.intersect1d(stacked.history["step"], alone.history["step"], return_indices=True)
        assert len(common) >= 2
        np.testing.assert_array_equal(stacked.history["lambda"][a, i], alone.history["lambda"][b, 0])
        assert stacked.updates[i] == alone.updates[0]


def test_models_that_stop_early_leave_the_stack_and_the_others_keep_their_bits():
    """Three models stop at three different steps; each one's weights, Lambda and updates are
    those it gets alone, and a stopped model's history is NaN after its last forward pass."""
    cfg = dict(stop="converge", lr=5.0, steps=300, fit_multiple=2.0, loss_target=0.2)
    stacked = run([11, 12, 13], **cfg)
    assert len(set(stacked.updates.tolist())) == 3, stacked.updates
    for i, seed in enumerate([11, 12, 13]):
        alone = run([seed], **cfg)
        assert_same_model(stacked, alone, [i])
        t = int(stacked.updates[i])  # its last forward pass (the one that stopped it)
        np.testing.assert_array_equal(stacked.history["loss"][: t + 1, i], alone.history["loss"][:, 0])
        assert np.isnan(stacked.history["loss"][t + 1 :, i]).all()
        assert np.isnan(stacked.history["step_length"][t:, i]).all()


def test_kd_with_per_model_teachers_stopping_at_a_plateau_keeps_each_students_bits():
    noise = np.random.default_rng(5).standard_normal((3, DATA.n, 4)).astype(np.float32)
    teacher = 4 * np.eye(4, dtype=np.float32)[DATA.y] + noise / 2  # teachers that fit the labels
    cfg = dict(stop="converge", steps=1000, fit_multiple=1.0, loss_target=1e-6, plateau=0.02, plateau_window=10)
    stacked = run_kd([1, 2, 3], teacher, **cfg)
    assert (stacked.updates < 1000).all() and len(set(stacked.updates.tolist())) > 1, stacked.updates
    for i, seed in enumerate([1, 2, 3]):
        alone = run_kd([seed], teacher[i], **cfg)
        assert_same_model(stacked, alone, [i])
        loss = alone.history["loss"][:, 0]
        t = int(alone.updates[0])  # stopped where the loss fell by less than 2% over 10 steps
        assert loss[t] >= 0.98 * loss[t - 10]
        assert all(loss[u] < 0.98 * loss[u - 10] for u in range(max(10, int(np.ceil(alone.fit_step[0]))), t))


def test_stacked_kd_with_per_model_teachers_is_bit_identical():
    teacher = np.random.default_rng(5).standard_normal((2, DATA.n, 4)).astype(np.float32) * 3
    stacked = run_kd([1, 2], teacher)
    for i, seed in enumerate([1, 2]):
        assert_same_model(stacked, run_kd([seed], teacher[i]), [i])


def test_max_step_shortens_long_steps_and_keeps_their_direction():
    """One step from the init: capped at max_step it is the uncapped step scaled to that length;
    a cap longer than the step changes nothing; step_length records the uncapped length."""
    init = run([4], lr=50.0, steps=0).model.W.numpy()
    free = run([4], lr=50.0, steps=1)
    step = free.model.W.numpy() - init
    length = np.linalg.norm(step)
    np.testing.assert_allclose(free.history["step_length"][0, 0], length, rtol=1e-4)
    capped = run([4], lr=50.0, steps=1, max_step=length / 4)
    np.testing.assert_allclose(capped.model.W.numpy() - init, step / 4, rtol=1e-3, atol=1e-7)
    np.testing.assert_array_equal(capped.history["step_length"], free.history["step_length"])
    loose = run([4], lr=50.0, steps=1, max_step=2 * length)
    np.testing.assert_array_equal(loose.model.W.numpy(), free.model.W.numpy())


def test_max_step_caps_an_average_group_as_one_model():
    """Members of a group trained as one average share one cap: the group's whole step is shortened
    to max_step, every member by the same factor; another group is scaled on its own."""
    seeds = [1, 2, 3, 4]
    init = run(seeds, steps=0).model.W.numpy()
    free = run(seeds, lr=50.0, steps=1, loss="average", group_size=2).model.W.numpy() - init
    group = [np.linalg.norm(free[:2]), np.linalg.norm(free[2:])]
    cap = min(group) / 2
    capped = run(seeds, lr=50.0, steps=1, loss="average", group_size=2, max_step=cap).model.W.numpy() - init
    for g, sl in enumerate((slice(0, 2), slice(2, 4))):
        np.testing.assert_allclose(capped[sl], free[sl] * (cap / group[g]), rtol=1e-3, atol=1e-7)
        assert np.linalg.norm(capped[sl]) == pytest.approx(cap, rel=1e-4)


@pytest.mark.parametrize("mode", ["full", "ntk", "random_features"])
def test_numba_and_torch_backends_agree(mode):
    learner = LearnerConfig(k=4, m=3, q=3, varrho=1.0, sigma0=0.3, mode=mode)
    a = run([0, 1], learner=learner, backend="numba", dtype="float64")
    b = run([0, 1], learner=learner, backend="torch", dtype="float64")
    for name in ("W", "U", "delta"):
        x, y = getattr(a.model, name), getattr(b.model, name)
        if x is not None:
            np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-9, atol=1e-12)
    a32 = run([0, 1], learner=learner, backend="numba")
    b32 = run([0, 1], learner=learner, backend="torch")
    np.testing.assert_allclose(a32.model.weights.numpy(), b32.model.weights.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(a32.history["loss"], b32.history["loss"], rtol=1e-3)


def test_training_fits_the_data_and_grows_one_view_per_class():
    result = run([0, 1, 2], lr=5.0, steps=150)
    assert (result.train_acc == 1.0).all()
    lam = result.history["lambda"]
    assert lam[-1].max() > 10 * lam[0].max()  # views are learned from a small init
    assert result.views_learned().any(axis=2).all()  # every class has a learned view
    F = result.model.logits(TEST.X)
    assert (F.argmax(-1) == TEST.y)[:, TEST.is_multi].mean() > 0.95


def test_fit_stop_rule_stops_each_model_extra_steps_after_fitting():
    result = run([0, 1, 2], lr=5.0, steps=300, stop="fit", extra_steps=7)
    assert (result.fit_step >= 0).all()
    np.testing.assert_array_equal(result.updates, result.fit_step + 7)
    acc = result.history["acc"]
    for s in range(3):
        assert acc[result.fit_step[s], s] == 1.0
        assert (acc[: result.fit_step[s], s] < 1.0).all()


def test_fixed_step_training_records_its_fit_step_and_runs_every_step():
    """stop='steps' still says when a model first fitted its training set (full batch), and does
    not stop there; the fit step is the one the 'fit' rule finds."""
    fixed = run([0, 1, 2], lr=5.0, steps=300)
    by_fit = run([0, 1, 2], lr=5.0, steps=300, stop="fit", extra_steps=7)
    np.testing.assert_array_equal(fixed.fit_step, by_fit.fit_step)
    assert (fixed.updates == 300).all()


def test_fit_rule_with_sgd_checks_at_epoch_ends():
    result = run([0], lr=5.0, steps=400, stop="fit", batch_size=20)
    assert result.fit_step[0] % 3 == 2  # 60 samples, 3 batches per epoch
    assert result.train_acc[0] == 1.0


def logits_by_autograd(W, learner=LEARNER, X=DATA.X):
    """F (S, n, k) of first-layer weights W (S, k, m, d) on X, written out in torch for autograd:
    F[s, i, c] = sum_r sum_p sReLU(<W[s, c, r], X[i, p]>)."""
    from theory_sims.backends import srelu

    A = torch.einsum("ipd,scrd->sicrp", torch.as_tensor(X, dtype=W.dtype), W)
    return srelu(A, learner.q, learner.varrho).sum(dim=(-1, -2))


def test_average_groups_train_one_output():
    result = run([0, 1, 2, 3], loss="average", group_size=2, steps=10)
    assert result.train_loss[0] == result.train_loss[1] and result.train_loss[2] == result.train_loss[3]
    assert result.train_loss[0] != result.train_loss[2]
    # One float64 step is -lr times the gradient of CE(the group's mean logits) with respect to each
    # member, by autograd; and that is not the step each member would take trained alone on CE of
    # its own logits (so a trainer that silently trains the members independently fails here).
    seeds, lr = [0, 1, 2, 3], 2.0
    init = run(seeds, loss="average", group_size=2, steps=0, dtype="float64").model
    W = init.W.clone().requires_grad_(True)
    F = logits_by_autograd(W)
    np.testing.assert_allclose(F.detach().numpy(), init.logits(DATA.X), rtol=1e-10, atol=1e-12)
    y = torch.as_tensor(DATA.y)
    ce = torch.nn.functional.cross_entropy
    joint = sum(ce(F[g : g + 2].mean(dim=0), y) for g in (0, 2))
    (grad_joint,) = torch.autograd.grad(joint, W, retain_graph=True)
    alone = sum(ce(F[s], y) for s in range(4))
    (grad_alone,) = torch.autograd.grad(alone, W)
    step = run(seeds, loss="average", group_size=2, steps=1, dtype="float64", lr=lr).model.W - init.W
    np.testing.assert_allclose(step.numpy(), -lr * grad_joint.numpy(), rtol=1e-8, atol=1e-12)
    for s in range(4):  # every member's step differs from its alone step by far more than round-off
        diff = (grad_joint[s] - grad_alone[s]).norm() / grad_alone[s].norm()
        assert diff > 0.1, (s, float(diff))
    assert not np.allclose(step.numpy(), -lr * grad_alone.numpy(), rtol=1e-3, atol=1e-8)
    # ... and training lowers the group's loss, CE of its members' mean logits, recomputed here
    trained = run(seeds, loss="average", group_size=2, steps=30, lr=5.0)
    after = torch.as_tensor(trained.model.logits(DATA.X), dtype=torch.float64)
    before = logits_by_autograd(init.W)
    for g in (0, 2):
        start, end = float(ce(before[g : g + 2].mean(dim=0), y)), float(ce(after[g : g + 2].mean(dim=0), y))
        assert end < 0.5 * start, (g, start, end)
        assert end == pytest.approx(float(trained.train_loss[g]), rel=1e-4)


def test_kd_student_follows_its_teacher():
    teacher_run = run([0, 1, 2], lr=5.0, steps=150)
    teacher = teacher_run.model.logits(DATA.X).mean(axis=0)
    student = run_kd([9], teacher, lr=5.0, steps=150, label_weight=0.0)
    agree = (student.model.logits(TEST.X)[0].argmax(-1) == teacher_run.model.logits(TEST.X).mean(0).argmax(-1))
    assert agree.mean() > 0.9


def test_noise_memorisation_and_correlations_are_recorded():
    result = run([0, 1], steps=20, track_every=5, corr_at=(0, 10))
    h = result.history
    np.testing.assert_array_equal(h["step"], [0, 5, 10, 15, 20])
    assert h["lambda"].shape == (5, 2, 4, 2)
    assert h["noise_memorisation"].shape == (5, 2, DATA.n)
    assert sorted(h["corr"]) == [0, 10, 20]
    assert h["corr"][0].shape == (2, 4, 3, 8)
    # Lambda is the max over neurons of the own-view entries of the correlation matrix
    corr = h["corr"][10]
    own = corr.reshape(2, 4, 3, 4, 2)[:, np.arange(4), :, np.arange(4), :]  # (4, 2, 3, 2)
    np.testing.assert_allclose(own.max(axis=2).transpose(1, 0, 2), h["lambda"][2], rtol=1e-6)
    assert h["loss"].shape == (20, 2)


def test_same_seed_same_result_and_different_seeds_differ():
    a, b, c = run([4]), run([4]), run([5])
    np.testing.assert_array_equal(a.model.W.numpy(), b.model.W.numpy())
    assert not np.array_equal(a.model.W.numpy(), c.model.W.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(y=np.full(DATA.n, 7)), r"y must hold labels in \[0, 3\]"),
        (dict(y=np.zeros(3, dtype=int)), "y must have shape"),
        (dict(X=DATA.X[0]), r"X must have shape \(n, P, d\)"),
        (dict(seeds=[]), "seeds must name at least one model"),
        (dict(cfg=TrainConfig(loss="kd")), "teacher logits are required"),
        (dict(cfg=TrainConfig(loss="kd"), teacher=np.zeros((5, 4))), "teacher must have shape"),
        (dict(cfg=TrainConfig(loss="average", group_size=2), seeds=[0, 1, 2]), "group_size must divide"),
        (dict(cfg=TrainConfig(batch_size=1000)), "batch_size must be <= n"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, message):
    args = dict(X=DATA.X, y=DATA.y, seeds=[0], learner=LEARNER, cfg=TrainConfig(steps=1), teacher=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train(**args)


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (TrainConfig, dict(lr=0), "lr"),
        (TrainConfig, dict(momentum=1.0), "momentum"),
        (TrainConfig, dict(max_step=-0.5), "max_step"),
        (TrainConfig, dict(loss="mse"), "loss"),
        (TrainConfig, dict(stop="never"), "stop"),
        (TrainConfig, dict(group_size=2), "group_size"),
        (TrainConfig, dict(backend="numba", device="cuda"), "device"),
        (TrainConfig, dict(dtype="float16"), "dtype"),
        (TrainConfig, dict(steps=-1), "steps"),
        (LearnerConfig, dict(q=0), "q"),
        (LearnerConfig, dict(m=0), "m"),
        (LearnerConfig, dict(varrho=0.0), "varrho"),
        (LearnerConfig, dict(sigma0=-1.0), "sigma0"),
        (LearnerConfig, dict(mode="kernel"), "mode"),
    ],
)
def test_invalid_configs_name_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        cls(**kwargs)


# ----------------------------------------------------------------------------- convergence and snapshots

def test_converge_stops_each_model_at_its_first_step_past_both_criteria():
    r = run([21, 22, 23], lr=5.0, steps=600, stop="converge", fit_multiple=4.0, loss_target=0.05)
    loss = r.history["loss"]  # (steps, S): every step's forward pass
    for s in range(3):
        t = int(r.updates[s])  # the step at which model s stopped (no update there)
        assert r.fit_step[s] >= 0 and t < 600
        assert t >= 4 * r.fit_step[s] and loss[t, s] <= 0.05
        earlier = [u for u in range(t) if u >= 4 * r.fit_step[s] and loss[u, s] <= 0.05]
        assert not earlier, (s, earlier[:3])
    assert len(set(r.updates.tolist())) > 1  # models stop on their own schedules


def test_snapshots_are_the_weights_at_multiples_of_the_fit_step():
    cfg = dict(lr=5.0, steps=600, stop="converge", fit_multiple=4.0, loss_target=0.05, snapshots=(1.0, 2.5))
    r = run([21, 22], **cfg)
    for mult in (1.0, 2.5):
        _, at = r.snapshots[mult]
        for s, seed in enumerate([21, 22]):
            assert at[s] == int(np.ceil(mult * r.fit_step[s]))
            alone = run([seed], lr=5.0, steps=int(at[s]))  # the same path, stopped there
            np.testing.assert_array_equal(r.snapshot_model(mult).W[s].numpy(), alone.model.W[0].numpy())


def test_a_snapshot_never_reached_keeps_the_final_weights():
    r = run([21], lr=5.0, steps=30, stop="steps", snapshots=(1000.0,))
    params, at = r.snapshots[1000.0]
    assert at[0] == r.updates[0] == 30
    np.testing.assert_array_equal(params.numpy(), r.model.W.numpy())


@pytest.mark.parametrize("cfg, needle", [
    (dict(stop="converge", batch_size=8), "stop='converge' needs full-batch"),
    (dict(snapshots=(0.5,)), "snapshots must be a number >= 1.0"),
    (dict(loss="kd_paper", label_weight=0.3), "label_weight must be 0 with loss='kd_paper'"),
    (dict(loss="kd_capped", temperature=0.0), "temperature must be a number > 0.0"),
    (dict(loss="kd_paper", teacher_scale=0.0), "teacher_scale must be a number > 0.0"),
    (dict(loss_target=0.0), "loss_target must be a number > 0.0"),
])
def test_bad_convergence_and_kd_settings_name_the_field(cfg, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        TrainConfig(**cfg)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_kd_paper_step_moves_the_weights_by_the_papers_update(backend):
    """One step of the trainer equals w - lr * (grad CE + kd_weight * E[(lt(F) - lt(G))^- grad F]),
    computed with torch autograd through the model in float64 (the one-sided gaps held fixed)."""
    import torch

    from theory_sims.backends import srelu
    from theory_sims.model import init_model

    teacher = np.random.default_rng(5).standard_normal((len(DATA.y), 4)) * 2
    cfg = dict(lr=0.7, steps=1, loss="kd_paper", temperature=0.3, kd_weight=2.0, teacher_scale=1.5, dtype="float64",
               backend=backend)
    got = train(DATA.X, DATA.y, [31], LEARNER, TrainConfig(**cfg), teacher=teacher).model.W[0]

    W = init_model(LEARNER, DATA.X.shape[-1], [31], "float64").W[0].clone().requires_grad_(True)
    X = torch.as_tensor(DATA.X, dtype=torch.float64)
    F = srelu(torch.einsum("npd,krd->npkr", X, W), LEARNER.q, LEARNER.varrho).sum(dim=(1, 3))  # (n, k)
    G = torch.as_tensor(teacher) * 1.5
    lt = lambda Z: torch.softmax(torch.clamp(0.09 * Z, max=1.0) / 0.3, dim=-1)  # noqa: E731  tau = 0.3
    gap = torch.clamp(lt(F) - lt(G), max=0.0).detach()
    y = torch.as_tensor(DATA.y)
    surrogate = torch.nn.functional.cross_entropy(F, y) + 2.0 * (gap * F).sum(dim=-1).mean()
    surrogate.backward()
    expected = W.detach() - 0.7 * W.grad
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_a_stacked_product_gives_each_model_its_alone_numbers_to_float32_rounding():
    """Above SMALL_PRODUCT the numba backend multiplies the stack as one product; whether a
    model's columns then carry its alone bits depends on the BLAS build (not on this machine's
    OpenBLAS Haswell kernels), so here the guarantee is float32 rounding after 20 steps."""
    from theory_sims import backends

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 64, 160), dtype=np.float32) * 0.1
    y = rng.integers(0, 10, 200)
    learner = LearnerConfig(k=10, m=2, q=5, sigma0=0.1)
    assert 2 * 10 * 160 * 200 * 64 >= backends.SMALL_PRODUCT  # one model's share: the stacked path
    cfg = TrainConfig(lr=20.0, steps=20, track_every=0)
    stacked = train(X, y, range(10), learner, cfg)
    for s in (0, 7):
        alone = train(X, y, [s], learner, cfg)
        np.testing.assert_allclose(stacked.model.W[s].numpy(), alone.model.W[0].numpy(), rtol=1e-4, atol=1e-5)


def test_on_the_mkl_path_a_stacked_product_gives_each_model_its_alone_bits_as_others_stop():
    """In MKL's strict mode a column block of one stacked product carries the bits of the block's
    own product, so above SMALL_PRODUCT too a model's run is the one it has alone, also while the
    models beside it stop and leave the product (here at steps 17, 20 and 21)."""
    from theory_sims import backends

    if not backends.mkl_strict():
        pytest.skip("torch's MKL is not in strict CNR mode on an AVX2/AVX-512 branch here")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 64, 160), dtype=np.float32) * 0.1
    y = rng.integers(0, 10, 200)
    learner = LearnerConfig(k=10, m=2, q=3, sigma0=0.3)
    assert 2 * 10 * 160 * 200 * 64 >= backends.SMALL_PRODUCT  # one model's share: the stacked path
    cfg = TrainConfig(lr=50.0, steps=300, track_every=0, stop="fit", extra_steps=3)
    stacked = train(X, y, range(4), learner, cfg)
    assert len(set(stacked.updates.tolist())) == 3, stacked.updates
    for s in (0, 2, 3):
        alone = train(X, y, [s], learner, cfg)
        np.testing.assert_array_equal(stacked.model.W[s].numpy(), alone.model.W[0].numpy())
        assert stacked.updates[s] == alone.updates[0]


@pytest.mark.parametrize("products", ["mkl", "openblas"])
def test_training_bits_do_not_depend_on_torch_or_numba_threads(monkeypatch, products):
    """A stack large enough for one stacked product per step (one model's share above
    SMALL_PRODUCT) trained with 1 and with 2 threads for torch (its MKL products and its small
    ops) and numba: the same bits, on either product path."""
    import numba

    from theory_sims import backends

    if products == "mkl" and not backends.mkl_strict():
        pytest.skip("torch's MKL is not in strict CNR mode on an AVX2/AVX-512 branch here")
    monkeypatch.setattr(backends, "mkl_strict", lambda: products == "mkl")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((100, 16, 200), dtype=np.float32) * 0.1
    y = rng.integers(0, 10, 100)
    learner = LearnerConfig(k=10, m=5, q=3)
    assert 100 * 16 * 200 * 10 * 5 >= backends.SMALL_PRODUCT
    cfg = TrainConfig(lr=2.0, steps=20, track_every=5)
    probe = Probe(rng.standard_normal((10, 2, 200)).astype(np.float32), 2)
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            res = train(X, y, range(3), learner, cfg, probe=probe)
        finally:
            torch.set_num_threads(torch_threads)
            numba.set_num_threads(numba_threads)
        out.append((res.model.W.numpy().copy(), res.history["loss"], res.history["lambda"]))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- bfloat16 products

def test_bfloat16_products_follow_float32_closely_and_fit_at_the_same_steps():
    f32 = run([11, 12, 13], lr=5.0, steps=200, stop="fit", extra_steps=5)
    bf16 = run([11, 12, 13], lr=5.0, steps=200, stop="fit", extra_steps=5, products="bfloat16")
    np.testing.assert_array_equal(bf16.fit_step, f32.fit_step)
    W32, W16 = f32.model.W.numpy(), bf16.model.W.numpy()
    rel = np.linalg.norm(W16 - W32) / np.linalg.norm(W32)
    assert 0 < rel < 0.02, rel  # rounded factors: not the same bits, the same path to within a percent
    np.testing.assert_allclose(bf16.history["lambda"][-1], f32.history["lambda"][-1], rtol=0.05, atol=0.02)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_bfloat16_training_bits_do_not_depend_on_the_threads(backend):
    """torch's bfloat16 product on 2 threads splits the gradient's long inner dimension (its bits
    moved with the threads); the backends run it on one thread, so a run's bits stay put."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((150, 32, 640), dtype=np.float32) * 0.05  # the main job's shape: where they moved
    y = rng.integers(0, 10, 150)
    cfg = TrainConfig(lr=2.0, steps=5, track_every=0, products="bfloat16", backend=backend)
    old = torch.get_num_threads()
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            out.append(train(X, y, range(10), LearnerConfig(k=10, m=3, q=3), cfg).model.W.numpy().copy())
        finally:
            torch.set_num_threads(old)
    np.testing.assert_array_equal(out[0], out[1])


def test_bfloat16_backends_agree():
    a = run([11, 12], lr=5.0, steps=30, products="bfloat16")
    b = run([11, 12], lr=5.0, steps=30, products="bfloat16", backend="torch")
    np.testing.assert_allclose(a.model.W.numpy(), b.model.W.numpy(), rtol=1e-3, atol=1e-5)


def test_bfloat16_products_need_float32_weights():
    with pytest.raises(ValueError, match="products='bfloat16' needs dtype='float32'"):
        TrainConfig(products="bfloat16", dtype="float64")
    with pytest.raises(ValueError, match="^products must be one of"):
        TrainConfig(products="float16")


def test_a_mini_batch_kd_step_reads_the_teacher_rows_of_its_own_samples():
    """One SGD step of KD on the first mini-batch equals one full-batch step on exactly those samples
    with exactly their teacher rows (a teacher sliced at the wrong rows, or not at all, moves the
    weights elsewhere); per-model teachers are sliced along their samples' axis too."""
    from theory_sims.train import _batches

    rng = np.random.default_rng(7)
    shared = rng.standard_normal((DATA.n, 4)).astype(np.float32) * 3
    per_model = rng.standard_normal((2, DATA.n, 4)).astype(np.float32) * 3
    batch = 16
    _, samples = next(_batches(DATA.n, batch, 4))
    assert len(samples) == batch and not np.array_equal(samples, np.arange(batch))  # a shuffled batch
    cfg = dict(lr=2.0, steps=1, loss="kd", temperature=2.0, label_weight=0.2)
    for teacher, rows in ((shared, shared[samples]), (per_model, per_model[:, samples])):
        sgd = train(DATA.X, DATA.y, [1, 2], LEARNER, TrainConfig(batch_size=batch, batch_seed=4, **cfg), teacher=teacher)
        sub = train(DATA.X[samples], DATA.y[samples], [1, 2], LEARNER, TrainConfig(**cfg), teacher=rows)
        np.testing.assert_allclose(sgd.model.W.numpy(), sub.model.W.numpy(), rtol=1e-5, atol=1e-7)
        wrong = train(DATA.X[samples], DATA.y[samples], [1, 2], LEARNER, TrainConfig(**cfg),
                      teacher=teacher[:batch] if teacher.ndim == 2 else teacher[:, :batch])
        assert np.abs(wrong.model.W.numpy() - sgd.model.W.numpy()).max() > 1e-4


def test_momentum_carries_the_last_step_into_the_next():
    """Heavy ball, as TrainConfig says: v <- momentum v + grad, w <- w - lr v. Two steps with
    momentum 0.9 equal the first step plus the second's gradient plus 0.9 of the first's, each
    gradient read off a plain step from the same weights."""
    lr, beta = 2.0, 0.9
    w0 = run([4], steps=0).model.W.numpy()
    w1 = run([4], steps=1, lr=lr).model.W.numpy()
    g0 = (w0 - w1) / lr
    heavy = run([4], steps=2, lr=lr, momentum=beta).model.W.numpy()
    np.testing.assert_allclose(run([4], steps=1, lr=lr, momentum=beta).model.W.numpy(), w1, rtol=1e-6)  # v0 = 0
    # the gradient at w1: a plain step from w1 is a plain 2-step run's second step
    w2_plain = run([4], steps=2, lr=lr).model.W.numpy()
    g1 = (w1 - w2_plain) / lr
    np.testing.assert_allclose(heavy, w1 - lr * (beta * g0 + g1), rtol=1e-4, atol=1e-6)
    assert np.abs(heavy - w2_plain).max() > 1e-3  # momentum moved it
