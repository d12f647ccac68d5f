"""Sweep the regime of the main experiment: how each of the paper's predictions moves with a knob.

Runs :mod:`theory_sims.view_learning` once per point and data seed, the base config taken from the
same flags as that experiment (``--preset``, ``--missing``, ``--q``, ...), and the varied
parameters from ``--vary SECTION.FIELD=V1,V2,...``. Several ``--vary`` flags move together (point i
takes the i-th value of each), so a knob and the quantities one wants to hold fixed relative to
it can be swept at once, e.g. the width of sReLU's polynomial part with the init and the learning
rate scaled along::

    python -m theory_sims.sweep --vary learner.varrho=0.5,1,2 --vary learner.sigma0=0.05,0.1,0.2 \\
        --vary train.lr=10,20,40 --data-seeds 0,1 --no-random-features

SECTION is one of data, learner, train, distill, rf_train, ntk_train (their fields are the flags
of ``python -m theory_sims.view_learning --help`` and the dataclasses behind them); a field of the
experiment itself (n_train, seeds, ...) is given without a section.

For every run it records the single-view test accuracy of every row, the views learned per class,
the two gains the paper says vanish (training the average over the single models, the KD
students' ensemble over one student) and which of ``report.PREDICTIONS`` hold. It writes
``sweep.csv`` and ``sweep.json`` after every run (a stopped sweep keeps what it finished), the
sweep's ``config.json``, and ``sweep.png`` / ``sweep.pdf``: single-view accuracy, views per class
and the gains against the point, with the thresholds drawn in.
"""

from __future__ import annotations

import dataclasses
import sys
import time


import theory_sims  # noqa: F401  (sets the BLAS thread spin before numpy work starts)
from theory_sims import report
from theory_sims import view_learning as vl

def _parse_value(text: str, default, name: str):
    """``text`` as the type of the field's ``default``."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(f"--vary {name}: values must be true or false, got {text!r}")
        return lowered in ("true", "1")
    if isinstance(default, (int, float, str)):
        try:
            return type(default)(text.strip())
        except ValueError:
            raise ValueError(f"--vary {name}: values must be of type {type(default).__name__}, got {text!r}") from None
    raise ValueError(f"--vary {name}: a {type(default).__name__} field cannot be swept")


def parse_vary(spec: str, base: vl.ViewLearningConfig) -> tuple[str, list]:
    """``SECTION.FIELD=V1,V2,...`` (or ``FIELD=...`` for a field of the experiment) as (path, values)."""
    path, eq, values = spec.partition("=")
    path = path.strip()
    if not eq or not values.strip():
        raise ValueError(f"--vary must look like SECTION.FIELD=V1,V2,..., got {spec!r}")
    head, _, field = path.partition(".")
    if field:
        if head not in vl.PARTS:
            raise ValueError(f"--vary {path}: the section must be one of {', '.join(vl.PARTS)}, got {head!r}")
        owner = getattr(base, head)
    else:
        owner, field = base, head
    names = [f.name for f in dataclasses.fields(owner)]
    if field not in names or field in vl.PARTS:
        raise ValueError(f"--vary {path}: no such field; {head if owner is not base else 'the experiment'} "
                         f"has {', '.join(n for n in names if n not in vl.PARTS)}")
    if path == "seed":
        raise ValueError("--vary seed: use --data-seeds to repeat every point on other data")
    default = getattr(owner, field)
    return path, [_parse_value(v, default, path) for v in values.split(",")]


def with_value(cfg: vl.ViewLearningConfig, path: str, value) -> vl.ViewLearningConfig:
    """``cfg`` with the field at ``path`` set (validated by the configs' own checks); the learner's
    k follows the data's."""
    head, _, field = path.partition(".")
    if not field:
        return dataclasses.replace(cfg, **{head: value})
    parts = {head: dataclasses.replace(getattr(cfg, head), **{field: value})}
    if path == "data.k":
        parts["learner"] = dataclasses.replace(cfg.learner, k=value)
    return dataclasses.replace(cfg, **parts)


def points(base: vl.ViewLearningConfig, varied: list[tuple[str, list]], data_seeds: list[int]) -> list[dict]:
    """Every run of the sweep: point index, its values, data seed and config (built, so a bad
    value fails here, before anything runs)."""
    lengths = {path: len(values) for path, values in varied}
    if len(set(lengths.values())) > 1:
        raise ValueError("--vary flags move together and need the same number of values, got "
                         + ", ".join(f"{p}: {n}" for p, n in lengths.items()))
    n = next(iter(lengths.values()), 1)
    runs = []
    for i in range(n):
        values = {path: vals[i] for path, vals in varied}
        cfg = base
        for path, value in values.items():
            cfg = with_value(cfg, path, value)
        for seed in data_seeds:
            runs.append({"point": i, "values": values, "data_seed": seed,
                         "config": dataclasses.replace(cfg, seed=seed)})
    return runs


def run(runs: list[dict], on_result=None, log=print) -> list[dict]:
    """Run every entry of ``runs``; ``on_result(rows)`` is called after each with the rows so far."""
    rows = []
    for n, r in enumerate(runs, 1):
        t0 = time.perf_counter()
        label = ", ".join(f"{p}={v}" for p, v in r["values"].items()) or "base"
        log(f"[{n}/{len(runs)}] {label}, data seed {r['data_seed']}")
        results, _ = vl.run(r["config"], log=lambda *a, **k: None)
        row = {"point": r["point"], **r["values"], "data_seed": r["data_seed"], **report.summary(results),
               "wall_s": time.perf_counter() - t0}
        rows.append(row)
        failed = [name for name in report.PREDICTIONS if not row["holds_" + name]]
        log(f"    single {row['sv_individual']:.3f} ({row['views_individual']:.2f} views), ensemble "
            f"{row['sv_ensemble']:.3f}, KD {row['sv_kd']:.3f}, average {row['gain_average']:+.3f}, "
            f"KD ensemble {row['gain_kd_ensemble']:+.3f}; fails: {', '.join(failed) or 'none'} "
            f"({row['wall_s']:.0f} s)")
        if on_result is not None:
            on_result(rows)
    return rows


def build_parser():
    p = vl.build_parser()
    p.prog = "python -m theory_sims.sweep"
    p.description = __doc__
    for action in p._actions:  # the same flags, the sweep's own folder name
        if action.dest == "out":
            action.help = "sweep folder (default: runs/sweep-<time>)"
    g = p.add_argument_group("sweep")
    g.add_argument("--vary", action="append", default=[], metavar="SECTION.FIELD=V1,V2,...",
                   help="a parameter and its values; several --vary move together (point i takes the i-th value of each)")
    g.add_argument("--data-seeds", default=None, metavar="S1,S2,...",
                   help="run every point on the data (world) of each of these seeds (default: --seed)")
    return p


def _data_seeds(text: str | None, default: int) -> list[int]:
    if text is None:
        return [default]
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--data-seeds must be comma-separated integers >= 0, got {text!r}") from None
    if min(seeds) < 0:
        raise ValueError(f"--data-seeds must be comma-separated integers >= 0, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        base = vl.config_from_args(args)
        varied = [parse_vary(spec, base) for spec in args.vary]
        if len({path for path, _ in varied}) < len(varied):
            raise ValueError("--vary: each parameter may be given once")
        runs = points(base, varied, _data_seeds(args.data_seeds, base.seed))
    except ValueError as err:
        parser.error(str(err))
    from theory_sims import figures
    from theory_sims.results import out_dir, write_csv, write_json

    try:
        out = out_dir(args.out, "sweep")
    except ValueError as err:
        parser.error(str(err))
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    write_json(out / "config.json", {"base": base.to_dict(), "vary": dict(varied),
                                     "data_seeds": sorted({r["data_seed"] for r in runs})})

    def save(rows):
        write_csv(out / "sweep.csv", rows)
        write_json(out / "sweep.json", {"predictions": report.PREDICTIONS, "runs": rows})

    rows = run(runs, on_result=save, log=log)
    paths = [path for path, _ in varied]
    if not args.no_figures:
        figures.sweep_figure(out / "sweep.png", rows, paths)
    print(report.format_summary(rows, paths))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
