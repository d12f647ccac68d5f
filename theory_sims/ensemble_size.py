"""How an ensemble grows with its members on multi-view data, and why it stops: coverage, not variance.

"Ensemble over 100 individual models typically makes no difference when compared to ensemble over
10" (Allen-Zhu & Li, arXiv 2012.09816): under the multi-view theory an ensemble classifies a
single-view sample right once one of its members learned the view it shows, so it stops improving
when its members cover every view of every class, while members whose errors were independent
would keep averaging them out. One run:

1. trains ``--seeds`` single models (default 100; one stacked training call) on the main job's data
   (``theory_sims.view_learning``'s defaults; its first 10 seeds are the main job's single models);
2. for ensembles of ``--sizes`` members (random subsets of the seeds, up to ``--subsets`` of each
   size), measures the ensemble's multi-view and single-view accuracy with a bootstrap interval
   over the test samples;
3. puts beside it what the members' views predict (a single-view sample is right when a member of
   the subset uses the view it shows; the classes every view of which is covered, against the fair
   lottery's 1 - 2^(1-n) for V = 2) and a variance-reduction null: the same members with their
   errors made independent by construction (each member's outputs shuffled among the test samples
   of a class);
4. measures how often two seeds disagree, on multi-view and single-view samples, and on
   single-view samples by whether both, one or neither of the two uses the view the sample shows;
5. writes results.json, ensemble_size.csv, disagreement.csv, ensemble_size.png (the curve with
   the prediction and the null, and the disagreement split) and report.md (the run on one page).

``--config RUN`` starts from an earlier ensemble_size run's settings (flags given beside it
override them): the same flags re-create the run.

Example::

    python -m theory_sims.ensemble_size
    python -m theory_sims.ensemble_size --seeds 20 --sizes 1,2,5,10,20 --out runs/ens20
    python -m theory_sims.ensemble_size --config runs/ens20 --n-boot 2000 --out runs/ens20-boot
"""

from __future__ import annotations

import sys
import time

import numpy as np

import theory_sims  # noqa: F401  (sets the BLAS thread spin before numpy work starts)
from multiview.checks import check_int
from multiview.cli import Parser, as_flag, progress_bars
from theory_sims import ensembles as en
from theory_sims import mechanism

DEFAULT_SIZES = (1, 2, 3, 5, 10, 20, 50, 100)
# The flags a run takes from --config RUN (or else these defaults) unless they are given.
DEFAULTS = {"seeds": 100, "sizes": ",".join(map(str, DEFAULT_SIZES)), "subsets": 200, "n_boot": 1000, "seed": 0}


def parse_sizes(text: str, seeds: int) -> list[int]:
    """``--sizes``: distinct comma-separated integers in [1, --seeds], in increasing order."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or max(sizes) > seeds or len(set(sizes)) < len(sizes):
        raise ValueError(f"--sizes must be distinct comma-separated integers in [1, --seeds={seeds}], got {text!r}")
    return sorted(sizes)


def views_misfit(views: int, err: ValueError, configure, whose: str = "the main job's") -> str:
    """The refusal of ``--views`` where the data's other fields bound it (``whose`` data: the main
    job's, or the --config run's; none of them is a flag of this command): ``err`` and the values of
    --views that fit (``configure(views)`` builds the config, raising ValueError for one that does not)."""
    base = configure().data
    fits = []
    for v in range(1, base.d // base.k + 1):  # d >= k * views bounds it above in any case
        try:
            configure(v)
        except ValueError:
            continue
        fits.append(v)
    if not fits:
        allowed = "no --views fits it"
    elif fits == list(range(fits[0], fits[-1] + 1)):
        allowed = f"--views must be an integer in [{fits[0]}, {fits[-1]}]"
    else:
        allowed = f"--views must be one of {', '.join(map(str, fits))}"
    return (f"--views {views} does not fit {whose} data (d={base.d}, k={base.k}, not flags of this command): "
            f"{err}; {allowed}")


def measure(single_logits, multi_logits, tests, sizes, subsets: int, n_boot: int, seed: int) -> dict:
    """Every number of the run from the members' logits on the single-view (S, n, k) and multi-view
    test sets: the size curves, the coverage prediction, the null, and the disagreement."""
    ys, ym = tests.single.y, tests.multi.y
    shown = np.asarray(tests.single.views_present).argmax(axis=1)  # the view a single-view sample shows
    k = single_logits.shape[-1]
    view_acc = mechanism.per_view_accuracy(single_logits, ys, tests.single.views_present, k)
    used = mechanism.views_used(view_acc)  # (S, k, V)
    V = used.shape[-1]
    curve = {
        "single_view": en.size_curve(single_logits, ys, sizes, subsets, n_boot, seed=seed),
        "multi_view": en.size_curve(multi_logits, ym, sizes, subsets, n_boot, seed=seed),
        "null_single_view": en.size_curve(en.independent_members(single_logits, ys, seed=seed), ys, sizes, subsets,
                                          n_boot, seed=seed),
        "coverage": en.coverage_curve(used, ys, shown, sizes, subsets, seed=seed),
    }
    rate = float(used.mean())  # the members' measured chance of using a given view
    rows = []
    for i, size in enumerate(sizes):
        sv, mv, null, cov = (curve[key][i] for key in ("single_view", "multi_view", "null_single_view", "coverage"))
        rows.append({
            "members": size, "subsets": sv["subsets"],
            "single_view_acc": sv["acc"], "single_view_lo": sv["lo"], "single_view_hi": sv["hi"],
            "multi_view_acc": mv["acc"], "multi_view_lo": mv["lo"], "multi_view_hi": mv["hi"],
            "predicted_single_view_acc": cov["single_view_acc"],
            "independent_lottery_single_view": 1 - (1 - rate) ** size,
            "classes_covered": cov["classes_covered"], "fair_lottery_classes_covered": en.fair_lottery(size, V),
            "null_single_view_acc": null["acc"], "null_single_view_lo": null["lo"], "null_single_view_hi": null["hi"],
        })
    D_single, D_multi = en.pairwise_disagreement(single_logits), en.pairwise_disagreement(multi_logits)
    disagreement = {
        "single_view": en.mean_off_diagonal(D_single), "multi_view": en.mean_off_diagonal(D_multi),
        "single_view_by_views": en.disagreement_by_views(single_logits, ys, shown, used),
        "single_view_pairs": D_single[np.triu_indices(len(D_single), 1)].tolist(),
        "multi_view_pairs": D_multi[np.triu_indices(len(D_multi), 1)].tolist(),
    }
    single_acc = (single_logits.argmax(-1) == ys).mean(axis=1)
    return {"sizes": rows, "disagreement": disagreement, "views_used": used, "view_use_rate": rate,
            "members_single_view_acc": single_acc.tolist(),
            "views_per_class": float(used.sum(axis=-1).mean())}


def format_report(res: dict) -> str:
    rows, dis = res["sizes"], res["disagreement"]
    head = (f"{'members':>7s} {'single-view acc [95% CI]':>25s} {'views predict':>13s} {'independent-error null':>22s} "
            f"{'multi-view':>10s} {'classes covered':>15s} {'fair lottery':>12s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['members']:7d} {r['single_view_acc']:9.3f} [{r['single_view_lo']:.3f}, {r['single_view_hi']:.3f}]"
                     f" {r['predicted_single_view_acc']:13.3f} {r['null_single_view_acc']:22.3f}"
                     f" {r['multi_view_acc']:10.3f} {r['classes_covered']:15.2f} {r['fair_lottery_classes_covered']:12.2f}")
    first, last = rows[0], rows[-1]
    ten = next((r for r in rows if r["members"] == 10), None)
    if ten is not None and last["members"] > 10:
        lines.append(f"from 10 to {last['members']} members the single-view accuracy moves "
                     f"{100 * (last['single_view_acc'] - ten['single_view_acc']):+.1f} pts (the views predict "
                     f"{100 * (last['predicted_single_view_acc'] - ten['predicted_single_view_acc']):+.1f}, independent errors "
                     f"would give {100 * (last['null_single_view_acc'] - ten['null_single_view_acc']):+.1f})")
    lines.append(f"members use {res['views_per_class']:.2f} views per class ({res['view_use_rate']:.0%} of the (class, view) "
                 f"pairs); one member {first['single_view_acc']:.3f} single-view")
    by = dis["single_view_by_views"]

    def cell(name):
        c = by[name]
        return f"{name} {c['disagreement']:.3f} ({c['cases']})" if c["disagreement"] is not None else f"{name} - (0)"

    lines.append(f"disagreement of two seeds: multi-view {dis['multi_view']:.3f}, single-view {dis['single_view']:.3f}; "
                 f"on single-view samples whose view the pair uses: {', '.join(cell(n) for n in ('both', 'one', 'neither'))}"
                 " (pair-sample cases)")
    return "\n".join(lines)


def build_parser() -> Parser:
    p = Parser(prog="python -m theory_sims.ensemble_size", description=__doc__)
    p.add_argument("--config", default=None, metavar="RUN",
                   help="start from the settings of an earlier ensemble_size run: RUN is its folder or its "
                        "config.json (its data, learner and training, and the flags below); flags given beside it "
                        "override those settings (the same flags re-create the run: its results.json equals the "
                        "original's but for timings)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"single models trained (stacked; default: {DEFAULTS['seeds']})")
    p.add_argument("--sizes", default=None, metavar="N1,N2,...",
                   help=f"ensemble sizes, each at most --seeds (default: {DEFAULTS['sizes']})")
    p.add_argument("--subsets", type=int, default=None,
                   help=f"random subsets of each size (all of them where there are fewer; default: {DEFAULTS['subsets']})")
    p.add_argument("--n-boot", type=int, default=None,
                   help=f"bootstrap draws of the test samples (default: {DEFAULTS['n_boot']})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"data seed, as view_learning's --seed (default: {DEFAULTS['seed']})")
    p.add_argument("--views", type=int, default=None,
                   help="views per class of the data, as view_learning's --views; the rest of the data and the "
                        "learner are the main job's (default: 2)")
    p.add_argument("--out", default=None, help="run folder (default: runs/ensemble_size-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue the run in folder RUN, given with the same flags: the trained models "
                        "(RUN/stages/) are read back")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from theory_sims import view_learning as vl
    from theory_sims.results import read_run_config

    try:
        saved = {"experiment": {}}
        if args.config is not None:
            saved = read_run_config(args.config, "ensemble_size", ("experiment", "sizes", "subsets", "n_boot"))
            exp = saved["experiment"]
            if not isinstance(exp, dict) or set(exp) != set(vl.ViewLearningConfig().to_dict()):
                raise ValueError(f"--config {args.config}: its experiment is not a view_learning config")
            start = {"seeds": exp["seeds"], "seed": exp["seed"], "sizes": ",".join(map(str, saved["sizes"])),
                     "subsets": saved["subsets"], "n_boot": saved["n_boot"]}
            for name, value in start.items():
                if getattr(args, name) is None:
                    setattr(args, name, value)
        for name, value in DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        check_int("--seeds", args.seeds, 2)
        check_int("--subsets", args.subsets, 1)
        check_int("--n-boot", args.n_boot, 1)
        check_int("--seed", args.seed, 0)
        sizes = parse_sizes(args.sizes, args.seeds)

        def configure(views=None):
            data = {"views": views} if views is not None else {}
            return vl.configure(**vl.merge_parts(saved["experiment"], dict(
                seeds=args.seeds, students=1, seed=args.seed, random_features=False, controls=False, data=data)))

        try:
            cfg = configure(args.views)
        except ValueError as err:
            message = as_flag(str(err), names=["views"])
            if message == str(err) and args.views is not None:  # a bound of the data's other fields
                whose = "the --config run's" if args.config is not None else "the main job's"
                raise ValueError(views_misfit(args.views, err, configure, whose)) from None
            raise ValueError(message) from None
        vl.check_memory(cfg)
    except ValueError as err:
        parser.error(str(err))
    from theory_sims import experiments as ex
    from theory_sims import figures
    from theory_sims.cluster import format_total
    from theory_sims.results import command_line, start_run, write_csv, write_json, write_report

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    config = {"experiment": cfg.to_dict(), "sizes": sizes, "subsets": args.subsets, "n_boot": args.n_boot}
    try:
        out = start_run(args.out, args.resume, "ensemble_size", config)
    except ValueError as err:
        parser.error(str(err))
    t0 = time.perf_counter()
    train_set, tests = vl.make_data(cfg)
    ev = ex.Evaluator(train_set, tests, cfg.train.backend, cfg.train.device)
    stages = vl.Stages(out / "stages", progress_bars(args.quiet), log)
    log(f"training {args.seeds} single models (one stacked call) on the main job's data, seed {args.seed}")
    seeds = range(cfg.seed * 1000, cfg.seed * 1000 + args.seeds)
    single = stages.fit("single", train_set, seeds, cfg.learner, cfg.train)
    logits = ev.logits(single)
    res = measure(logits["single"], logits["multi"], tests, sizes, args.subsets, args.n_boot, args.seed)
    res["train_acc"] = single.train_acc.tolist()
    res["timing_s"] = {"total": time.perf_counter() - t0, "training": single.wall_s,
                       "earlier_processes": stages.earlier_work()}
    write_json(out / "results.json", res)
    write_csv(out / "ensemble_size.csv", res["sizes"])
    by = res["disagreement"]["single_view_by_views"]
    write_csv(out / "disagreement.csv",
              [{"samples": "multi-view", "split": "all", "disagreement": res["disagreement"]["multi_view"], "cases": None},
               {"samples": "single-view", "split": "all", "disagreement": res["disagreement"]["single_view"], "cases": None},
               *({"samples": "single-view", "split": f"{name} of the pair use the view", **by[name]}
                 for name in ("both", "one", "neither"))])
    if not args.no_figures:
        figures.ensemble_size_figure(out / "ensemble_size.png", res)
    print(format_report(res))
    unfitted = ""
    if min(res["train_acc"]) < 1.0:
        unfitted = f"warning: {sum(a < 1.0 for a in res['train_acc'])} of {args.seeds} models did not fit their training set"
        print(unfitted, file=sys.stderr)
    total = format_total(res["timing_s"], "trained stage")
    write_report(out, "ensemble_size: how an ensemble grows with its members, and why it stops",
                 command_line(parser.prog, argv), [("The curve", format_report(res)), ("Warnings", unfitted),
                                                   ("Time", total)], figures.ENSEMBLE_SIZE_FIGURES)
    print(f"{total}; results in {out}, on one page in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
