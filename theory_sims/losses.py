"""Training objectives on the outputs ``F`` of S stacked models, with their gradients in closed form.

Every function takes the logits ``F`` of shape ``(S, n, k)`` (S models, n samples, k classes) and
returns ``(loss, dF)``: the loss of each model, shape ``(S,)``, and ``dF = d loss_s / d F_s`` of
shape ``(S, n, k)``. Losses are means over the n samples (``batchmean``). The gradients are
written out by hand (the trainer never builds an autograd graph); ``tests/test_losses.py`` checks
each against torch autograd in float64.

``cross_entropy``
    L_s = (1/n) sum_b -log softmax(F_s(X_b))[y_b].

``kd_hinton`` (Hinton et al. 2015, in torchdistill's convention)
    L_s = alpha * CE(F_s, y) + (1 - alpha) * T^2 * (1/n) sum_b KL( softmax(G_b / T) || softmax(F_s(X_b) / T) )
    with teacher logits G, temperature T and ``alpha = label_weight`` multiplying the label term.
    The T^2 factor keeps the soft term's gradient, (1 - alpha) T (softmax(F/T) - softmax(G/T)) / n,
    on the scale of the label term's as T grows.

``kd_paper`` (the paper's KD, Allen-Zhu & Li, Section 4, as we read it)
    The truncated scaled logit
        logit^tau_i(F) = exp(min(tau^2 F_i, 1) / tau) / sum_j exp(min(tau^2 F_j, 1) / tau),
    a softmax at temperature 1/tau of logits capped at F = 1/tau^2, with tau = 1/log^2(k) by
    default (``temperature=0``; 0.189 at k = 10: temperature 5.3, cap 28.1). The update is not the
    gradient of a loss; it is
        w <- w - eta grad CE(F) - eta' (1/n) sum_b sum_i (logit^tau_i(F, X_b) - logit^tau_i(G, X_b))^- grad F_i(X_b)
    with (a)^- = min(a, 0): the full label term plus, weighted by ``kd_weight`` = eta'/eta, a push
    that only ever raises a student logit, and only where its truncated logit is below the
    teacher's. So the trainer's dF is
        dF_{b,i} = (softmax(F_b)_i - 1[i = y_b]) / n + kd_weight * min(logit^tau_i(F_b) - logit^tau_i(G_b), 0) / n.
    The reported loss is CE + kd_weight * (1/n) sum_b sum_i (logit^tau_i(G_b) - logit^tau_i(F_b))^+,
    the total variation distance between the truncated distributions that the push drives to zero.
    Limits: for tau -> 0 both truncated logits tend to uniform and the push to
    (tau / k) min((F_i - mean_j F_j) - (G_i - mean_j G_j), 0), a one-sided match of centred
    logits; a logit above the cap 1/tau^2 changes nothing in logit^tau.
    ``label_weight`` is not used (the label term always has weight 1).

``kd_capped`` (an earlier reading of the paper's objective, kept for comparison)
    logit^c(F)_i = exp(min(tau^2, tau F_i)) / sum_j exp(min(tau^2, tau F_j)): a softmax at
    temperature 1/tau of logits capped at F = tau, and
    L_s = alpha * CE(F_s, y) + (1 - alpha) * (1/n) sum_b KL( logit^c(G_b) || logit^c(F_s(X_b)) ),
    two-sided. Once the student is confident (F_i >= tau) a class gets no more push, in either
    direction: a wrong class that one large step pushed above tau is brought back only by the
    label term (alpha > 0). Its gradient is (1 - alpha) tau 1[F_i < tau] (logit^c_i(F) - logit^c_i(G)) / n.

``average_cross_entropy`` (training the average)
    Models are taken in consecutive groups of ``group_size``; each group's output is the mean
    Fbar = (1/S_g) sum_{s in group} F_s and every member gets the group's loss CE(Fbar, y).
    Each member's gradient is therefore (1/S_g) of the group gradient: dF_s = (softmax(Fbar) - e_y) / (n S_g).
    ``"sum"`` is the same group with the members' sum F = sum_s F_s as its output: one network of
    S_g * m neurons per class, every member getting the group's gradient (softmax(F) - e_y) / n. The
    two differ only in the output's scale, 1/S_g: the average's loss stays high longer.

Teacher logits may be ``(n, k)`` (one teacher for every model) or ``(S, n, k)`` (one per model).
"""

from __future__ import annotations

import math

import torch

LOSSES = ("ce", "kd", "kd_paper", "kd_capped", "average", "sum")
# Losses that train consecutive groups of ``group_size`` models as one network.
GROUP_LOSSES = ("average", "sum")
KD_LOSSES = ("kd", "kd_paper", "kd_capped")


def _onehot(y: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, k).to(dtype=like.dtype)


def cross_entropy(F: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = F.shape[1]
    logp = torch.log_softmax(F, dim=-1)
    loss = -logp.gather(-1, y.expand(F.shape[0], n).unsqueeze(-1)).squeeze(-1).mean(dim=1)
    dF = (logp.exp() - _onehot(y, F.shape[-1], F)) / n
    return loss, dF


def _soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model KL(softmax(teacher) || softmax(student)) summed over classes, batchmean; and
    its gradient with respect to the student's logits (softmax(student) - softmax(teacher)) / n."""
    n = student_logits.shape[1]
    logp = torch.log_softmax(student_logits, dim=-1)
    logq = torch.log_softmax(teacher_logits, dim=-1).expand_as(logp)
    q = logq.exp()
    kl = (q * (logq - logp)).sum(dim=-1).mean(dim=1)
    return kl, (logp.exp() - q) / n


def kd_hinton(F, y, teacher, temperature: float, label_weight: float):
    T, a = float(temperature), float(label_weight)
    ce, dce = cross_entropy(F, y)
    kl, dkl = _soft_kl(F / T, teacher / T)
    return a * ce + (1 - a) * T * T * kl, a * dce + (1 - a) * T * dkl


def paper_tau(k: int) -> float:
    """The paper's KD temperature parameter tau = 1 / log^2(k)."""
    return 1.0 / math.log(k) ** 2


def truncated_logit(F: torch.Tensor, tau: float) -> torch.Tensor:
    """logit^tau(F) = softmax(min(tau^2 F, 1) / tau) over the last axis (the paper's KD target)."""
    return torch.softmax(torch.clamp(tau * tau * F, max=1.0) / tau, dim=-1)


def kd_paper(F, y, teacher, temperature: float = 0.0, kd_weight: float = 1.0):
    """The paper's one-sided KD update (see the module docstring); ``temperature`` is tau, 0 for
    the paper's 1/log^2(k)."""
    n, k = F.shape[1], F.shape[-1]
    tau = float(temperature) or paper_tau(k)
    ce, dce = cross_entropy(F, y)
    gap = truncated_logit(F, tau) - truncated_logit(teacher, tau).expand_as(F)
    below = torch.clamp(gap, max=0.0)  # (a)^-: only where the student is below the teacher
    return ce - kd_weight * below.sum(dim=-1).mean(dim=1), dce + kd_weight * below / n


def capped_logits(F: torch.Tensor, tau: float) -> torch.Tensor:
    """min(tau^2, tau F): the logits inside ``kd_capped``'s softmax."""
    return torch.clamp(tau * F, max=tau * tau)


def kd_capped(F, y, teacher, temperature: float, label_weight: float):
    tau, a = float(temperature), float(label_weight)
    ce, dce = cross_entropy(F, y)
    kl, dkl = _soft_kl(capped_logits(F, tau), capped_logits(teacher, tau))
    live = (tau * F < tau * tau).to(F.dtype)  # d min(tau^2, tau F) / dF
    return a * ce + (1 - a) * kl, a * dce + (1 - a) * tau * live * dkl


def group_cross_entropy(F, y, group_size: int, how: str = "average"):
    """CE of each group's output, its members' mean (``"average"``) or sum (``"sum"``)."""
    S, n, k = F.shape
    groups = F.reshape(S // group_size, group_size, n, k)
    scale = 1.0 / group_size if how == "average" else 1.0
    loss, dout = cross_entropy(groups.sum(dim=1) * scale, y)
    dF = (dout * scale).unsqueeze(1).expand(-1, group_size, -1, -1).reshape(S, n, k)
    return loss.repeat_interleave(group_size), dF


def loss_and_grad(name: str, F, y, teacher=None, temperature=1.0, label_weight=0.0, group_size=1, kd_weight=1.0):
    """Dispatch on ``name`` (one of ``LOSSES``); see the module docstring for each formula."""
    if name == "ce":
        return cross_entropy(F, y)
    if name in GROUP_LOSSES:
        return group_cross_entropy(F, y, group_size, name)
    if teacher is None:
        raise ValueError(f"loss {name!r} needs teacher logits")
    if name == "kd":
        return kd_hinton(F, y, teacher, temperature, label_weight)
    if name == "kd_paper":
        return kd_paper(F, y, teacher, temperature, kd_weight)
    if name == "kd_capped":
        return kd_capped(F, y, teacher, temperature, label_weight)
    raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {name!r}")
