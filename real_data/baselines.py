"""Random-feature and linearised (NTK) versions of a network, as drop-in ``nn.Module``s.

The paper contrasts deep networks with random feature mappings: there, ensembles help but
distillation does not. Both wrappers below run through the very experiment of
``real_data.reproduce`` (``--mode random_features`` / ``--mode ntk``), with the same trainer,
objectives and checkpoints.

Both first set the network's batch-norm statistics on a fixed batch of training images (one
forward pass in train mode, cumulative averages) and then keep batch norm in eval mode: the
random network becomes a fixed, well-scaled function (without this, PyTorch's default init
shrinks the activations layer by layer and the features and the Jacobian are nearly degenerate:
measured, the loss did not move).

* :class:`RandomFeatureNet`: the network frozen at its random init, its pooled last-stage features standardised by a
  non-affine batch norm, and a trained linear read-out. Only the read-out learns.
* :class:`LinearisedNet`: the first-order Taylor expansion of the network around its init theta0,
  ``f_lin(x) = f(x; theta0) + J_theta f(x; theta0) . delta``, with ``delta`` trained (it starts at
  0, so the linearised net starts where the network does) and computed by ``torch.func.jvp`` on
  ``torch.func.functional_call`` (batch norm again in eval mode at its initial statistics, so that
  f is a fixed function of theta). Forward and backward cost about three forward passes of the
  network.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp

MODES = ("full", "random_features", "ntk")


@torch.no_grad()
def calibrate_batch_norm(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every batch norm's running statistics to those of ``x`` (one pass, cumulative average)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    net(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return net.eval()


class RandomFeatureNet(nn.Module):
    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            width = net.pool(net.features(torch.zeros(2, 3, 32, 32))).shape[1]
        self.norm = nn.BatchNorm1d(width, affine=False)
        self.fc = nn.Linear(width, num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # the random features never change
        return self

    def features(self, x):
        return self.net.features(x)

    def pool(self, f):
        return self.net.pool(f)

    def forward(self, x):
        with torch.no_grad():
            phi = self.net.pool(self.net.features(x))
        return self.fc(self.norm(phi))


class LinearisedNet(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()
        self.names = [n for n, _ in net.named_parameters()]
        self.theta0 = {n: p.detach().clone() for n, p in net.named_parameters()}
        for p in self.net.parameters():
            p.requires_grad_(False)
        # one trainable displacement per parameter tensor, stored flat-named for the state dict
        self.delta = nn.ParameterList([nn.Parameter(torch.zeros_like(p)) for p in self.theta0.values()])

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.theta0 = {n: fn(t) for n, t in self.theta0.items()}
        return self

    def forward(self, x):
        buffers = dict(self.net.named_buffers())

        def f(params):
            return functional_call(self.net, ({**dict(zip(self.names, params))}, buffers), (x,))

        primal = tuple(self.theta0[n] for n in self.names)
        out, tangent = jvp(f, (primal,), (tuple(self.delta),))
        return out + tangent


def wrap(net: nn.Module, mode: str, num_classes: int, calibration: torch.Tensor | None = None) -> nn.Module:
    """``net`` itself (``full``) or its random-feature / linearised version; ``calibration``
    images set the batch-norm statistics first (leave it None when a state dict will be loaded)."""
    if mode == "full":
        return net
    if calibration is not None:
        calibrate_batch_norm(net.to(calibration.device), calibration)
    if mode == "random_features":
        return RandomFeatureNet(net, num_classes)
    if mode == "ntk":
        return LinearisedNet(net)
    raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
