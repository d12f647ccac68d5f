"""Generate a multi-view or Gaussian-like dataset, print a summary and save it as ``.npz``.

Examples::

    python -m multiview.generate --views 2 --missing 0.1 --n 2000 --out data.npz
    python -m multiview.generate --kind gaussian --input mixture --teacher conv --patches 4 \\
        --sampling rejection --margin 0.5 --label-noise 0.1 --out gauss.npz

Load the file back with ``multiview.load(path)``. The defaults are the generators' own (for
multi-view data MultiViewConfig's: d = 500, P = 50 patches, noise std 0.067), not the data of the
view-learning experiment (d = 640, P = 32, noise std 0.0503 and the paper's other-feature
weights; ``python -m theory_sims.view_learning --help`` lists its values): pass those flags to
draw that data.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from multiview.cli import Parser, add_config_flags, as_flag, given
from multiview.gaussian import GaussianConfig, GaussianTask
from multiview.multiview import MultiViewConfig, MultiViewDistribution, expected_single_fraction

KINDS = {"multiview": MultiViewConfig, "gaussian": GaussianConfig}


def build_parser() -> tuple[Parser, dict[str, list[str]]]:
    parser = Parser(prog="python -m multiview.generate", description=__doc__)
    parser.add_argument("--kind", choices=sorted(KINDS), default="multiview",
                        help="which distribution to sample (default: multiview)")
    parser.add_argument("--n", type=int, default=1000, help="number of samples (default: 1000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="sample seed; the same seed gives bit-identical data (default: 0)")
    parser.add_argument("--world-seed", type=int, default=0,
                        help="seed of the world: the feature dictionary or the teacher and "
                             "mixture means; keep it fixed to draw train and test sets (default: 0)")
    parser.add_argument("--out", default=None,
                        help="write the dataset to this .npz file (an existing file is kept unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace the file --out names if it exists")
    flags = {
        "multiview": add_config_flags(
            parser.add_argument_group("multi-view distribution (--kind multiview)"), MultiViewConfig
        ),
        "gaussian": add_config_flags(
            parser.add_argument_group("Gaussian-like inputs (--kind gaussian)"), GaussianConfig,
            skip=("k", "patches"),  # shared with the multi-view group
        ),
    }
    flags["gaussian"] += ["k", "patches"]
    return parser, flags


def summary(data) -> str:
    n = data.n
    c = data.config
    labels = data.y if isinstance(c, MultiViewConfig) else data.clean_y
    counts = np.bincount(labels, minlength=data.k)
    which = "" if isinstance(c, MultiViewConfig) else " of the teacher's labels (before label noise)"
    lines = [
        f"{type(data).__name__}: n={n}, X {data.X.shape} {data.X.dtype} "
        f"({data.X.nbytes / 2**20:.1f} MiB), k={data.k}",
        f"class balance{which}: {counts.min()}..{counts.max()} per class (expected {n / data.k:.1f})",
    ]
    if isinstance(c, MultiViewConfig):
        p = expected_single_fraction(c)
        se = math.sqrt(p * (1 - p) / n)
        lines.append(
            f"single-view fraction: {data.single_view_fraction():.4f} "
            f"(expected {p:.4f} +- {se:.4f} s.e.; missing={c.missing}, mode={c.missing_mode})"
        )
        lines.append(f"views present per sample: {data.views_present.sum(1).mean():.3f} of {c.views}")
    else:
        lines.append(
            f"teacher margin: min {data.margin.min():.3f}, median {np.median(data.margin):.3f} "
            f"(requested >= {c.margin}); labels flipped: {data.flipped.mean():.4f} "
            f"(requested {c.label_noise})"
        )
    return "\n".join(lines)


def _check_out(out: str | None, overwrite: bool) -> None:
    """Refuse, before sampling, an --out that is a folder, an existing file (without --overwrite)
    or a place where no file can be created."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out must name a .npz file, got the folder {path}")
    if path.exists() and not overwrite:
        raise ValueError(f"--out {path} exists; pass --overwrite to replace it, or name a new file")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {path}: cannot create its folder ({err.strerror or type(err).__name__})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path}: its folder {parent} is not writable")


def bytes_needed(config, n: int) -> int:
    """The bytes of the arrays ``n`` samples of ``config`` hold (inputs, and for multi-view data the
    per-patch feature weights), a lower bound on what sampling them needs."""
    if isinstance(config, MultiViewConfig):
        features = config.k * config.views
        return n * config.patches * (config.d + features) * 4
    return n * config.patches * config.patch_dim * 4


def available_memory() -> int | None:
    """Bytes of memory available now (Linux /proc/meminfo, else the free physical pages), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(config, n: int) -> None:
    need, have = bytes_needed(config, n), available_memory()
    if have is not None and need > have:
        raise ValueError(f"--n {n} needs at least {need / 2**30:.1f} GiB for its arrays, more than the "
                         f"{have / 2**30:.1f} GiB of memory available; sample fewer (several files with "
                         f"different --seed)")


def main(argv: list[str] | None = None) -> int:
    parser, flags = build_parser()
    args = parser.parse_args(argv)
    other = "gaussian" if args.kind == "multiview" else "multiview"
    stray = sorted(set(given(args, flags[other])) - set(flags[args.kind]))
    if stray:
        parser.error(f"--{stray[0].replace('_', '-')} applies only to --kind {other}")
    if args.n < 1:
        parser.error(f"--n must be an integer >= 1, got {args.n}")
    for flag, value in (("--seed", args.seed), ("--world-seed", args.world_seed)):
        if value < 0:  # numpy's own message ("expected non-negative integer") names no flag
            parser.error(f"{flag} must be an integer >= 0, got {value}")
    try:
        try:
            config = KINDS[args.kind](**given(args, flags[args.kind]))
        except ValueError as err:  # the config names its field (c_max); the line names the flag typed (--c-max)
            raise ValueError(as_flag(str(err), names=flags[args.kind])) from None
        _check_out(args.out, args.overwrite)
        _check_memory(config, args.n)
        world = (MultiViewDistribution if args.kind == "multiview" else GaussianTask)(config, seed=args.world_seed)
        t0 = time.perf_counter()
        data = world.sample(args.n, seed=args.seed)
        elapsed = time.perf_counter() - t0
    except ValueError as err:
        parser.error(str(err))
    print(summary(data))
    print(f"sampled in {elapsed:.3f} s")
    if args.out:
        path = data.save(args.out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
