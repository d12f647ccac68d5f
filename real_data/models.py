"""The networks: WideResNet-d-k (Zagoruyko & Komodakis) and a fast small network in the airbench style.

``make_model("wrn", depth=28, width=10)`` is the paper's WRN-28-10; ``make_model("fast")`` is a
9-layer conv net (three stages of conv-pool-conv with batch norm and GELU, max-pooled features,
a linear read-out), which trains CIFAR-10 in seconds on a modern GPU. ``width`` scales every
stage of the fast network (1.0: 64, 256, 256 channels), so narrow copies run on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MODELS = ("fast", "wrn")


class _WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout:
            y = F.dropout(y, self.dropout, self.training)
        y = self.conv2(y)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-width: (depth - 4) / 6 blocks in each of three stages of 16k, 32k, 64k channels."""

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if width < 1:
            raise ValueError(f"width must be an integer >= 1, got {width}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for stage in range(3):
            for i in range(n):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                blocks.append(_WideBlock(c_in, widths[stage + 1], 2 if (i == 0 and stage > 0) else 1, dropout))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x):
        """The last stage's activations (N, 64k, 8, 8), after the final BN-ReLU."""
        return F.relu(self.bn(self.blocks(self.stem(x))))

    @staticmethod
    def pool(features):
        """Global average pooling of the feature maps."""
        return features.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))


class _ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, pool: bool):
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.BatchNorm2d(c_out), nn.GELU()]
        super().__init__(*layers)


class FastNet(nn.Module):
    """Stem conv, then three stages (conv + 2x2 max-pool, conv), global max pool, linear read-out.

    The logits are scaled by ``1/scale`` (as in airbench, a fixed temperature that lets plain SGD
    with a large learning rate train the read-out stably).
    """

    def __init__(self, num_classes: int = 10, width: float = 1.0, scale: float = 9.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be a number > 0, got {width}")
        c = [max(8, round(64 * width)), max(8, round(256 * width)), max(8, round(256 * width))]
        self.stem = _ConvBN(3, max(8, round(32 * width)), pool=False)
        stages, c_in = [], self.stem[0].out_channels
        for c_out in c:
            stages.append(nn.Sequential(_ConvBN(c_in, c_out, pool=True), _ConvBN(c_out, c_out, pool=False)))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes, bias=False)
        self.width, self.scale = width, scale

    def features(self, x):
        """The last stage's activations (N, C, 4, 4)."""
        return self.stages(self.stem(x))

    @staticmethod
    def pool(features):
        """Global max pooling of the feature maps."""
        return features.amax(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.pool(self.features(x))) / self.scale


class StackedFastNet(nn.Module):
    """S fast nets of the same shape as one network: the stem is one convolution with S times the
    filters (every member sees the same input), every later convolution is grouped (groups = S), batch
    norm is per channel, and the read-out is one matrix per member. Member s computes exactly what
    the fast net it was built from computes; ``forward`` returns logits (S, N, k).

    Trained with the sum of the members' losses, each member receives the gradient it would get
    alone on the same mini-batch, so S seeds train in one pass (sharing batch order and
    augmentation). :meth:`unstack` gives the members back as ordinary :class:`FastNet` s.
    """

    def __init__(self, members: list[FastNet]):
        super().__init__()
        self.S = S = len(members)
        ref = members[0]
        self.scale = ref.scale
        self._member_args = (ref.fc.out_features, ref.width, ref.scale)  # to rebuild a member in unstack
        convs = [[mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.GELU))]
                 for m in members]
        layers = []
        for i, mod in enumerate(convs[0]):
            if isinstance(mod, nn.Conv2d):
                first = i == 0
                conv = nn.Conv2d(mod.in_channels * (1 if first else S), mod.out_channels * S, 3, padding=1, bias=False,
                                 groups=1 if first else S)
                conv.weight.data.copy_(torch.cat([c[i].weight.data for c in convs]))
                layers.append(conv)
            elif isinstance(mod, nn.BatchNorm2d):
                bn = nn.BatchNorm2d(mod.num_features * S)
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name).data.copy_(torch.cat([getattr(c[i], name).data for c in convs]))
                layers.append(bn)
            else:
                layers.append(type(mod)(2) if isinstance(mod, nn.MaxPool2d) else nn.GELU())
        self.body = nn.Sequential(*layers)
        self.fc = nn.Parameter(torch.stack([m.fc.weight.data.T for m in members]))  # (S, C, k)

    def forward(self, x):
        f = self.body(x).amax(dim=(2, 3))  # (N, S*C)
        return torch.einsum("nsc,sck->snk", f.view(len(x), self.S, -1), self.fc) / self.scale

    def unstack(self) -> list[FastNet]:
        """The members as separate fast nets (copies of the current weights and statistics)."""
        stacked = [mod for mod in self.body if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d))]
        out = []
        for s in range(self.S):
            m = FastNet(*self._member_args).to(self.fc.device)
            mods = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d))]
            for mine, big in zip(mods, stacked):
                n = mine.weight.shape[0]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    t = getattr(mine, name, None)
                    if t is not None:
                        t.data.copy_(getattr(big, name).data[s * n : (s + 1) * n])
                if isinstance(mine, nn.BatchNorm2d):
                    mine.num_batches_tracked.copy_(big.num_batches_tracked)
            m.fc.weight.data.copy_(self.fc.data[s].T)
            out.append(m)
        return out


def make_model(name: str, num_classes: int, depth: int = 28, width: float = 10, dropout: float = 0.0) -> nn.Module:
    if name == "wrn":
        if float(width) != int(width):
            raise ValueError(f"width must be an integer for a WideResNet, got {width}")
        return WideResNet(depth, int(width), num_classes, dropout)
    if name == "fast":
        return FastNet(num_classes, float(width))
    raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {name!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_image(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-adds of one forward pass, counted by hooks on every conv and linear layer."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total
