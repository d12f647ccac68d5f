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
    "kd_capped": dict(temperature=0.7, label_weight=0.2),
    "kd_capped_tau2": dict(temperature=2.0, label_weight=0.0),
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


@pytest.mark.parametrize("how", ["average", "sum"])
@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_average_gradient_matches_autograd(group_size, how, data):
    F, y, _ = data
    fn = lambda F_: losses.loss_and_grad(how, F_, y, group_size=group_size)  # noqa: E731
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
    _, dF = losses.kd_capped(F, torch.tensor([0]), teacher, 1.0, 0.0)
    assert float(dF[0, 0, 0]) == 0.0


def test_a_wrong_class_above_tau_is_pulled_down_only_by_the_label_term():
    F = torch.tensor([[[0.5, 3.0, 0.0]]], dtype=torch.float64)  # wrong class 1 overshot tau = 2
    teacher = torch.tensor([[9.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    _, no_labels = losses.kd_capped(F, y, teacher, 2.0, 0.0)
    _, with_labels = losses.kd_capped(F, y, teacher, 2.0, 0.5)
    assert float(no_labels[0, 0, 1]) == 0.0  # nothing lowers it: the student can stay wrong
    assert float(no_labels[0, 0, 0]) < 0.0  # the right class is still pushed up
    assert float(with_labels[0, 0, 1]) > 0.0  # gradient descent lowers it


def test_kd_needs_a_teacher(data):
    F, y, _ = data
    with pytest.raises(ValueError, match="needs teacher logits"):
        losses.loss_and_grad("kd", F, y)


# ----------------------------------------------------------------------------- the paper's KD

def paper_surrogate(F, y, teacher, tau, kd_weight):
    """A loss whose autograd gradient is the paper's update: CE plus kd_weight times the one-sided
    gaps (held constant) times the logits, i.e. sum_i (logit^tau_i(F) - logit^tau_i(G))^- F_i."""
    def lt(Z):
        return torch.softmax(torch.clamp(tau * tau * Z, max=1.0) / tau, dim=-1)

    ce = torch.nn.functional.cross_entropy(F.reshape(-1, F.shape[-1]), y.repeat(F.shape[0]), reduction="none")
    gap = torch.clamp(lt(F) - lt(teacher).expand_as(F), max=0.0).detach()
    return ce.view(F.shape[0], -1).mean(dim=1) + kd_weight * (gap * F).sum(dim=-1).mean(dim=1)


@pytest.mark.parametrize("tau,kd_weight", [(0.0, 1.0), (0.3, 2.5), (1.5, 0.7)])
@pytest.mark.parametrize("shared_teacher", [False, True])
def test_paper_kd_update_is_autograd_of_its_surrogate(tau, kd_weight, shared_teacher, data):
    F, y, teacher = data
    if shared_teacher:
        teacher = teacher[0]
    _, dF = losses.loss_and_grad("kd_paper", F, y, teacher, temperature=tau, kd_weight=kd_weight)
    tau_used = tau or 1 / math.log(k) ** 2
    Fg = F.clone().requires_grad_(True)
    paper_surrogate(Fg, y, teacher, tau_used, kd_weight).sum().backward()
    assert rel_err(dF, Fg.grad) < REL


def test_paper_kd_default_tau_is_one_over_log_squared_k():
    assert losses.paper_tau(10) == pytest.approx(1 / math.log(10) ** 2)
    assert 1 / losses.paper_tau(10) == pytest.approx(5.30, abs=0.01)  # the temperature at k = 10
    assert 1 / losses.paper_tau(10) ** 2 == pytest.approx(28.1, abs=0.1)  # the cap on F


def test_paper_kd_never_pushes_a_logit_down(data):
    F, y, teacher = data
    for scale in (0.1, 1.0, 30.0):
        _, with_kd = losses.kd_paper(F, y, teacher * scale, 0.0, 3.0)
        _, ce_only = losses.cross_entropy(F, y)
        # gradient descent moves F by -dF: the teacher's part of dF is never positive
        assert float((with_kd - ce_only).max()) <= 0.0
        assert float((with_kd - ce_only).min()) < 0.0  # and it does push somewhere


def test_paper_kd_pushes_only_where_the_student_is_below_the_teacher():
    F = torch.tensor([[[3.0, 0.0, 0.0]]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 6.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    _, dF = losses.kd_paper(F, y, teacher, 0.5, 1.0)
    _, dce = losses.cross_entropy(F, y)
    push = (dF - dce)[0, 0]
    assert float(push[1]) < 0.0  # class 1: below the teacher, raised
    assert float(push[0]) == 0.0 and float(push[2]) == 0.0  # above the teacher: left alone


def test_paper_kd_matching_teacher_leaves_only_the_label_term(data):
    F, y, _ = data
    loss, dF = losses.kd_paper(F, y, F.clone(), 0.0, 5.0)
    ce, dce = losses.cross_entropy(F, y)
    assert torch.equal(dF, dce) and torch.allclose(loss, ce)


def test_paper_kd_small_tau_is_one_sided_matching_of_centred_logits(data):
    """tau -> 0: both truncated logits tend to uniform and the push to (tau / k) times the
    one-sided gap of the centred logits."""
    F, y, teacher = data
    _, dce = losses.cross_entropy(F, y)
    centred = lambda Z: Z - Z.mean(dim=-1, keepdim=True)  # noqa: E731
    limit = torch.clamp(centred(F) - centred(teacher), max=0.0) / k / n
    errs = []
    for tau in (1e-2, 1e-3, 1e-4):
        _, dF = losses.kd_paper(F, y, teacher, tau, 1.0)
        errs.append(rel_err((dF - dce) / tau, limit))
    assert errs[0] < 0.05 and errs[2] < errs[1] < errs[0]  # converges, about linearly in tau
    assert errs[2] < 1e-3


def test_paper_kd_logits_above_the_cap_change_nothing():
    tau = 0.4  # cap at F = 1 / tau^2 = 6.25
    F = torch.tensor([[[7.0, 1.0, -2.0]]], dtype=torch.float64)
    higher = F.clone()
    higher[0, 0, 0] = 50.0
    assert torch.equal(losses.truncated_logit(F, tau), losses.truncated_logit(higher, tau))
    below = F.clone()
    below[0, 0, 0] = 6.0
    assert not torch.equal(losses.truncated_logit(F, tau), losses.truncated_logit(below, tau))


def test_paper_kd_reported_loss_is_ce_plus_total_variation(data):
    F, y, teacher = data
    tau, w = 0.5, 2.0
    loss, _ = losses.kd_paper(F, y, teacher, tau, w)
    ce, _ = losses.cross_entropy(F, y)
    tv = 0.5 * (losses.truncated_logit(F, tau) - losses.truncated_logit(teacher, tau)).abs().sum(-1).mean(-1)
    assert torch.allclose(loss, ce + w * tv, rtol=1e-12)


def test_a_group_trained_as_a_sum_is_the_average_at_group_size_times_the_logits():
    """'sum' and 'average' differ only in the output's scale: CE of the sum is CE of L times the mean."""
    g = torch.Generator().manual_seed(1)
    F = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    loss_sum, d_sum = losses.loss_and_grad("sum", F, y, group_size=2)
    loss_avg, d_avg = losses.loss_and_grad("average", F * 2, y, group_size=2)
    assert torch.allclose(loss_sum, loss_avg)
    assert torch.allclose(d_sum, d_avg * 2)
