"""What a view-learning run's results say: its tables, the paper's predictions, and the sweep's rows.

The experiment (:mod:`theory_sims.view_learning`) produces a ``results`` dict; this module reads
it and nothing else, so the experiment, the sweep (:mod:`theory_sims.sweep`) and the figures
(:mod:`theory_sims.figures`) all take their rows and verdicts from one place:

* every row's name in the table and short label, once: :data:`ROW_NAMES` (:data:`ROWS`, :data:`SHORT`);
* the table of a run: :data:`ROWS`, :func:`table_rows`, :func:`format_table`, :func:`per_seed_rows`;
* the paper's statements, in three kinds (its theorems for this model, its contrast with random
  features, its observations on real networks), each judged on its own bound with one finite-k
  tolerance: :data:`STATEMENTS`, :func:`tolerance`, :func:`held_bound`, :func:`judge`, :func:`format_predictions`;
* the mechanism behind them (views used, the init's lottery, inheritance, memorisation, noise):
  :func:`format_mechanism`;
* diagnostics printed after the table: :func:`format_second_views`, :func:`unfitted`;
* one run summarised as a row of a sweep: :data:`ACCURACY_ROWS`, :data:`VIEW_ROWS`,
  :func:`summary`, :func:`format_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory_sims.mechanism import SELF_KD_GROUPS, USED_THRESHOLD

# ----------------------------------------------------------------------------- one run's table

# Every row of a run, once: its key in ``results``, its name in the run's table (the printout,
# table.csv, the README's table) and its short label in figures, legends and the sweep's summaries.
ROW_NAMES = {
    "individual": ("single model", "single model"),
    "long_single": ("single model, trained as long as KD", "single, trained as long as KD"),
    "ensemble": ("ensemble", "ensemble"),
    "kd": ("knowledge distillation", "KD"),
    "self_kd": ("self-distillation", "self-KD"),
    "average": ("training the average", "training the average"),
    "wide_single": ("single model as wide as the average", "single as wide as the average"),
    "sum_single": ("the average's members trained as their sum", "members trained as their sum"),
    "kd_ensemble": ("ensemble of KD students", "KD students' ensemble"),
    "augmented": ("single model, augmented (--augment)", "single, augmented"),
    "augmented_ensemble": ("ensemble of augmented models", "augmented models' ensemble"),
}
# The table's rows, in its order: (name, results key).
ROWS = [(name, key) for key, (name, _) in ROW_NAMES.items()]
# Each row's short label, by results key.
SHORT = {key: short for key, (_, short) in ROW_NAMES.items()}

# Row-name prefixes of the families whose features do not move (results keys as in the experiment).
FAMILY_PREFIX = {"random_features": "random features: ", "ntk": "NTK: "}


def table_rows(results: dict) -> list[dict]:
    """One dict per table row: name, test / multi / single accuracy (mean, std), single-view accuracy
    with the inputs' noise removed (a diagnostic) and views used per class."""
    rows = []

    def add(name, entry, prefix=""):
        row = {"row": prefix + name}
        for key in ("test_acc", "multi_view_acc", "single_view_acc"):
            vals = np.atleast_1d(np.asarray(entry[key], dtype=float))  # a stack's models, or one ensemble
            row[key] = float(vals.mean())
            row[key + "_std"] = float(vals.std()) if vals.size > 1 else None
        clean = entry.get("single_view_clean_acc")
        row["single_view_clean_acc"] = None if clean is None else float(np.mean(clean))
        vl = entry.get("views_used")
        row["views_per_class"] = float(np.asarray(vl).sum(axis=-1).mean()) if vl is not None else None
        rows.append(row)

    for name, key in ROWS:
        if key in results:
            add(name, results[key])
    for family, prefix in FAMILY_PREFIX.items():
        for name, key in ROWS:
            if key in results.get(family, {}):
                add(name, results[family][key], prefix=prefix)
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'':42s} {'test':>13s} {'multi-view':>13s} {'single-view':>13s} {'no noise':>8s} {'views/class':>11s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for key in ("test_acc", "multi_view_acc", "single_view_acc"):
            std = r[key + "_std"]
            cells.append(f"{r[key]:.3f} ± {std:.3f}" if std is not None else f"{r[key]:.3f}        ")
        v = "" if r["views_per_class"] is None else f"{r['views_per_class']:.2f}"
        clean = "" if r.get("single_view_clean_acc") is None else f"{r['single_view_clean_acc']:.3f}"
        lines.append(f"{r['row']:42s} {cells[0]:>13s} {cells[1]:>13s} {cells[2]:>13s} {clean:>8s} {v:>11s}")
    return "\n".join(lines)


def per_seed_rows(results: dict) -> list[dict]:
    ind = results["individual"]
    out = []
    for s in range(len(ind["test_acc"])):
        vl = np.asarray(ind["views_used"][s])
        out.append({
            "seed": s, "test_acc": ind["test_acc"][s], "multi_view_acc": ind["multi_view_acc"][s],
            "single_view_acc": ind["single_view_acc"][s], "train_acc": ind["train_acc"][s],
            "fit_step": ind["fit_step"][s], "views_used": int(vl.sum()), "views_total": vl.size,
        })
    return out


# ----------------------------------------------------------------------------- the paper's statements

def tolerance(k: int) -> float:
    """The one finite-k tolerance of every verdict, in units of mu (the test error over D divided
    by the fraction mu of single-view data): 0.5 / k, so 0.05 at k = 10.

    Why: the theorems are asymptotic in k and drop terms that vanish with it. The largest at this
    scale is chance: on a single-view sample whose view a model does not use, its logits are at
    noise level and it still names the right class about 1/k of the time, so a model that uses
    half the views errs on about (1 - 1/k) / 2 of the single-view data, not on half of it: 0.5/k
    below the theorem's 0.5 mu. A bound met to within this counts as met; a gain the paper says
    exists counts only beyond it, and one it says vanishes may reach it."""
    return 0.5 / k


@dataclass(frozen=True)
class Statement:
    """One of the paper's statements about this model, judged on a quantity in units of mu.

    ``text``: what it says; ``{lo}`` and ``{hi}`` in it are filled in from the bound, so that the
    bound is typed once. ``lo``/``hi``: the paper's bound (None: open). ``widen``: +1 where the
    tolerance widens the bound (a finite-k theorem bound, or a gain that should vanish), -1 where it
    narrows it (a gain the paper says exists must exceed the tolerance). ``gate``: the statement
    also needs the single models to fit their training set."""

    kind: str
    text: str
    quantity: str
    lo: float | None = None
    hi: float | None = None
    widen: int = 1
    gate: bool = False

    def __post_init__(self):
        object.__setattr__(self, "text", self.text.format(lo=self.lo, hi=self.hi))


KINDS = {
    "theorem": "the paper's theorems for this model (test error over D, in units of mu)",
    "random features": "the paper's contrast: random features (first layer frozen at init)",
    "observation": "the paper's observations on real networks (not theorems of this model)",
}

STATEMENTS = {
    "single": Statement("theorem", "a single model: test error in [{lo:g} mu, {hi:g} mu] with 100% training accuracy",
                        "error_individual", 0.49, 0.51, gate=True),
    "ensemble": Statement("theorem", "an ensemble of independently trained models: error <= {hi:g} mu",
                          "error_ensemble", hi=0.01),
    "kd": Statement("theorem", "knowledge distillation from the ensemble: error <= {hi:g} mu", "error_kd", hi=0.01),
    "self_kd": Statement("theorem", "self-distillation: error <= {hi:g} mu", "error_self_kd", hi=0.26),
    "rf_ensemble": Statement("random features", "the ensemble lowers the error", "rf_error_drop_ensemble", lo=0.0,
                             widen=-1),
    "rf_kd": Statement("random features", "distillation does not lower it", "rf_error_drop_kd", hi=0.0),
    "rf_average": Statement("random features", "training the average lowers it", "rf_error_drop_average", lo=0.0,
                            widen=-1),
    "average": Statement("observation", "training the average gains (almost) nothing over one model",
                         "error_drop_average", hi=0.0),
    "kd_ensemble": Statement("observation", "the KD students' ensemble gains (almost) nothing over one student",
                             "error_drop_kd_ensemble", hi=0.0),
}
# What each statement says, by name (the sweep's columns and the map's panels follow this order).
PREDICTIONS = {name: s.text for name, s in STATEMENTS.items()}
# Each statement's short name in figures and one-line summaries.
# (the statements about one row take that row's label)
LABELS = {"single": SHORT["individual"], "ensemble": SHORT["ensemble"], "kd": SHORT["kd"], "self_kd": SHORT["self_kd"],
          "rf_ensemble": "RF: ensemble gains", "rf_kd": "RF: KD gains nothing", "rf_average": "RF: average gains",
          "average": SHORT["average"], "kd_ensemble": SHORT["kd_ensemble"]}


def held_bound(name: str, k: int) -> tuple[float | None, float | None]:
    """The bound (lo, hi) statement ``name`` is held to at ``k`` classes: the paper's
    (:data:`STATEMENTS`), widened or narrowed by the :func:`tolerance` (None: that side is open)."""
    s, tol = STATEMENTS[name], tolerance(k)
    return (None if s.lo is None else s.lo - s.widen * tol, None if s.hi is None else s.hi + s.widen * tol)


def error(entry: dict, mu: float) -> float:
    """Mean test error over D of a row's models, in units of mu."""
    return (1.0 - float(np.mean(entry["test_acc"]))) / mu


def quantities(results: dict) -> dict[str, float]:
    """Every quantity a statement is judged on, in units of mu: each row's test error
    (``error_<row>``), and the drops in test error (``error_drop_<row>``: error of the reference
    minus error of the row) the random-feature and observation statements are about, which their
    texts call gains; plus the single models' worst training accuracy. (Not :func:`summary`'s
    ``gain_*``, which are single-view accuracy differences.)"""
    mu = results["setting"]["mu"]
    q = {f"error_{key}": error(results[key], mu)
         for key in ("individual", "ensemble", "kd", "self_kd", "average", "kd_ensemble") if key in results}
    if "error_average" in q:  # the search runs without it
        q["error_drop_average"] = q["error_individual"] - q["error_average"]
    q["error_drop_kd_ensemble"] = q["error_kd"] - q["error_kd_ensemble"]
    rf = results.get("random_features")
    if rf:
        base = error(rf["individual"], mu)
        for key in ("ensemble", "kd", "average"):
            q[f"rf_error_drop_{key}"] = base - error(rf[key], mu)
    q["train"] = float(np.min(results["individual"]["train_acc"]))
    return q


def judge(results: dict) -> dict[str, dict]:
    """Every statement that the run's rows can judge: kind, text, measured value, the paper's
    bound, the tolerance, the bound it is held to (``lo_held``, ``hi_held``), the margin (the
    smallest slack over the bound's sides, and the training fit where gated; >= 0: it holds) and
    the verdict."""
    q = quantities(results)
    k = results["setting"]["k"]
    tol = tolerance(k)
    out = {}
    for name, s in STATEMENTS.items():
        if s.quantity not in q:
            continue
        value = q[s.quantity]
        lo, hi = held_bound(name, k)
        slack = [value - lo] if lo is not None else []
        slack += [hi - value] if hi is not None else []
        if s.gate and q["train"] < 1.0:  # fitting the training set is a gate: a slack only where it fails
            slack.append(q["train"] - 1.0)
        margin = min(slack)
        out[name] = {"kind": s.kind, "statement": s.text, "value": value, "bound": [s.lo, s.hi],
                     "tolerance": tol, "lo_held": lo, "hi_held": hi, "margin": margin, "holds": bool(margin >= 0)}
    return out


def margins(results: dict) -> dict[str, float]:
    """Each judged statement's margin (>= 0: it holds)."""
    return {name: v["margin"] for name, v in judge(results).items()}


def predictions(results: dict) -> dict[str, bool]:
    """Which of the statements hold in a run's ``results``."""
    return {name: v["holds"] for name, v in judge(results).items()}


def _bound_text(v: dict) -> str:
    lo, hi = v["bound"]
    paper = f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else f">= {lo:g}" if lo is not None else f"<= {hi:g}"
    held = (f"[{v['lo_held']:.3g}, {v['hi_held']:.3g}]" if lo is not None and hi is not None
            else f">= {v['lo_held']:.3g}" if lo is not None else f"<= {v['hi_held']:.3g}")
    return f"paper {paper}, held to {held}"


def measured(results: dict) -> dict[str, str]:
    """The numbers behind each statement, as a short text per statement."""
    q = quantities(results)
    sv = {key: single_view(results, key) for key in ("individual", "ensemble", "kd", "self_kd") if key in results}
    ind = results["individual"]
    texts = {
        "single": f"error {q['error_individual']:.3f} mu; single-view {sv['individual']:.3f}, multi-view "
                  f"{np.mean(ind['multi_view_acc']):.3f}, training {q['train']:.3f} (worst model)",
        "ensemble": f"error {q['error_ensemble']:.3f} mu; single-view {sv['ensemble']:.3f}",
        "kd": f"error {q['error_kd']:.3f} mu; single-view {sv['kd']:.3f}",
        "self_kd": f"error {q['error_self_kd']:.3f} mu; single-view {sv['self_kd']:.3f}",
        "average": f"gain {q.get('error_drop_average', np.nan):+.3f} mu (average {q.get('error_average', np.nan):.3f} mu, "
                   f"single {q['error_individual']:.3f} mu; the ensemble's gain "
                   f"{q['error_individual'] - q['error_ensemble']:+.3f} mu)",
        "kd_ensemble": f"gain {q['error_drop_kd_ensemble']:+.3f} mu (students' ensemble {q['error_kd_ensemble']:.3f} mu, one "
                       f"student {q['error_kd']:.3f} mu; teachers' ensemble {q['error_ensemble']:.3f} mu)",
    }
    for key in ("ensemble", "kd", "average"):
        if f"rf_error_drop_{key}" in q:
            texts[f"rf_{key}"] = f"gain {q[f'rf_error_drop_{key}']:+.3f} mu over a random-feature model"
    return texts


def format_predictions(results: dict) -> str:
    """The statements by kind, each with its verdict, the measured value beside the paper's bound
    and the bound it was held to, and its margin."""
    judged = judge(results)
    numbers = measured(results)
    s = results["setting"]
    lines = [f"the paper's statements, judged with the finite-k tolerance {tolerance(s['k']):.3g} mu "
             f"(0.5/k, k = {s['k']}; mu = {s['mu']:g}; report.tolerance says why):"]
    for kind, heading in KINDS.items():
        names = [n for n, v in judged.items() if v["kind"] == kind]
        if not names:
            continue
        lines.append(f" {heading}")
        for name in names:
            v = judged[name]
            lines.append(f"  [{'holds' if v['holds'] else 'FAILS'}] {name}: {v['statement']}")
            lines.append(f"          {numbers[name]}; {_bound_text(v)}; margin {v['margin']:+.3f}")
    return "\n".join(lines)


def single_view(results: dict, key: str) -> float:
    """Mean single-view test accuracy of row ``key``."""
    return float(np.mean(results[key]["single_view_acc"]))


# ----------------------------------------------------------------------------- the mechanism

def _frac(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _edge(x, lower: bool = False) -> str:
    """A bin's edge; an open one (-inf or inf in memory) comes back from results.json as null."""
    return ("-inf" if lower else "inf") if x is None else f"{x:g}"


def format_mechanism(results: dict) -> str:
    """The mechanism lines: which views the models use (and how that reads off Lambda), whether
    the init decided the lottery, what the students inherit, how the single-view training samples
    are fitted, and what noise alone makes the models say."""
    m, k = results["mechanism"], results["setting"]["k"]
    views = {key: np.asarray(results[key]["views_used"], dtype=bool)
             for key in ("individual", "ensemble", "kd", "self_kd", "average") if key in results}
    frac = float(views["individual"].mean())
    # the theorem's band on the error, as held; it is symmetric about one half, so the same numbers
    # bound the fraction of views used (a model errs on the single-view samples of the views it does not use)
    band = held_bound("single", k)
    lines = [f"the mechanism (a model uses a view when it gets >= {USED_THRESHOLD:g} of the single-view test samples "
             "that show only that view right):"]
    lines.append("  views used per class: " + ", ".join(
        f"{name} {views[key].sum(-1).mean():.2f}" for key, name in
        (("individual", "single models"), ("ensemble", "ensemble"), ("kd", "KD"), ("self_kd", "self-KD"),
         ("average", "trained average")) if key in views) + f" (of {views['individual'].shape[-1]})")
    lines.append(f"  single models use {frac:.0%} of the (class, view) pairs; the single-model theorem's band, in the "
                 f"same units: {band[0]:.0%}-{band[1]:.0%} ({'inside' if band[0] <= frac <= band[1] else 'outside'})")
    cal = ", ".join(f"[{_edge(c['lambda_lo'], True)}, {_edge(c['lambda_hi'])}) {_frac(c['mean_view_acc'])} ({c['triples']})"
                    for c in m["calibration"] if c["triples"])
    lines.append(f"  Lambda/varrho at the end -> per-view accuracy (triples): {cal}")
    lot = m.get("lottery")
    if lot:
        lines.append(f"  the init's lottery: {lot['one_view']} of {lot['pairs']} (seed, class) pairs use one view, "
                     f"{_frac(lot['init_winner'])} of them the one with the larger initial Lambda (chance "
                     f"{lot['chance']:.2f}, theory about 1); {lot['several_views']} use several, {lot['no_view']} none; "
                     f"median initial gap between the two largest Lambdas {lot['median_gap_one_view'] or 0:.3g} "
                     f"(one view) vs {lot['median_gap_several_views'] or 0:.3g} (several)")
    kd = m["kd_inheritance"]
    lines.append(f"  KD students use {_frac(kd['ensemble']['fraction'])} of the views some teacher uses: "
                 f"{_frac(kd['few']['fraction'])} of those at most a third of the {kd['teachers']} teachers use, "
                 f"{_frac(kd['many']['fraction'])} of the others; by teachers using the view: " + ", ".join(
                     f"{r['teachers']}: {r['fraction']:.2f}" for r in kd["by_teachers"]))
    sk = m.get("self_kd_inheritance")
    if sk:
        lines.append("  self-KD students use the views used by " + ", ".join(
            f"{text}: {_frac(sk[g]['fraction'])} ({sk[g]['triples']})" for g, text in SELF_KD_GROUPS.items())
            + f"; the union (the teacher's or the own init's): {_frac(sk['union']['fraction'])}")
    race = m.get("race")
    if race and race["raced"]:
        bins = ", ".join(f"[{_edge(b['lo'], True)}, {_edge(b['hi'])}) {b['pairs']} ({_frac(b['both_used'])})"
                         for b in race["by_loser_at_win"] if b["pairs"])
        lines.append(
            f"  the race: in {race['raced']} of {race['pairs']} (seed, class) pairs a view crossed varrho, the first at "
            f"step {race['median_t_win']:.0f} (median); the other view then stood at {race['median_loser_at_win']:.2f} "
            f"varrho (median; below 0.5 in {race['loser_below_half']}: the race ran in the power phase there); it "
            f"crossed with the winner in {race['loser_crossed_with_winner']}, later but by the fit in "
            f"{race['loser_later_before_fit']}, after the fit in {race['loser_later_after_fit']}, never in "
            f"{race['loser_never']}; by the other view's Lambda/varrho then, pairs (fraction using both views): {bins}")
    sv = m.get("single_view_samples")
    if sv and sv["samples"]:
        counts = np.asarray(sv["count"])
        lines.append(
            f"  single-view training samples: {sv['samples']} ({counts.min()}-{counts.max()} per (class, view)); "
            f"(model, sample) pairs fitted through the view shown {_frac(sv['all_through_view'])}, through the sample's "
            f"own noise {_frac(sv['all_through_noise'])}")
    mem = m["memorisation"]
    un, us = mem["unused"], mem["used"]
    lines.append(f"  single-view training samples whose view the model does not use ({un['pairs']} pairs): fitted "
                 f"{_frac(un['fitted'])}, still right without their noise {_frac(un['without_noise'])}, stored noise "
                 f"{un['median_stored_noise'] or 0:.2f}; whose view it uses ({us['pairs']}): {_frac(us['fitted'])}, "
                 f"{_frac(us['without_noise'])}, {us['median_stored_noise'] or 0:.2f}")
    if "noise_response" in m:
        lines.append("  largest logit on noise-only inputs (mean over inputs; max): " + ", ".join(
            f"{name} {np.mean(v['mean_max_logit']):.2f} ({np.max(v['max_logit']):.2f})" for name, v in
            zip(("single models", "KD", "self-KD"), m["noise_response"].values())))
    clean = [(name, results[key].get("single_view_clean_acc")) for key, name in
             (("individual", "single models"), ("ensemble", "ensemble"), ("kd", "KD"), ("self_kd", "self-KD"))]
    if all(v is not None for _, v in clean):
        lines.append("  single-view accuracy with the inputs' Gaussian noise removed (diagnostic): " + ", ".join(
            f"{name} {np.mean(v):.3f}" for name, v in clean))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- diagnostics

def format_lr_check(results: dict) -> str:
    """One line: the single models' views and accuracy at half the learning rate, beside the run's."""
    c = results["lr_check"]
    return (f"the learning rate, halved (--check-lr): single models use {c['views_per_class']:.2f} views per class at lr "
            f"{c['lr']:g} and {c['half_lr_views_per_class']:.2f} at lr {c['half_lr']:g} (change "
            f"{c['half_lr_views_per_class'] - c['views_per_class']:+.2f}; the same views in {c['same_views']:.0%} of the "
            f"(seed, class) pairs), single-view accuracy {c['single_view_acc']:.3f} and {c['half_lr_single_view_acc']:.3f}; "
            f"fit steps {min(c['fit_step'])}-{max(c['fit_step'])} and {min(c['half_lr_fit_step'])}-"
            f"{max(c['half_lr_fit_step'])}")


def format_second_views(results: dict, key: str = "individual", who: str = "single models") -> str:
    """One line on when the models of row ``key`` learned the views beyond one per class."""
    sv = results[key]["second_views"]
    if not sv["several_views"]:
        return f"{who}: in every one of the {sv['pairs']} (model, class) pairs Lambda crossed varrho for at most one view"
    return (f"{who}: in {sv['several_views']} of {sv['pairs']} (model, class) pairs Lambda crossed varrho for more than one view, "
            f"{sv['last_view_by_fit']} of them all by the step the model fitted its training set "
            f"(median {sv['median_lag_steps']:g} steps between a pair's first and last view)")


def format_augmented(results: dict) -> str:
    """Lines on the single models trained with ``--augment`` against the plain ones and the ensemble:
    views used and learned (Lambda) per class, single-view accuracy, the share of the ensemble's
    single-view gain one augmented model reaches, and when their extra views were learned."""
    if "augmented" not in results:
        return ""
    how = results["setting"].get("augment", "augmentation")
    plain, aug, ens = results["individual"], results["augmented"], results["ensemble"]

    def per_class(row, key):
        return float(np.asarray(row[key], dtype=float).sum(axis=-1).mean())

    sv = {name: single_view(results, key) for name, key in (("plain", "individual"), ("aug", "augmented"),
                                                            ("ens", "ensemble"))}
    gap = sv["ens"] - sv["plain"]
    share = (sv["aug"] - sv["plain"]) / gap if abs(gap) > 1e-9 else float("nan")
    lines = [f"augmented single models ({how}): views used per class {per_class(aug, 'views_used'):.2f} "
             f"(plain {per_class(plain, 'views_used'):.2f}, ensemble {per_class(ens, 'views_used'):.2f}); "
             f"views Lambda counts as learned {per_class(aug, 'lambda_learned'):.2f} (plain "
             f"{per_class(plain, 'lambda_learned'):.2f})",
             f"  single-view accuracy {sv['aug']:.3f} (plain {sv['plain']:.3f}, ensemble {sv['ens']:.3f}): one augmented "
             f"model reaches {share:.0%} of the ensemble's gain; the augmented models' ensemble "
             f"{single_view(results, 'augmented_ensemble'):.3f}",
             "  " + format_second_views(results, "augmented", "augmented models")]
    return "\n".join(lines)


def format_by_length(results: dict) -> str:
    """One line on what the single models had learned at each recorded multiple of their fit step."""
    bl = results["individual"].get("by_length")
    if not bl:
        return "single models: no snapshots along training (TrainConfig.snapshots is empty)"
    cells = ", ".join(f"{name} {row['mean_views_per_class']:.2f} views used/class, {row['mean_single_view_acc']:.3f} single-view"
                      for name, row in bl.items())
    return f"single models at multiples of their fit step: {cells}"


def unfitted(results: dict) -> list[str]:
    """One line per trained row of the full learner whose models did not all reach 100% training
    accuracy (random features and NTK are not expected to fit; their ``train_acc`` is in the results).

    A student that stops short is worth knowing about: e.g. with the truncated KD loss and no
    label term, a logit pushed above tau in one large step gets no gradient again and stays there.
    """
    lines = []
    for name, key in ROWS:
        acc = np.atleast_1d(results.get(key, {}).get("train_acc", []))
        if acc.size and (acc < 1.0).any():
            short = ", ".join(f"{a:.3f}" for a in acc if a < 1.0)
            lines.append(f"{name}: {int((acc < 1.0).sum())} of {acc.size} models end below 100% "
                         f"training accuracy ({short})")
    return lines


# ----------------------------------------------------------------------------- one run as a sweep row

# Rows of the full learner whose single-view accuracy (``sv_<row>``) and views used per class
# (``views_<row>``) the sweep records, with their labels (:data:`SHORT`); the order is the sweep's columns.
ACCURACY_ROWS = {key: SHORT[key] for key in ("individual", "ensemble", "kd", "self_kd", "long_single", "average",
                                             "wide_single", "sum_single", "kd_ensemble", "augmented")}
VIEW_ROWS = {key: SHORT[key] for key in ("individual", "kd", "self_kd", "average", "wide_single", "sum_single",
                                         "augmented")}
VIEW_ROWS["average"] += " (whole network)"  # its views are those of the averaged network, not of a member


def summary(results: dict) -> dict:
    """One run's numbers: single-view accuracy of every row (``sv_<row>``), views per class
    (``views_<row>``), the gains and every statement's value, margin and verdict
    (``value_<name>``, ``margin_<name>``, ``holds_<name>``).

    A gain here (``gain_ensemble``, ``gain_average``, ``gain_kd_ensemble``) is a single-view
    *accuracy* difference: the row's single-view accuracy minus that of its reference (the single
    models; for the students' ensemble, one KD student). The statements about the same rows are
    judged on the drop in test *error* over D in units of mu (:func:`quantities`), which is their
    ``value_<name>``."""
    out = {"multi_view_single": float(np.mean(results["individual"]["multi_view_acc"])),
           "train_acc_min": float(np.min(results["individual"]["train_acc"]))}
    for key in ACCURACY_ROWS:
        if key in results:  # the controls may be off
            out["sv_" + key] = single_view(results, key)
    for key in VIEW_ROWS:
        if key in results:
            out["views_" + key] = float(np.asarray(results[key]["views_used"]).sum(axis=-1).mean())
    # the fraction of (model, class) pairs whose model uses more than one of the class's views
    out["several_views_individual"] = float((np.asarray(results["individual"]["views_used"]).sum(axis=-1) > 1).mean())
    single = out["sv_individual"]
    out["gain_ensemble"] = out["sv_ensemble"] - single
    if "sv_average" in out:
        out["gain_average"] = out["sv_average"] - single
    out["gain_kd_ensemble"] = out["sv_kd_ensemble"] - out["sv_kd"]
    for name, v in judge(results).items():
        out["value_" + name] = v["value"]
        out["margin_" + name] = v["margin"]
        out["holds_" + name] = v["holds"]
    by_length = results["individual"].get("by_length", {})
    for length, row in by_length.items():  # the single models at 1x, 3x, 10x their fit step
        out[f"sv_individual_{length}"] = row["mean_single_view_acc"]
        out[f"views_individual_{length}"] = row["mean_views_per_class"]
    return out


def judged_names(rows: list[dict]) -> list[str]:
    """The statements judged in every one of a sweep's rows, in :data:`STATEMENTS` order."""
    return [name for name in STATEMENTS if all("holds_" + name in r for r in rows)]


def format_summary(rows: list[dict], paths: list[str]) -> str:
    """One line per point (means over its data seeds): the varied values, single-view accuracy of
    the main rows, the two gains in single-view accuracy (:func:`summary`'s ``gain_average``, avg-1:
    training the average over one model, and ``gain_kd_ensemble``, KDe-KD: the KD students'
    ensemble over one student) and on how many data seeds each prediction held."""
    head = (f"{' / '.join(paths) or 'point':28s} {'single':>6s} {'views':>5s} {'ens':>6s} {'KD':>6s} "
            f"{'selfKD':>6s} {'avg-1':>6s} {'KDe-KD':>6s}  predictions held")
    lines = [head, "-" * len(head)]
    for point in dict.fromkeys(r["point"] for r in rows):
        rs = [r for r in rows if r["point"] == point]
        # a row without the trained average (--no-average, the search) has no gain_average: nan
        mean = lambda key: float(np.mean([r.get(key, np.nan) for r in rs]))  # noqa: E731
        held = " ".join(f"{name} {sum(r['holds_' + name] for r in rs)}/{len(rs)}" for name in judged_names(rs))
        label = " / ".join(str(rs[0][p]) for p in paths) or str(point)
        lines.append(f"{label:28s} {mean('sv_individual'):6.3f} {mean('views_individual'):5.2f} "
                     f"{mean('sv_ensemble'):6.3f} {mean('sv_kd'):6.3f} {mean('sv_self_kd'):6.3f} "
                     f"{mean('gain_average'):+6.3f} {mean('gain_kd_ensemble'):+6.3f}  {held}")
    return "\n".join(lines)


def map_cells(rows: list[dict], paths: list[str], name: str) -> tuple[list, list, np.ndarray, np.ndarray]:
    """A grid sweep's margins of prediction ``name``: (values of paths[0], values of paths[1],
    mean margin over the data seeds (Y, X), fraction of data seeds where it held (Y, X))."""
    ys = list(dict.fromkeys(r[paths[0]] for r in rows))
    xs = list(dict.fromkeys(r[paths[1]] for r in rows))
    margin = np.full((len(ys), len(xs)), np.nan)
    held = np.full((len(ys), len(xs)), np.nan)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            rs = [r for r in rows if r[paths[0]] == yv and r[paths[1]] == xv]
            if rs:
                margin[i, j] = np.mean([r["margin_" + name] for r in rs])
                held[i, j] = np.mean([r["holds_" + name] for r in rs])
    return ys, xs, margin, held


def format_map(rows: list[dict], paths: list[str]) -> str:
    """Each prediction over a grid sweep, as text: its mean margin at every point and on how many
    data seeds it held."""
    seeds = len({r["data_seed"] for r in rows})
    lines = []
    for name in judged_names(rows):
        ys, xs, margin, held = map_cells(rows, paths, name)
        lines.append(f"{name} (margin; held on how many of {seeds} data seeds), {paths[0]} down, {paths[1]} across")
        lines.append(f"{'':>10s}" + "".join(f"{x!s:>16s}" for x in xs))
        for i, yv in enumerate(ys):
            cells = "".join(f"{margin[i, j]:+9.3f} ({round(held[i, j] * seeds)}/{seeds})" for j in range(len(xs)))
            lines.append(f"{yv!s:>10s}" + cells)
    return "\n".join(lines)
