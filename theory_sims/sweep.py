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
students' ensemble over one student) and which of ``report.PREDICTIONS`` hold. Every run is a job
(:mod:`theory_sims.cluster`): by default (``--cluster auto``) the runs share the cores as a local
Dask cluster on a machine of 4 or more cores and run one after another below that, where one run
already uses every core (``--cluster serial`` or ``local`` chooses; ``--cluster tcp://HOST:PORT``
runs them on your scheduler). Each finished run's record lands in ``RUN/jobs/`` as it finishes, so a stopped sweep
keeps what it finished and ``--resume RUN`` (with the same flags) runs only the rest. At the end
it writes ``sweep.csv`` and ``sweep.json`` (one row per run), beside the sweep's ``config.json``,
and ``sweep.png`` / ``sweep.pdf``: single-view accuracy, views per class and the gains against the
point, with the thresholds drawn in; along a k rule (``--scale-k``) also ``k.png``: the share of
classes whose single models use both views, and their error beside the single-model theorem's
band, against k. The rows are the same whatever ran them (timings aside). ``report.md`` puts the
sweep on one page: the command, its summary (and map) as printed, and its figures.

``--config RUN`` starts from an earlier run's settings: of a view_learning run (its config is the
sweep's base) or of a sweep (its base, and its ``--vary`` values, ``--grid`` and ``--data-seeds``
unless they are given): ``python -m theory_sims.sweep --config SWEEP_RUN --out NEW`` runs the
same points again, and ``--config SWEEP_RUN --data-seeds 2,3`` the same points on other data.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
import time


import theory_sims  # noqa: F401  (sets the BLAS thread spin before numpy work starts)
from theory_sims import cluster, report
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


def with_values(cfg: vl.ViewLearningConfig, values: dict) -> vl.ViewLearningConfig:
    """``cfg`` with every field of ``values`` (path -> value) set, each part in one step (so a bound
    across fields, d >= k * views, sees the values of one point together; the learner's k follows the
    data's unless learner.k is given). A value the configs' checks refuse is a ValueError that names
    ``--vary`` and the path(s) that set it: ``--vary train.lr: lr must be a number > 0.0, got -1.0``."""
    parts: dict[str, dict] = {}
    paths: dict[str, list[str]] = {}  # the varied paths that set each part's fields
    top = {}
    for path, value in values.items():
        head, _, field = path.partition(".")
        if field:
            parts.setdefault(head, {})[field] = value
            paths.setdefault(head, []).append(path)
        else:
            top[head] = value
    if "k" in parts.get("data", {}) and "k" not in parts.get("learner", {}):
        parts.setdefault("learner", {})["k"] = parts["data"]["k"]
        paths.setdefault("learner", []).append("data.k")

    def refused(err: ValueError, named: list[str]) -> ValueError:
        field = str(err).partition(" must ")[0]  # the field the check names, where it is a varied one
        own = [p for p in named if p.rpartition(".")[2] == field]
        return ValueError(f"--vary {', '.join(own or named)}: {err}")

    built = {}
    for head, fields in parts.items():
        try:
            built[head] = dataclasses.replace(getattr(cfg, head), **fields)
        except ValueError as err:
            raise refused(err, paths[head]) from None
    try:
        return dataclasses.replace(cfg, **built, **top)
    except ValueError as err:
        raise refused(err, list(values)) from None


def inert_rule(path: str):
    """The rule of :data:`view_learning.INERT_FLAGS` for the flag that sets the field at ``path``
    (``(flag, dest, acts, when)``), or None where that flag acts in every mode. The flag is the one
    :func:`search.flags` writes for the field: a part's prefix and the field's name (``distill.plateau``
    is ``--kd-plateau``, ``distill.kd_weight`` is ``--kd-weight``), an experiment field by its name. A
    name that is another's flag (``train.kd_weight`` would be distill's ``--kd-weight``,
    ``train.augment_rate`` the experiment's ``--augment-rate``) has no flag and no rule."""
    head, _, field = path.partition(".")
    if not field:
        dest = head if head in vl.EXPERIMENT_FLAGS else None
    else:
        prefix = vl.PART_FLAGS[head].replace("-", "_")
        dest = field if field.startswith(prefix) else prefix + field
        owner = max((p.replace("-", "_") for p in vl.PART_FLAGS.values() if dest.startswith(p.replace("-", "_"))),
                    key=len)  # the longest prefix names the part whose flag it is (--kd-weight: distill's)
        if owner != prefix or dest in vl.EXPERIMENT_FLAGS:
            dest = None
    return next((rule for rule in vl.INERT_FLAGS if rule[1] == dest), None)


def refuse_inert_vary(varied_at: list[tuple[dict, vl.ViewLearningConfig]]) -> None:
    """Raise ValueError for a ``--vary`` field that does nothing at some point of the sweep (the
    points' ``(values, config)``): the rule :func:`multiview.cli.refuse_inert` applies to the
    experiment's flags (``--fit-multiple`` with ``--stop steps``), so that a sweep never runs points
    that differ in nothing that runs."""
    if not varied_at:
        return
    for path in varied_at[0][0]:
        rule = inert_rule(path)
        if rule is None:
            continue
        flag, _, acts, when = rule
        idle = [(i, values) for i, (values, cfg) in enumerate(varied_at) if not acts(cfg)]
        if not idle:
            continue
        where = ""
        if len(idle) < len(varied_at):  # inert where another --vary sets the mode
            i, values = idle[0]
            others = ", ".join(f"{p}={v}" for p, v in values.items() if p != path)
            where = f" (as at point {i}: {others})"
        raise ValueError(f"--vary {path} does nothing {when}{where}, like {flag}, which is refused there: its values "
                         "would change nothing that runs; drop it or change that")


K_RULES = ("plain", "race")


def k_rule(base: vl.ViewLearningConfig, ks: list[int], rule: str = "plain") -> list[tuple[str, list]]:
    """The regime's parameters tied to the number of classes k, as ``--vary`` lists moving together
    (the theory is asymptotic in k, so a prediction should be followed along one rule, not one knob):
    from the base config at its own k0, with x = k / k0,

    * d = d0 * x (at least k * V): the feature dictionary and the noise grow with k;
    * noise_std = noise_std0 * sqrt(d0 / d): the noise's norm per patch stays what it was;
    * n_train = n0 * x: the same number of samples per class;
    * m = m0 * ln k / ln k0 (rounded, at least 1): neurons per class about log k (the paper's
      m in [polylog k, k]);
    * P, the learning rates and everything else stay as they are;

    and with ``rule="race"`` the init as the theory scales it, sigma0^(q-2) proportional to 1/k:

    * sigma0 = sigma0_0 * (k0 / k)^(1 / (q - 2)), varrho fixed: the race starts further below
      varrho as k grows (varrho over the initial Lambda grows about like k^(1/(q-2))), so it runs
      longer in the power phase, where the init's lead compounds;
    * train.steps = steps0 * k / k0 where that is more (the single models' step cap): the power
      phase of dLambda/dt ~ eta Lambda^(q-1) lasts about 1 / (eta (q-2) Lambda0^(q-2)) steps, in
      proportion to k under this sigma0 (at k = 40 with the cap kept at 3000, single models
      stopped at the cap before they fitted).
    """
    if rule not in K_RULES:
        raise ValueError(f"rule must be one of {', '.join(K_RULES)}, got {rule!r}")
    k0, d0, q = base.data.k, base.data.d, base.learner.q
    if rule == "race" and q <= 2:
        raise ValueError(f"the race rule scales sigma0 like k^(-1/(q-2)) and needs q > 2, got q = {q}")
    ds = [max(k * base.data.views, round(d0 * k / k0)) for k in ks]
    varied = [
        ("data.k", list(ks)),
        ("data.d", ds),
        ("data.noise_std", [float(f"{base.data.noise_std * math.sqrt(d0 / d):.6g}") for d in ds]),
        ("n_train", [max(1, round(base.n_train * k / k0)) for k in ks]),
        ("learner.m", [max(1, round(base.learner.m * math.log(k) / math.log(k0))) for k in ks]),
    ]
    if rule == "race":
        varied.append(("learner.sigma0", [float(f"{base.learner.sigma0 * (k0 / k) ** (1 / (q - 2)):.6g}") for k in ks]))
        varied.append(("train.steps", [max(base.train.steps, round(base.train.steps * k / k0)) for k in ks]))
    return varied


def points(base: vl.ViewLearningConfig, varied: list[tuple[str, list]], data_seeds: list[int],
           grid: bool = False) -> list[dict]:
    """Every run of the sweep: point index, its values, data seed and config (built by
    :func:`with_values`, so a bad value fails here, naming ``--vary`` and its path, before anything
    runs, and so does a varied field that does nothing at a point: :func:`refuse_inert_vary`). The
    ``varied`` values move together, or with ``grid`` every combination of them is a point (the first
    parameter varying slowest)."""
    if grid:
        combos = list(itertools.product(*(vals for _, vals in varied)))
    else:
        lengths = {path: len(values) for path, values in varied}
        if len(set(lengths.values())) > 1:
            raise ValueError("--vary flags move together and need the same number of values, got "
                             + ", ".join(f"{p}: {n}" for p, n in lengths.items()) + " (or pass --grid)")
        combos = list(zip(*(vals for _, vals in varied))) if varied else [()]
    built = []
    for combo in combos:
        values = {path: value for (path, _), value in zip(varied, combo)}
        built.append((values, with_values(base, values)))
    refuse_inert_vary(built)
    runs, seen = [], {}
    for i, (values, cfg) in enumerate(built):
        for seed in data_seeds:
            run_cfg = dataclasses.replace(cfg, seed=seed)
            # Two runs of one config are one result counted twice: refused, whichever flag repeats.
            key = json.dumps(run_cfg.to_dict(), sort_keys=True)
            if key in seen:
                same = (f"point {i} would run twice on data seed {seed}" if seen[key][0] == i else
                        f"point {seen[key][0]} and point {i} on data seed {seed} would be the same run")
                raise ValueError(f"{same} "
                                 f"({', '.join(f'{p}={v}' for p, v in values.items()) or 'the base config'}): "
                                 "give distinct --vary values and --data-seeds")
            seen[key] = (i, seed)
            runs.append({"point": i, "values": values, "data_seed": seed, "config": run_cfg})
    return runs


def point_job(cfg: vl.ViewLearningConfig) -> dict:
    """One run of the sweep (a point on one data seed): :func:`report.summary` of the experiment
    and its wall time. Module-level, so a Dask worker can import it."""
    t0 = time.perf_counter()
    results, _ = vl.run(cfg, log=lambda *a, **k: None)
    return {**report.summary(results), "wall_s": time.perf_counter() - t0}


def job_key(r: dict) -> str:
    return f"point{r['point']}-seed{r['data_seed']}"


def run(runs: list[dict], records, where: cluster.Where = cluster.Where(), log=print,
        kept: list | None = None) -> list[dict]:
    """Run every entry of ``runs`` as a job (its record in ``records``; runs with a record are not
    run again, their keys go to ``kept``) and return one row per entry, in the order of ``runs``."""
    by_key = {job_key(r): r for r in runs}

    def row(r, record):
        return {"point": r["point"], **r["values"], "data_seed": r["data_seed"], **record}

    def line(key, record):
        r = row(by_key[key], record)
        label = ", ".join(f"{p}={v}" for p, v in r.items() if p in by_key[key]["values"]) or "base"
        failed = [name for name in report.judged_names([r]) if not r["holds_" + name]]
        return (f"{label}, data seed {r['data_seed']}: single {r['sv_individual']:.3f} "
                f"({r['views_individual']:.2f} views), ensemble {r['sv_ensemble']:.3f}, KD {r['sv_kd']:.3f}, "
                f"average {r.get('gain_average', float('nan')):+.3f}, KD ensemble {r['gain_kd_ensemble']:+.3f}; "
                f"fails: {', '.join(failed) or 'none'} ({r['wall_s']:.0f} s)")

    jobs = [cluster.Job(key, point_job, (r["config"],)) for key, r in by_key.items()]
    records = cluster.run_jobs(jobs, records, where, log=log, on_done=line, kept=kept)
    return [row(r, records[job_key(r)]) for r in runs]


def build_parser():
    p = vl.build_parser()
    p.prog = "python -m theory_sims.sweep"
    p.description = __doc__
    for action in p._actions:  # the same flags, the sweep's own folder and resume
        if action.dest == "out":
            action.help = "sweep folder (default: runs/sweep-<time>); one that holds another run is refused"
        if action.dest == "resume":
            action.help = ("continue the sweep in folder RUN, given with the same flags as when it started: runs "
                           "whose record is in RUN/jobs are kept, the others run")
        if action.dest == "config":
            action.help = ("start from the settings of an earlier run instead of a preset: RUN is its folder or its "
                           "config.json, of a view_learning run (the sweep's base) or of a sweep (its base, and its "
                           "--vary values, --grid and --data-seeds unless given here; --vary or --scale-k given here "
                           "replace its points); a search's gives its base only; flags given beside it override those "
                           "settings (the same flags re-create a sweep: its sweep.json equals the original's but for "
                           "timings)")
    g = p.add_argument_group("sweep")
    g.add_argument("--vary", action="append", default=[], metavar="SECTION.FIELD=V1,V2,...",
                   help="a parameter and its values; several --vary move together (point i takes the i-th value of "
                        "each), or with --grid span a grid; a field that does nothing in the mode the other flags "
                        "set (train.fit_multiple with --stop steps) is refused, as its flag is")
    g.add_argument("--grid", action="store_true",
                   help="run every combination of the --vary values (a grid) and draw map.png: one panel per "
                        "prediction, held or failed at each grid point, coloured by its margin")
    g.add_argument("--scale-k", default=None, metavar="K1,K2,...",
                   help="follow the predictions as k grows: these class counts, with d, the noise, n_train and m "
                        "tied to k by one rule (theory_sims.sweep.k_rule: d and n_train in proportion to k, the "
                        "noise's norm per patch fixed, m about log k)")
    g.add_argument("--k-rule", choices=K_RULES, default=None,
                   help="with --scale-k: 'plain' (the rule above) or 'race', which also scales the init as the theory "
                        "does, sigma0^(q-2) proportional to 1/k with varrho fixed, so that the race between a class's "
                        "views runs longer in the power phase as k grows, and the single models' step cap (--steps) "
                        "in proportion to k, where that is more (default: plain)")
    g.add_argument("--data-seeds", default=None, metavar="S1,S2,...",
                   help="run every point on the data (world) of each of these seeds (default: --seed)")
    cluster.add_flags(p, default="auto")
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


def saved_sweep(where: str) -> dict:
    """The ``vary``, ``grid`` and ``data_seeds`` of the sweep whose settings ``--config`` names (its
    folder or config.json, read by :func:`view_learning.read_config` first), or {} for another run
    (view_learning's or a search's: they give the base only)."""
    from theory_sims.results import load_config_file

    saved = load_config_file(where)
    if set(saved) != {"base", "vary", "grid", "data_seeds"}:
        return {}
    if not isinstance(saved["vary"], dict) or not all(isinstance(v, list) for v in saved["vary"].values()):
        raise ValueError(f"--config {where}: its vary is not a dict of value lists")
    return saved


def plan(args) -> tuple[vl.ViewLearningConfig, list[tuple[str, list]], list[dict]]:
    """The sweep the flags describe: its base config, the varied parameters with their values, and
    every run (:func:`points`); with ``--config`` of a sweep, that sweep's --vary, --grid and
    --data-seeds unless they are given (``args.grid`` is set to the sweep's). A ValueError names the flag."""
    base = vl.config_from_args(args)
    saved = saved_sweep(args.config) if args.config is not None else {}
    if saved and not args.vary and args.scale_k is None:  # the sweep's points, unless others are given
        varied = [(path, list(values)) for path, values in saved["vary"].items()]
        args.grid = args.grid or bool(saved["grid"])
    else:
        varied = [parse_vary(spec, base) for spec in args.vary]
    if args.scale_k is not None:
        if varied:
            raise ValueError("--scale-k sets what varies (k and the parameters tied to it); give no --vary with it")
        ks = [int(v) for v in args.scale_k.split(",")] if args.scale_k.replace(",", "").isdigit() else [0]
        if min(ks) < 2 or len(set(ks)) < len(ks):
            raise ValueError(f"--scale-k must be distinct comma-separated integers >= 2, got {args.scale_k!r}")
        varied = k_rule(base, ks, args.k_rule or "plain")
    elif args.k_rule is not None:
        raise ValueError("--k-rule does nothing without --scale-k; drop it or add --scale-k")
    if len({path for path, _ in varied}) < len(varied):
        raise ValueError("--vary: each parameter may be given once")
    if args.grid and len(varied) != 2:
        raise ValueError(f"--grid needs exactly two --vary parameters (the map's axes), got {len(varied)}")
    seeds = args.data_seeds if args.data_seeds is not None or not saved else ",".join(map(str, saved["data_seeds"]))
    runs = points(base, varied, _data_seeds(seeds, base.seed), grid=args.grid)
    for r in runs:
        vl.check_memory(r["config"])
    return base, varied, runs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        base, varied, runs = plan(args)
    except ValueError as err:
        parser.error(str(err))
    from theory_sims import figures
    from theory_sims.results import command_line, start_run, write_csv, write_json, write_report

    config = {"base": base.to_dict(), "vary": dict(varied), "grid": args.grid,
              "data_seeds": sorted({r["data_seed"] for r in runs})}
    try:
        where = cluster.where(args)
        out = start_run(args.out, args.resume, "sweep", config)
    except ValueError as err:
        parser.error(str(err))
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    log(f"{len(runs)} runs ({len(runs) // len(config['data_seeds'])} points x {len(config['data_seeds'])} data seeds) "
        f"on {where.mode if where.mode != 'address' else where.address}; records in {out / 'jobs'}")
    t0, kept = time.perf_counter(), []
    rows = run(runs, out / "jobs", where, log=log, kept=kept)
    timing = {"total": time.perf_counter() - t0, "earlier_processes": cluster.earlier_work(out / "jobs", kept)}
    write_csv(out / "sweep.csv", rows)
    write_json(out / "sweep.json", {"predictions": report.PREDICTIONS, "runs": rows, "timing_s": timing})
    paths = [path for path, _ in varied]
    if not args.no_figures:
        figures.sweep_figure(out / "sweep.png", rows, paths)
        if args.grid:
            figures.prediction_map(out / "map.png", rows, paths)
        if args.scale_k is not None:
            figures.k_figure(out / "k.png", rows)
    sections = [("The sweep", report.format_summary(rows, paths)),
                ("The map", report.format_map(rows, paths) if args.grid else "")]
    for _, text in sections:
        if text:
            print(text)
    sections.append(("Time", cluster.format_total(timing)))
    write_report(out, "sweep: how each of the paper's predictions moves with a knob", command_line(parser.prog, argv),
                 sections, figures.SWEEP_FIGURES)
    print(f"{cluster.format_total(timing)}; results in {out}, on one page in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
