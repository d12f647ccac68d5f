"""The Gaussian grid's standard learner: it fits, seeds differ and repeat, stacked follows alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from multiview import GaussianConfig, GaussianTask
from theory_sims import gaussian_negative as gn
from theory_sims import standard

SMALL = standard.StandardConfig(width=64, max_steps=400, adam_lr=1e-2)


@pytest.fixture(scope="module")
def task():
    cfg = GaussianConfig(k=4, patches=1, patch_dim=8, teacher="fc", teacher_width=16)
    t = GaussianTask(cfg, seed=0)
    return t.sample(120, seed=1), t.sample(300, seed=2)


@pytest.fixture(scope="module")
def conv_task():
    cfg = GaussianConfig(k=3, patches=4, patch_dim=4, teacher="conv", teacher_width=8)
    t = GaussianTask(cfg, seed=0)
    return t.sample(90, seed=1)


def test_it_fits_a_small_clean_teacher_task(task):
    train, test = task
    r = standard.fit(train.X, train.y, range(3), 4, SMALL)
    assert (r.fit_step >= 0).all() and (r.train_acc == 1.0).all()
    assert (r.logits(train.X).argmax(-1) == train.y).all()
    assert (r.logits(test.X).argmax(-1) == test.clean_y).mean(axis=1).min() > 0.5  # and generalises somewhat


@pytest.mark.parametrize("pool, read_in", [("mean", 64), ("concat", 4 * 64)])
def test_the_cnn_over_patches_fits_too(conv_task, pool, read_in):
    r = standard.fit(conv_task.X, conv_task.y, range(2), 3, dataclasses.replace(SMALL, pool=pool))
    assert r.patches == 4 and r.pool == pool and (r.train_acc == 1.0).all()
    assert r.params[0].shape == (2, 4, 64) and r.params[2].shape == (2, read_in, 3)  # filters per patch, then pooled


def test_the_mean_pooled_cnn_cannot_tell_where_a_patch_was_and_the_concatenating_one_can(conv_task):
    X = conv_task.X[:20]
    moved = X[:, [2, 0, 3, 1]]  # every sample's patches in another order
    mean = standard.fit(conv_task.X, conv_task.y, range(2), 3, dataclasses.replace(SMALL, max_steps=5))
    concat = standard.fit(conv_task.X, conv_task.y, range(2), 3, dataclasses.replace(SMALL, max_steps=5, pool="concat"))
    np.testing.assert_allclose(mean.logits(moved), mean.logits(X), rtol=1e-5, atol=1e-6)
    assert np.abs(concat.logits(moved) - concat.logits(X)).max() > 1e-2


def test_the_mean_pooled_cnn_is_the_mean_of_its_filters_relus_read_out(conv_task):
    """The forward pass against the formula written out per sample, in float64 numpy."""
    X = conv_task.X[:7]
    r = standard.fit(conv_task.X, conv_task.y, [4], 3, dataclasses.replace(SMALL, max_steps=3))
    W1, b1, W2, b2 = (p[0].double().numpy() for p in r.params)
    want = np.stack([np.maximum(x @ W1 + b1, 0).mean(0) @ W2 + b2[0] for x in X.astype(np.float64)])
    np.testing.assert_allclose(r.logits(X)[0], want, rtol=1e-4, atol=1e-5)


def _plain_logits(params, X, patches, pool):
    """The stack's logits written the slow way: each model alone, its layers as autograd sees them."""
    out = []
    for s in range(params[0].shape[0]):
        h = torch.relu(X @ params[0][s] + params[1][s])
        if patches > 1:
            h = h.reshape(-1, patches, h.shape[-1])
            h = h.mean(1) if pool == "mean" else h.flatten(1)
        for i in range(2, len(params), 2):
            h = h @ params[i][s] + params[i + 1][s]
            if i + 2 < len(params):
                h = torch.relu(h)
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("patches, pool, depth", [(1, "mean", 1), (1, "mean", 2), (4, "mean", 1), (4, "mean", 3),
                                                  (4, "concat", 1), (4, "concat", 2)])
def test_the_stacks_forward_and_its_own_backward_match_autograd_of_the_plain_formula_in_float64(patches, pool, depth):
    """The first layer runs as one product with a backward pass of its own: its logits and every
    gradient must equal autograd's through the per-model formula (weights of 3 models, float64).
    Units switched off at init are part of it: some inputs sit below every bias."""
    rng = np.random.default_rng(0)
    n, d, k = 11, 5, 3
    cfg = standard.StandardConfig(width=7, depth=depth, pool=pool)
    X = torch.as_tensor(rng.normal(size=(n * patches, d)))
    y = torch.as_tensor(rng.integers(0, k, n))
    init = [p.double() for p in standard.init_params([1, 2, 3], standard.layer_sizes(d, patches, k, cfg))]
    grads, logits = [], []
    for f in (standard.forward, _plain_logits):
        params = [p.clone().requires_grad_() for p in init]
        out = f(params, X, patches, pool)
        # a different weight per model and output, so a mixed-up model or unit shows
        weights = torch.as_tensor(rng.normal(size=out.shape)) if not logits else weights
        (torch.nn.functional.cross_entropy(out.reshape(-1, k), y.repeat(3)) + (out * weights).sum()).backward()
        logits.append(out.detach())
        grads.append([p.grad for p in params])
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-12, atol=1e-12)
    assert (logits[0] != 0).any()
    for mine, plain in zip(*grads):
        assert plain.abs().max() > 0
        torch.testing.assert_close(mine, plain, rtol=1e-10, atol=1e-12)


def test_seeds_differ_and_the_same_seed_repeats(task):
    train, _ = task
    a = standard.fit(train.X, train.y, [0, 1], 4, SMALL)
    b = standard.fit(train.X, train.y, [0, 1], 4, SMALL)
    for p, q in zip(a.params, b.params):
        assert torch.equal(p, q)
    assert not torch.equal(a.params[0][0], a.params[0][1])
    assert not np.array_equal(a.logits(train.X)[0], a.logits(train.X)[1])


def test_init_of_a_model_does_not_depend_on_its_stack():
    sizes = standard.layer_sizes(8, 1, 4, SMALL)
    stacked, alone = standard.init_params([5, 7, 9], sizes), standard.init_params([7], sizes)
    for p, q in zip(stacked, alone):
        assert torch.equal(p[1], q[0])


def test_a_stacked_model_follows_its_run_alone(task):
    train, _ = task
    stacked = standard.fit(train.X, train.y, [3, 4, 5], 4, SMALL)
    alone = standard.fit(train.X, train.y, [4], 4, SMALL)
    assert stacked.fit_step[1] == alone.fit_step[0]
    for p, q in zip(stacked.params, alone.params):
        torch.testing.assert_close(p[1], q[0], rtol=1e-4, atol=1e-5)


def test_a_model_keeps_the_weights_of_its_fit_step(task):
    train, _ = task
    long = standard.fit(train.X, train.y, [0], 4, SMALL)
    step = int(long.fit_step[0])
    exact = standard.fit(train.X, train.y, [0], 4, standard.StandardConfig(width=64, max_steps=step, adam_lr=1e-2))
    for p, q in zip(long.params, exact.params):
        assert torch.equal(p, q)


def test_a_model_that_cannot_fit_reports_it(task):
    train, _ = task
    r = standard.fit(train.X, train.y, [0], 4, standard.StandardConfig(width=2, max_steps=3, adam_lr=1e-3))
    assert r.fit_step[0] == -1 and r.train_acc[0] < 1.0


@pytest.mark.parametrize("value, message", [
    (dict(width=0), "width must be an integer >= 1, got 0"),
    (dict(depth=0), "depth must be an integer >= 1, got 0"),
    (dict(adam_lr=0.0), "adam_lr must be a number > 0.0"),
    (dict(max_steps=0), "max_steps must be an integer >= 1"),
    (dict(pool="max"), "pool must be one of 'mean', 'concat', got 'max'"),
])
def test_bad_configs_name_the_field(value, message):
    with pytest.raises(ValueError, match=message):
        standard.StandardConfig(**value)


@pytest.mark.parametrize("argv, message", [
    (["--learner", "mlp"], "argument --learner: invalid choice: 'mlp' (choose from 'standard', 'theory')"),
    (["--width", "0"], "--width must be an integer >= 1, got 0"),
    (["--max-steps", "0"], "--max-steps must be an integer >= 1, got 0"),
    (["--pool", "max"], "--pool must be one of 'mean', 'concat', got 'max'"),
    (["--multiview-n-train", "0"], "--multiview-n-train must be an integer >= 1, got 0"),
    (["--multiview-n-train", "600"], "--multiview-n-train does nothing without --widths"),
])
def test_bad_learner_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        gn.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and message in err


def test_the_grid_uses_the_standard_learner_by_default_and_the_theory_one_when_asked():
    from test_gaussian_negative import TINY

    cell = gn.QUICK[1]
    std = gn.run_cell(TINY, cell)
    theory = gn.run_cell(gn.dataclasses.replace(TINY, learner_kind="theory"), cell)
    assert gn.NegativeConfig().learner_kind == "standard"
    assert min(std["train_acc"]) == 1.0 and min(std["fit_step"]) >= 0
    assert std["individual_acc"] != theory["individual_acc"]
    # each learner's models, trained here on the cell's own data, are the ones the grid scored
    from multiview import GaussianTask
    from theory_sims.train import train

    task_seed = [TINY.seed, gn.INPUTS.index(cell["input"]), gn.TEACHERS.index(cell["teacher"])]
    task = GaussianTask(gn.task_config(TINY, cell), seed=np.random.SeedSequence(task_seed))
    tr, te = task.sample(TINY.n_train, seed=np.random.SeedSequence(task_seed + [1])), task.sample(
        TINY.n_test, seed=np.random.SeedSequence(task_seed + [2]))
    seeds = range(TINY.seed * 1000, TINY.seed * 1000 + TINY.seeds)
    mine = standard.fit(tr.X, tr.y, seeds, TINY.k, TINY.standard)
    assert std["fit_step"] == mine.fit_step.tolist()
    assert std["individual_acc"] == (mine.logits(te.X).argmax(-1) == te.clean_y).mean(axis=1).tolist()
    other = train(tr.X, tr.y, seeds, TINY.learner, TINY.train).model.logits(te.X, TINY.train.backend, TINY.train.device)
    assert theory["individual_acc"] == (other.argmax(-1) == te.clean_y).mean(axis=1).tolist()
