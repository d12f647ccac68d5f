"""Views made visible: what channels of a trained CIFAR network respond to, and how many of them a
class relies on.

Three figures, from job checkpoints written by ``real_data.reproduce`` (``RUN/checkpoints/*.pt``):

* **channels** (``channels.png``): for each chosen channel of ``--layer``, the test images that
  activate it most (the activating region highlighted: the channel's activation map, upsampled,
  drawn over the image) and an activation-maximisation image (gradient ascent on the input from
  small noise, with L2 and total-variation penalties and random jitter). ``--channels 3,17`` picks
  channels by index; ``--auto N`` the N most class-selective ones (largest gap between the mean
  activation on one class and on the rest, in units of the channel's std).
* **compare** (``compare.png``, with ``--compare CKPT ...`` and ``--class NAME``): for one class,
  the channels of the last stage each network relies on most (largest read-out weight times mean
  activation on that class), shown by their top images: different seeds pick different channels
  (different views), and the title of each row says how many channels carry half of the class's
  logit, a count that is larger for a network that holds more views.
* **ablation** (``ablation.png``, ``ablation.csv``, with ``--ablation``): test accuracy per class
  while a growing fraction of the layer's channels is zeroed, at random or the most-relied-on
  first; a class that keeps its accuracy with many channels removed has several views.

Example::

    python -m real_data.visualize --checkpoint runs/R/checkpoints/single-0.pt --data PATH --layer stages.2 --auto 6
    python -m real_data.visualize --checkpoint runs/R/checkpoints/single-0.pt --data PATH --class horse \\
        --compare runs/R/checkpoints/single-1.pt runs/R/checkpoints/kd-0.pt --ablation
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from multiview.cli import Parser, as_flag, fail, refuse_inert


def layer_names(model: nn.Module) -> list[str]:
    """Names of the modules whose output is a feature map worth looking at (convs and blocks)."""
    names = []
    for name, mod in model.named_modules():
        if name and isinstance(mod, (nn.Conv2d, nn.Sequential)) or type(mod).__name__ in ("_WideBlock",):
            names.append(name)
    return names


def _module(model: nn.Module, layer: str) -> nn.Module:
    mods = dict(model.named_modules())
    if layer not in mods or not layer:
        raise ValueError(f"layer must be one of {', '.join(layer_names(model))}, got {layer!r}")
    return mods[layer]


def activations(model: nn.Module, layer: str, x: torch.Tensor, batch_size: int = 500,
                channel_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature maps of ``layer`` (N, C, h, w), logits (N, k)) on ``x``; with ``channel_mask`` (C,)
    the layer's output is multiplied by it (ablation) before the rest of the network runs."""
    mod = _module(model, layer)
    seen = []

    def hook(_, __, out):
        if channel_mask is not None:
            out = out * channel_mask.view(1, -1, 1, 1).to(out.dtype)
        seen.append(out.detach())
        return out

    handle = mod.register_forward_hook(hook)
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([model(x[a : a + batch_size]) for a in range(0, len(x), batch_size)])
    finally:
        handle.remove()
    return torch.cat(seen), logits


def class_selective_channels(maps: torch.Tensor, y: torch.Tensor, n: int) -> list[int]:
    """The ``n`` channels whose spatial-max activation differs most between one class and the rest
    (max over classes of (mean on class - mean elsewhere) / std)."""
    act = maps.amax(dim=(2, 3))  # (N, C)
    std = act.std(dim=0).clamp_min(1e-8)
    gaps = []
    for c in torch.unique(y):
        on = y == c
        gaps.append((act[on].mean(0) - act[~on].mean(0)) / std)
    score = torch.stack(gaps).amax(dim=0)
    return score.argsort(descending=True)[:n].tolist()


def relied_on_channels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """Channels of the last stage ordered by their contribution to class ``cls``'s logit on its own
    images (read-out weight x mean pooled activation), and those contributions."""
    feats = []
    model.eval()
    with torch.no_grad():
        for a in range(0, len(x), 500):
            feats.append(model.pool(model.features(x[a : a + 500])))
    pooled = torch.cat(feats)[y == cls].mean(0)
    contrib = (model.fc.weight[cls] * pooled).detach().cpu().numpy()
    order = np.argsort(-contrib)
    return order, contrib[order]


def channels_for_half(contrib_sorted: np.ndarray) -> int:
    """How many of the positive contributions (largest first) sum to half of their total."""
    pos = contrib_sorted[contrib_sorted > 0]
    if not len(pos):
        return 0
    return int(np.searchsorted(np.cumsum(pos), pos.sum() / 2) + 1)


def activation_maximisation(model: nn.Module, layer: str, channel: int, mean, std, steps: int = 96,
                            lr: float = 0.05, l2: float = 0.05, tv: float = 0.5, seed: int = 0) -> np.ndarray:
    """An input that excites ``channel`` of ``layer``: gradient ascent on the mean activation from
    small noise, with penalties ``l2`` on the mean squared (normalised) pixel and ``tv`` on the mean
    absolute difference of neighbouring pixels, and random jitter of up to 2 pixels; uint8 (32, 32, 3)."""
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    x = (0.1 * torch.randn(1, 3, 32, 32, generator=gen)).to(dev).requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    mod = _module(model, layer)
    grabbed = {}
    handle = mod.register_forward_hook(lambda _, __, out: grabbed.__setitem__("out", out))
    model.eval()
    try:
        for _ in range(steps):
            dy, dx = torch.randint(-2, 3, (2,), generator=gen).tolist()
            model(torch.roll(x, (dy, dx), dims=(2, 3)))
            act = grabbed["out"][0, channel].mean()
            tv_loss = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
            loss = -act + l2 * x.pow(2).mean() + tv * tv_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        handle.remove()
    return to_uint8(x.detach()[0], mean, std)


def to_uint8(x: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised image (3, 32, 32) back to pixels, (32, 32, 3) uint8."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return ((x * s + m).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def ablation_curves(model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, k: int, fractions,
                    order: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Accuracy per class (len(fractions), k) with the first ``fraction`` of the layer's channels
    zeroed, in ``order`` (None: a random order drawn from ``seed``)."""
    maps, _ = activations(model, layer, x[:2])
    C = maps.shape[1]
    if order is None:
        order = np.random.default_rng(seed).permutation(C)
    out = np.zeros((len(fractions), k))
    for i, f in enumerate(fractions):
        mask = torch.ones(C)
        mask[torch.as_tensor(order[: int(round(f * C))], dtype=torch.long)] = 0
        _, logits = activations(model, layer, x, channel_mask=mask.to(x.device))
        pred = logits.argmax(-1)
        for c in range(k):
            on = y == c
            out[i, c] = float((pred[on] == c).float().mean()) if on.any() else np.nan
    return out


# -------------------------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="white")
    return plt


def _overlay(ax, img: np.ndarray, amap: np.ndarray | None):
    ax.imshow(img, interpolation="nearest")
    if amap is not None:
        up = F.interpolate(torch.as_tensor(amap)[None, None].float(), size=img.shape[:2], mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        up = (up - up.min()) / max(float(up.max() - up.min()), 1e-8)
        ax.imshow(up, cmap="magma", alpha=0.45 * up, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])


def channel_grid(images: np.ndarray, maps: torch.Tensor, channels: list[int], top: int, am: dict, title: str,
                 labels: np.ndarray | None = None, classes=None):
    """Rows: channels. Columns: the top-activating images with their activation map, then the
    activation-maximisation image."""
    plt = _plt()
    cols = top + (1 if am else 0)
    fig, axes = plt.subplots(len(channels), cols, figsize=(1.15 * cols + 0.8, 1.2 * len(channels) + 0.6), squeeze=False)
    act = maps.amax(dim=(2, 3))
    for r, ch in enumerate(channels):
        best = act[:, ch].argsort(descending=True)[:top].tolist()
        for j, idx in enumerate(best):
            ax = axes[r, j]
            _overlay(ax, images[idx], maps[idx, ch].cpu().numpy())
            if labels is not None and classes is not None:
                ax.set_title(classes[int(labels[idx])], fontsize=6, pad=1)
        axes[r, 0].set_ylabel(f"ch {ch}", fontsize=8)
        if am:
            _overlay(axes[r, -1], am[ch], None)
            if r == 0:
                axes[r, -1].set_title("act. max.", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def collapse_fraction(fractions, acc: np.ndarray) -> float | None:
    """The first fraction of zeroed channels from which the network predicts one class for every
    input, read off the per-class accuracies ``acc`` (len(fractions), k): that class at 1, every
    other at 0 (the flat lines of the figure), from there on; None if it never does."""
    collapsed = [np.nanmax(a) >= 0.99 and np.sort(a)[-2] <= 0.01 and np.nanargmax(a) == np.nanargmax(acc[-1])
                 for a in np.nan_to_num(acc)]
    for i in range(len(fractions)):
        if all(collapsed[i:]):
            return float(fractions[i])
    return None


def ablation_figure(fractions, curves: dict, classes):
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False, sharey=True)
    for ax, (name, acc) in zip(axes[0], curves.items()):
        for c, cls in enumerate(classes):
            ax.plot(fractions, acc[:, c], marker="o", ms=2.5, lw=1, label=cls)
        collapse = collapse_fraction(fractions, acc)
        note = ("" if collapse is None else
                f"\nfrom {collapse:.0%} zeroed every prediction is {classes[int(np.nanargmax(acc[-1]))]}")
        ax.set(title=f"{name} channels zeroed{note}", xlabel="fraction of channels zeroed", ylim=(-0.02, 1.02))
        if collapse is not None:
            ax.axvspan(collapse, max(fractions), color="grey", alpha=0.12, lw=0)
    axes[0, 0].set_ylabel("test accuracy of the class")
    fig.tight_layout()
    handles, labels = axes[0, -1].get_legend_handles_labels()  # below the panels, clear of the curves
    fig.legend(handles, labels, fontsize=7, ncol=min(len(labels), 5), loc="upper center",
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> Parser:
    p = Parser(prog="python -m real_data.visualize", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a job checkpoint of real_data.reproduce (RUN/checkpoints/NAME.pt)")
    p.add_argument("--data", default=None, help="the CIFAR data the run used (default: $CIFAR_DATA)")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache, as for real_data.reproduce")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"), help="(default: cifar10)")
    p.add_argument("--layer", default=None, help="module name of the layer (default: the last stage; "
                                                 "a bad name lists the choices)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--channels", default=None, help="comma-separated channel indices")
    g.add_argument("--auto", type=int, default=6, help="the N most class-selective channels (default: 6)")
    p.add_argument("--top", type=int, default=8, help="top-activating images per channel (default: 8)")
    p.add_argument("--n-test", type=int, default=2000, help="test images searched (default: 2000)")
    p.add_argument("--am-steps", type=int, default=96, help="activation-maximisation steps (0: none; default: 96)")
    p.add_argument("--class", dest="cls", default=None, help="class name for --compare (default: the first class)")
    p.add_argument("--compare", nargs="+", default=None, metavar="CKPT",
                   help="more checkpoints (other seeds, a KD student) to compare with --checkpoint on one class")
    p.add_argument("--ablation", action="store_true", help="also the channel-ablation curves of --layer")
    p.add_argument("--out", default=None, help="output folder (default: runs/visualize-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test subset, jitter and random ablation order")
    return p


# Flags that act only with another: (flag, argparse dest, whether it acts, the flag it needs) (multiview.cli.refuse_inert).
INERT_FLAGS = (("--class", "cls", lambda args: args.compare is not None, "without --compare CKPT ..."),)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from real_data import data as rd
    from real_data.data import ENV_VAR, DataError
    from real_data.train import load_models, normalise
    from theory_sims.results import refuse_another_run, save_figure, start_run, write_csv, write_json

    try:
        refuse_another_run(args.out, resumable=False)  # before the slow part: a folder of earlier figures is never mixed with new ones
        for flag, value, lo in (("--top", args.top, 1), ("--n-test", args.n_test, 1), ("--auto", args.auto, 1),
                                ("--am-steps", args.am_steps, 0), ("--seed", args.seed, 0)):
            if value is not None and value < lo:
                raise ValueError(f"{flag} must be an integer >= {lo}, got {value}")
        refuse_inert(args, args, INERT_FLAGS)
        models, meta = load_models(args.checkpoint, what="--checkpoint")
        model = models[0]
        layer = _last_stage(model) if args.layer is None else args.layer  # an empty --layer is refused, not read as none
        try:
            _module(model, layer)
        except ValueError as err:  # "layer must be one of ...": the line names --layer
            raise ValueError(as_flag(str(err), names=["layer"])) from None
        data_path = args.data or os.environ.get(ENV_VAR)
        if data_path is None or not Path(data_path).exists():
            raise ValueError(f"--data must name the CIFAR data the run used (or set ${ENV_VAR}), got {data_path}")
        others = [load_models(c, what="--compare")[0][0] for c in (args.compare or [])]
        classes = meta["classes"]
        cls = classes[0] if args.cls is None else args.cls
        if cls not in classes:
            raise ValueError(f"--class must be one of {', '.join(classes)}, got {cls!r}")
        channels = None
        if args.channels is not None:
            try:
                channels = [int(c) for c in args.channels.split(",")]
            except ValueError:
                raise ValueError(f"--channels must be comma-separated channel indices like 3,17, got {args.channels!r}") from None
    except ValueError as err:
        parser.error(str(err))
    try:
        images = rd.load(data_path, args.dataset, cache_dir=args.cache_dir).subset(n_test=args.n_test, seed=args.seed)
    except DataError as err:
        fail(parser.prog, as_flag(str(err), names=["cache_dir"]))
    if list(images.classes) != list(classes):
        shown = lambda names: ", ".join(list(names)[:4]) + (", ..." if len(names) > 4 else "")  # noqa: E731
        fail(parser.prog, f"--data {data_path} (--dataset {args.dataset}) holds the classes {shown(images.classes)}, "
                          f"but the checkpoint was trained on {shown(classes)}: pass the data and --dataset of its run")
    try:  # the folder only once the inputs are known good; its config.json marks it as this run's
        out = start_run(args.out, None, "visualize", {k: v for k, v in vars(args).items() if k != "out"},
                        resumable=False)
    except ValueError as err:
        parser.error(str(err))
    mean, std = meta["mean"], meta["std"]
    x = normalise(images.x_test, mean, std)
    y = torch.as_tensor(images.y_test)
    maps, _ = activations(model, layer, x)
    C = maps.shape[1]
    if channels is None:
        channels = class_selective_channels(maps, y, min(args.auto, C))
    bad = [c for c in channels if not 0 <= c < C]
    if bad:
        fail(parser.prog, f"--channels must be in [0, {C - 1}] for layer {layer}, got {bad}")
    am = {c: activation_maximisation(model, layer, c, mean, std, args.am_steps, seed=args.seed + c)
          for c in channels} if args.am_steps else {}
    written = save_figure(channel_grid(images.x_test, maps, channels, args.top, am,
                                       f"{Path(args.checkpoint).name}: {layer}, top {args.top} test images per channel",
                                       images.y_test, classes), out / "channels.png")
    summary = {"checkpoint": str(args.checkpoint), "layer": layer, "channels": channels}

    if others:
        c_idx = classes.index(cls)
        nets = {Path(args.checkpoint).stem: model, **{Path(c).stem: m for c, m in zip(args.compare, others)}}
        rows = []
        plt = _plt()
        fig, axes = plt.subplots(len(nets), 4 * 3, figsize=(13, 1.25 * len(nets) + 0.8), squeeze=False)
        on = torch.nonzero(y == c_idx).flatten()
        for r, (name, net) in enumerate(nets.items()):
            order, contrib = relied_on_channels(net, x, y, c_idx)
            half = channels_for_half(contrib)
            rows.append({"network": name, "class": cls, "channels_for_half_the_logit": half,
                         "top_channels": order[:4].tolist()})
            with torch.no_grad():
                feats = net.features(x[on])
            for j, ch in enumerate(order[:4]):
                best = feats[:, ch].amax(dim=(1, 2)).argsort(descending=True)[:3].tolist()
                for t, b in enumerate(best):
                    _overlay(axes[r, 3 * j + t], images.x_test[int(on[b])], feats[b, ch].cpu().numpy())
                axes[r, 3 * j].set_title(f"ch {ch}", fontsize=7, loc="left")
            axes[r, 0].set_ylabel(f"{name}\n{half} channels give\nhalf the logit", fontsize=7)
        fig.suptitle(f"class '{cls}': each network's 4 most relied-on channels (by their share of the class logit), "
                     f"3 top images each;\noverlay: where the channel fires (bright = strong); left: how many "
                     f"channels carry half of the logit", fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out / "compare.png")
        write_csv(out / "compare.csv", rows)
        summary["compare"] = rows

    if args.ablation:
        fractions = np.linspace(0, 0.9, 10)
        busiest = np.argsort(-maps.amax(dim=(2, 3)).mean(0).cpu().numpy())
        curves = {"random": ablation_curves(model, layer, x, y, len(classes), fractions, seed=args.seed),
                  "most active": ablation_curves(model, layer, x, y, len(classes), fractions, order=busiest)}
        written += save_figure(ablation_figure(fractions, curves, classes), out / "ablation.png")
        write_csv(out / "ablation.csv", [{"order": name, "fraction": float(f),
                                          **{classes[c]: float(acc[i, c]) for c in range(len(classes))}}
                                         for name, acc in curves.items() for i, f in enumerate(fractions)])
        summary["ablation"] = {name: acc.tolist() for name, acc in curves.items()}
        summary["fractions"] = fractions.tolist()
    write_json(out / "summary.json", summary)
    print(f"wrote {', '.join(p.name for p in written)} to {out}")
    return 0


def _last_stage(model: nn.Module) -> str:
    return "stages.2" if hasattr(model, "stages") else "blocks"


if __name__ == "__main__":
    sys.exit(main())
