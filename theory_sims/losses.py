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

``kd_truncated`` (the paper's truncated temperature softmax)
    logit^tau(F)_i = exp(min(tau^2, tau F_i)) / sum_j exp(min(tau^2, tau F_j)), and
    L_s = alpha * CE(F_s, y) + (1 - alpha) * (1/n) sum_b KL( logit^tau(G_b) || logit^tau(F_s(X_b)) ).
    The truncation caps every logit at tau before the temperature: once the student is confident
    (F_i >= tau) a class gets no more push, in either direction: a wrong class that one large step
    pushed above tau is brought back only by the label term (alpha > 0). Its gradient is
    (1 - alpha) tau 1[F_i < tau] (logit^tau_i(F) - logit^tau_i(G)) / n.

``average_cross_entropy`` (training the average)
    Models are taken in consecutive groups of ``group_size``; each group's output is the mean
    Fbar = (1/S_g) sum_{s in group} F_s and every member gets the group's loss CE(Fbar, y).
    Each member's gradient is therefore (1/S_g) of the group gradient: dF_s = (softmax(Fbar) - e_y) / (n S_g).

Teacher logits may be ``(n, k)`` (one teacher for every model) or ``(S, n, k)`` (one per model).
"""

from __future__ import annotations

import torch

LOSSES = ("ce", "kd", "kd_truncated", "average")


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


def truncated_logits(F: torch.Tensor, tau: float) -> torch.Tensor:
    """min(tau^2, tau F): the logits inside the paper's truncated temperature softmax."""
    return torch.clamp(tau * F, max=tau * tau)


def kd_truncated(F, y, teacher, temperature: float, label_weight: float):
    tau, a = float(temperature), float(label_weight)
    ce, dce = cross_entropy(F, y)
    kl, dkl = _soft_kl(truncated_logits(F, tau), truncated_logits(teacher, tau))
    live = (tau * F < tau * tau).to(F.dtype)  # d min(tau^2, tau F) / dF
    return a * ce + (1 - a) * kl, a * dce + (1 - a) * tau * live * dkl


def average_cross_entropy(F, y, group_size: int):
    S, n, k = F.shape
    groups = F.reshape(S // group_size, group_size, n, k)
    loss, dmean = cross_entropy(groups.mean(dim=1), y)
    dF = (dmean / group_size).unsqueeze(1).expand(-1, group_size, -1, -1).reshape(S, n, k)
    return loss.repeat_interleave(group_size), dF


def loss_and_grad(name: str, F, y, teacher=None, temperature=1.0, label_weight=0.0, group_size=1):
    """Dispatch on ``name`` (one of ``LOSSES``); see the module docstring for each formula."""
    if name == "ce":
        return cross_entropy(F, y)
    if name == "average":
        return average_cross_entropy(F, y, group_size)
    if teacher is None:
        raise ValueError(f"loss {name!r} needs teacher logits")
    if name == "kd":
        return kd_hinton(F, y, teacher, temperature, label_weight)
    if name == "kd_truncated":
        return kd_truncated(F, y, teacher, temperature, label_weight)
    raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {name!r}")
