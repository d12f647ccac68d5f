"""Every objective's closed-form gradient against torch autograd in float64."""

import math

import pytest
import torch

from theory_sims import losses

S, n, k = 4, 7, 5
REL = 1e-8


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    F = torch.randn(S, n, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (n,), generator=g)
    teacher = torch.randn(S, n, k, generator=g, dtype=torch.float64) * 2
    return F, y, teacher


def autograd(fn, F, group_size=1):
    F = F.clone().requires_grad_(True)
    loss, _ = fn(F)
    # every model's loss is its own; members of an averaged group share one loss
    (loss.sum() / group_size).backward()
    return F.grad


CASES = {
    "ce": dict(),
    "kd": dict(temperature=3.0, label_weight=0.3),
    "kd_T1_no_labels": dict(temperature=1.0, label_weight=0.0),
    "kd_truncated": dict(temperature=0.7, label_weight=0.2),
    "kd_truncated_tau2": dict(temperature=2.0, label_weight=0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("shared_teacher", [False, True])
def test_gradient_matches_autograd(case, shared_teacher, data):
    F, y, teacher = data
    if shared_teacher:
        teacher = teacher[0]
    name = case.split("_T1")[0].split("_tau")[0]
    kw = CASES[case]
    fn = lambda F_: losses.loss_and_grad(name, F_, y, teacher, **kw)  # noqa: E731
    _, dF = fn(F)
    assert rel_err(dF, autograd(fn, F)) < REL


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_average_gradient_matches_autograd(group_size, data):
    F, y, _ = data
    fn = lambda F_: losses.loss_and_grad("average", F_, y, group_size=group_size)  # noqa: E731
    loss, dF = fn(F)
    assert loss.shape == (S,)
    assert rel_err(dF, autograd(fn, F, group_size)) < REL


def test_cross_entropy_value_by_hand():
    F = torch.tensor([[[2.0, 0.0, -1.0]]], dtype=torch.float64)
    y = torch.tensor([0])
    loss, _ = losses.cross_entropy(F, y)
    expected = -2.0 + math.log(math.exp(2.0) + 1 + math.exp(-1.0))
    assert float(loss) == pytest.approx(float(expected), rel=1e-14)


def test_kd_matches_torch_kl_div_with_t_squared(data):
    F, y, teacher = data
    T, a = 4.0, 0.25
    loss, _ = losses.kd_hinton(F, y, teacher, T, a)
    for s in range(S):
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(F[s] / T, -1), torch.log_softmax(teacher[s] / T, -1),
            reduction="batchmean", log_target=True,
        )
        ce = torch.nn.functional.cross_entropy(F[s], y)
        assert float(loss[s]) == pytest.approx(float(a * ce + (1 - a) * T * T * kl), rel=1e-12)


def test_kd_is_minimised_by_the_teacher():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(1, 6, 4, generator=g, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    loss, dF = losses.kd_hinton(teacher.clone(), y, teacher, 2.0, 0.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-14)
    assert float(dF.abs().max()) < 1e-14


def test_truncation_stops_the_push_above_tau():
    F = torch.tensor([[[5.0, 0.0, 0.0]]], dtype=torch.float64)  # class 0 above tau = 1
    teacher = torch.tensor([[20.0, 0.0, 0.0]], dtype=torch.float64)
    _, dF = losses.kd_truncated(F, torch.tensor([0]), teacher, 1.0, 0.0)
    assert float(dF[0, 0, 0]) == 0.0


def test_a_wrong_class_above_tau_is_pulled_down_only_by_the_label_term():
    F = torch.tensor([[[0.5, 3.0, 0.0]]], dtype=torch.float64)  # wrong class 1 overshot tau = 2
    teacher = torch.tensor([[9.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    _, no_labels = losses.kd_truncated(F, y, teacher, 2.0, 0.0)
    _, with_labels = losses.kd_truncated(F, y, teacher, 2.0, 0.5)
    assert float(no_labels[0, 0, 1]) == 0.0  # nothing lowers it: the student can stay wrong
    assert float(no_labels[0, 0, 0]) < 0.0  # the right class is still pushed up
    assert float(with_labels[0, 0, 1]) > 0.0  # gradient descent lowers it


def test_kd_needs_a_teacher(data):
    F, y, _ = data
    with pytest.raises(ValueError, match="needs teacher logits"):
        losses.loss_and_grad("kd", F, y)
