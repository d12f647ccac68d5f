"""What a view-learning run's results say: its tables, the paper's predictions, and the sweep's rows.

The experiment (:mod:`theory_sims.view_learning`) produces a ``results`` dict; this module reads
it and nothing else, so the experiment, the sweep (:mod:`theory_sims.sweep`) and the figures
(:mod:`theory_sims.figures`) all take their rows and verdicts from one place:

* the table of a run: :data:`ROWS`, :func:`table_rows`, :func:`format_table`, :func:`per_seed_rows`;
* the paper's predictions at this project's thresholds: :data:`PREDICTIONS`, :func:`predictions`;
* diagnostics printed after the table: :func:`format_second_views`, :func:`unfitted`;
* one run summarised as a row of a sweep: :data:`ACCURACY_ROWS`, :data:`VIEW_ROWS`,
  :func:`summary`, :func:`format_summary`.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- one run's table

ROWS = [
    ("single model", "individual"),
    ("single model, trained as long as KD", "long_single"),
    ("ensemble", "ensemble"),
    ("knowledge distillation", "kd"),
    ("self-distillation", "self_kd"),
    ("training the average", "average"),
    ("single model as wide as the average", "wide_single"),
    ("ensemble of KD students", "kd_ensemble"),
]

# Row-name prefixes of the families whose features do not move (results keys as in the experiment).
FAMILY_PREFIX = {"random_features": "random features: ", "ntk": "NTK: "}


def table_rows(results: dict) -> list[dict]:
    """One dict per table row: name, test / multi / single accuracy (mean, std) and views per class."""
    rows = []

    def add(name, entry, prefix=""):
        row = {"row": prefix + name}
        for key in ("test_acc", "multi_view_acc", "single_view_acc"):
            vals = entry.get(key + "_per_model", entry[key])
            vals = np.atleast_1d(np.asarray(vals, dtype=float))
            row[key] = float(vals.mean())
            row[key + "_std"] = float(vals.std()) if vals.size > 1 else None
        vl = entry.get("views_learned")
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
    head = f"{'':42s} {'test':>13s} {'multi-view':>13s} {'single-view':>13s} {'views/class':>11s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for key in ("test_acc", "multi_view_acc", "single_view_acc"):
            std = r[key + "_std"]
            cells.append(f"{r[key]:.3f} ± {std:.3f}" if std is not None else f"{r[key]:.3f}        ")
        v = "" if r["views_per_class"] is None else f"{r['views_per_class']:.2f}"
        lines.append(f"{r['row']:42s} {cells[0]:>13s} {cells[1]:>13s} {cells[2]:>13s} {v:>11s}")
    return "\n".join(lines)


def per_seed_rows(results: dict) -> list[dict]:
    ind = results["individual"]
    out = []
    for s in range(len(ind["test_acc"])):
        vl = np.asarray(ind["views_learned"][s])
        out.append({
            "seed": s, "test_acc": ind["test_acc"][s], "multi_view_acc": ind["multi_view_acc"][s],
            "single_view_acc": ind["single_view_acc"][s], "train_acc": ind["train_acc"][s],
            "fit_step": ind["fit_step"][s], "views_learned": int(vl.sum()), "views_total": vl.size,
        })
    return out


# ----------------------------------------------------------------------------- the paper's predictions

# The paper's predictions for the full learner, at the thresholds this project holds the default
# run to; ``margins`` measures each on a run's results (>= 0: it holds) and ``predictions`` says
# which hold. The single models are judged as trained (to convergence at the defaults).
PREDICTIONS = {
    "lottery": "single models fit the training set and the multi-view test set (>= 0.98) but learn "
               "45-75% of the views and get 0.40-0.70 of single-view data",
    "ensemble": "the ensemble gets >= 0.90 of single-view data, >= 0.25 above the single models",
    "kd": "KD students get >= 0.85 of single-view data and learn every view of most classes",
    "self_kd": "self-KD gains >= 0.08 over the single models and stays at most the ensemble",
    "average": "training the average gains at most a quarter of the ensemble's gain over the single models",
    "kd_ensemble": "the KD students' ensemble gains at most 0.03 over one student",
}


def single_view(results: dict, key: str) -> float:
    """Mean single-view test accuracy of row ``key``."""
    return float(np.mean(results[key]["single_view_acc"]))


def _numbers(results: dict) -> dict[str, float]:
    """What the predictions are judged on: single-view accuracy of each row, the fraction of
    (model, class, view) triples the single models learned, the fraction of (student, class)
    pairs where a KD student learned every view, and the single models' multi-view and worst
    training accuracy."""
    ind = results["individual"]
    out = {key: single_view(results, key)
           for key in ("individual", "ensemble", "kd", "self_kd", "average", "kd_ensemble")}
    out["views"] = float(np.asarray(ind["views_learned"], dtype=bool).mean())
    out["kd_all_views"] = float(np.asarray(results["kd"]["views_learned"], dtype=bool).all(axis=-1).mean())
    out["multi"] = float(np.mean(ind["multi_view_acc"]))
    out["train"] = float(min(ind["train_acc"]))
    return out


def margins(results: dict) -> dict[str, float]:
    """How far each of ``PREDICTIONS`` is from its threshold, in single-view accuracy (or fraction)
    units: the smallest slack over the prediction's conditions, >= 0 where it holds."""
    q = _numbers(results)
    single, ens, kd, views = q["individual"], q["ensemble"], q["kd"], q["views"]
    lottery = [q["multi"] - 0.98, single - 0.40, 0.70 - single, views - 0.45, 0.75 - views]
    if q["train"] < 1.0:  # fitting the training set is a gate: a slack only where it fails
        lottery.append(q["train"] - 1.0)
    return {
        "lottery": min(lottery),
        "ensemble": min(ens - 0.90, ens - single - 0.25),
        "kd": min(kd - 0.85, q["kd_all_views"] - 0.5 - 1e-9),  # "most classes": strictly more than half
        "self_kd": min(q["self_kd"] - single - 0.08, ens - q["self_kd"]),
        "average": (ens - single) / 4 - (q["average"] - single),
        "kd_ensemble": 0.03 - (q["kd_ensemble"] - kd),
    }


def predictions(results: dict) -> dict[str, bool]:
    """Which of ``PREDICTIONS`` hold in a run's ``results`` (full learner rows)."""
    return {name: bool(m >= 0) for name, m in margins(results).items()}


def measured(results: dict) -> dict[str, str]:
    """The numbers behind each prediction, as a short text per prediction (single-view accuracy)."""
    q = _numbers(results)
    single, ens, kd = q["individual"], q["ensemble"], q["kd"]
    return {
        "lottery": f"single {single:.3f}, {q['views']:.0%} of views, multi-view {q['multi']:.3f}, "
                   f"train {q['train']:.3f}",
        "ensemble": f"ensemble {ens:.3f}, {ens - single:+.3f}",
        "kd": f"KD {kd:.3f}, every view of {q['kd_all_views']:.0%} of (student, class) pairs",
        "self_kd": f"self-KD {q['self_kd']:.3f}, {q['self_kd'] - single:+.3f}",
        "average": f"average {q['average'] - single:+.3f} vs a quarter of the ensemble's {ens - single:+.3f}",
        "kd_ensemble": f"KD students' ensemble {q['kd_ensemble']:.3f}, {q['kd_ensemble'] - kd:+.3f} over one student; "
                       f"teachers' ensemble {ens:.3f}",
    }


def format_predictions(held: dict[str, bool], results: dict | None = None) -> str:
    """One line per prediction: held or not, what it says, and (with ``results``) the numbers and margin."""
    numbers = measured(results) if results is not None else {}
    marg = margins(results) if results is not None else {}
    lines = []
    for name, ok in held.items():
        line = f"  [{'holds' if ok else 'FAILS'}] {name}: {PREDICTIONS[name]}"
        if name in numbers:
            line += f"\n          measured: {numbers[name]} (margin {marg[name]:+.3f})"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- diagnostics

def format_second_views(results: dict, key: str = "individual", who: str = "single models") -> str:
    """One line on when the models of row ``key`` learned the views beyond one per class."""
    sv = results[key]["second_views"]
    if not sv["several_views"]:
        return f"{who}: every one of the {sv['pairs']} (model, class) pairs learned at most one view"
    return (f"{who}: {sv['several_views']} of {sv['pairs']} (model, class) pairs learned more than one view, "
            f"{sv['last_view_by_fit']} of them all by the step the model fitted its training set "
            f"(median {sv['median_lag_steps']:g} steps between a pair's first and last view)")


def format_by_length(results: dict) -> str:
    """One line on what the single models had learned at each recorded multiple of their fit step."""
    bl = results["individual"].get("by_length")
    if not bl:
        return "single models: no snapshots along training (TrainConfig.snapshots is empty)"
    cells = ", ".join(f"{name} {row['mean_views_per_class']:.2f} views/class, {row['mean_single_view_acc']:.3f} single-view"
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

# Rows of the full learner whose single-view accuracy the sweep records, and their labels.
ACCURACY_ROWS = {
    "individual": "single model", "ensemble": "ensemble", "kd": "KD", "self_kd": "self-KD",
    "long_single": "single, trained as long as KD", "average": "training the average",
    "wide_single": "single as wide as the average", "kd_ensemble": "KD students' ensemble",
}
VIEW_ROWS = {"individual": "single model", "kd": "KD", "self_kd": "self-KD",
             "average": "training the average (whole network)", "wide_single": "single as wide as the average"}


def summary(results: dict) -> dict:
    """One run's numbers: single-view accuracy of every row, views per class, the gains and
    which predictions hold."""
    out = {"multi_view_single": float(np.mean(results["individual"]["multi_view_acc"])),
           "train_acc_min": float(np.min(results["individual"]["train_acc"]))}
    for key in ACCURACY_ROWS:
        out["sv_" + key] = single_view(results, key)
    for key in VIEW_ROWS:
        out["views_" + key] = float(np.asarray(results[key]["views_learned"]).sum(axis=-1).mean())
    single = out["sv_individual"]
    out["gain_ensemble"] = out["sv_ensemble"] - single
    out["gain_average"] = out["sv_average"] - single
    out["gain_kd_ensemble"] = out["sv_kd_ensemble"] - out["sv_kd"]
    for name, margin in margins(results).items():
        out["margin_" + name] = margin
        out["holds_" + name] = bool(margin >= 0)
    by_length = results["individual"].get("by_length", {})
    for length, row in by_length.items():  # the single models at 1x, 3x, 10x their fit step
        out[f"sv_individual_{length}"] = row["mean_single_view_acc"]
        out[f"views_individual_{length}"] = row["mean_views_per_class"]
    return out


def format_summary(rows: list[dict], paths: list[str]) -> str:
    """One line per point (means over its data seeds): the varied values, single-view accuracy of
    the main rows, the two gains and on how many data seeds each prediction held."""
    head = (f"{' / '.join(paths) or 'point':28s} {'single':>6s} {'views':>5s} {'ens':>6s} {'KD':>6s} "
            f"{'selfKD':>6s} {'avg-1':>6s} {'KDe-KD':>6s}  predictions held")
    lines = [head, "-" * len(head)]
    for point in dict.fromkeys(r["point"] for r in rows):
        rs = [r for r in rows if r["point"] == point]
        mean = lambda key: float(np.mean([r[key] for r in rs]))  # noqa: E731
        held = " ".join(f"{name} {sum(r['holds_' + name] for r in rs)}/{len(rs)}" for name in PREDICTIONS)
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
    for name in PREDICTIONS:
        ys, xs, margin, held = map_cells(rows, paths, name)
        lines.append(f"{name} (margin; held on how many of {seeds} data seeds), {paths[0]} down, {paths[1]} across")
        lines.append(f"{'':>10s}" + "".join(f"{x!s:>16s}" for x in xs))
        for i, yv in enumerate(ys):
            cells = "".join(f"{margin[i, j]:+9.3f} ({round(held[i, j] * seeds)}/{seeds})" for j in range(len(xs)))
            lines.append(f"{yv!s:>10s}" + cells)
    return "\n".join(lines)
