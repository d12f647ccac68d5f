"""Seaborn figures of the multi-view experiments (PNG and PDF, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from theory_sims.report import (ACCURACY_ROWS, LABELS, SHORT, VIEW_ROWS, held_bound, judged_names,  # noqa: E402
                                map_cells)
from theory_sims.results import save_figure  # noqa: E402
from theory_sims.tracking import LEARNED_THRESHOLD  # noqa: E402


def views_heatmap(views_used: np.ndarray, title: str, ylabel: str = "seed"):
    """Models x classes: which views each model uses (``views_used`` in the results: judged by
    its single-view accuracy, :mod:`theory_sims.mechanism`; V = 2: none / view 1 / view 2 / both;
    other V: how many)."""
    vl = np.asarray(views_used, dtype=bool)  # (S, k, V)
    S, k, V = vl.shape
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.5, 0.35 * S + 1.5))
    if V == 2:
        code = vl[..., 0] * 1 + vl[..., 1] * 2
        labels = ["none", "view 1", "view 2", "both"]
        cmap = sns.color_palette(["#eeeeee", "#4c72b0", "#dd8452", "#55a868"])
        sns.heatmap(code, ax=ax, cmap=cmap, vmin=-0.5, vmax=3.5, linewidths=0.5, linecolor="white",
                    cbar_kws={"ticks": range(4)})
        ax.collections[0].colorbar.set_ticklabels(labels)
    else:
        sns.heatmap(vl.sum(axis=-1), ax=ax, cmap="viridis", vmin=0, vmax=V, annot=True, fmt="d",
                    cbar_kws={"label": "views used"})
    ax.set(xlabel="class", ylabel=ylabel, title=title)
    return fig


def _symlog_ticks(bottom: float, top: float) -> list[float]:
    """Ticks of a symlog axis with linthresh 0.1 over [bottom, top]: 0 and +-0.1, +-1, +-10, ...
    (each side only as far as the data reach), never a minor tick inside the linear zone."""
    def decades(x):
        return [10.0 ** e for e in range(-1, int(np.floor(np.log10(x))) + 1)] if x >= 0.1 else []

    return [-t for t in reversed(decades(-bottom))] + [0.0] + [t for t in decades(top)]


def lambda_trajectories(steps: np.ndarray, lam: np.ndarray, seeds=(0, 1, 2), classes=(0, 1, 2),
                        fit_step=None, threshold=None,
                        title="how each seed's view correlations grow along training (solid: the view that ends larger)"):
    """Lambda_{j,l}(t) for a few seeds (columns) and classes (rows). Colour says which view; the
    view that ends larger (the winner of the seed's lottery) is drawn thick and solid, the others
    thin and dashed. With ``fit_step`` (S,) a grey vertical line marks the step at which each seed
    first fitted its training set; with ``threshold`` a dotted horizontal line marks the level at
    which a view counts as learned. The y axis is logarithmic above 0.1 and linear below, starting
    at the smallest value drawn (or 0), so no height is spent on values that never occur."""
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(len(classes), len(seeds), figsize=(3.2 * len(seeds), 2.4 * len(classes)),
                             sharex=True, sharey=True, squeeze=False)
    V = lam.shape[-1]
    colors = sns.color_palette("deep", V)
    drawn = lam[:, list(seeds)][:, :, list(classes)]
    bottom, top = min(0.0, float(drawn.min())), float(drawn.max())
    for i, j in enumerate(classes):
        for c, s in enumerate(seeds):
            ax = axes[i, c]
            winner = int(np.argmax(lam[-1, s, j]))
            for l in range(V):
                ax.plot(steps, lam[:, s, j, l], color=colors[l], lw=2.2 if l == winner else 1.2,
                        ls="-" if l == winner else "--")
            if fit_step is not None and fit_step[s] >= 0:
                ax.axvline(fit_step[s], color="grey", lw=1)
            if threshold is not None:
                ax.axhline(threshold, color="black", lw=0.8, ls=":")
            ax.set_yscale("symlog", linthresh=0.1, linscale=0.5)
            ax.set_ylim(bottom, top * 1.3)
            ax.set_yticks(_symlog_ticks(bottom, top * 1.3))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.minorticks_off()
            ax.set_title(f"seed {s}, class {j}", fontsize=9)
            if c == 0:
                ax.set_ylabel(r"$\Lambda_{j,l} = \max_r \langle w_{j,r}, v_{j,l}\rangle$", fontsize=9)
            if i == len(classes) - 1:
                ax.set_xlabel("step")
    handles = [Line2D([], [], color=colors[l], lw=2, label=f"view {l + 1}") for l in range(V)]
    handles += [Line2D([], [], color="black", lw=2.2, label="the view that ends larger"),
                Line2D([], [], color="black", lw=1.2, ls="--", label="the other view(s)")]
    if fit_step is not None:
        handles.append(Line2D([], [], color="grey", lw=1, label="seed fits its training set"))
    if threshold is not None:
        handles.append(Line2D([], [], color="black", lw=0.8, ls=":", label=f"learned (Lambda = {threshold:g})"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * ((len(handles) + 2) // 3), 1, 1))
    return fig


def accuracy_bars(rows: list[dict], judged: dict | None = None):
    """Multi-view and single-view test accuracy for every row of the table, with error bars of
    one standard deviation over the row's models where it has several; the title says which of
    the paper's theorems (``judged``, from :func:`theory_sims.report.judge`) the run holds."""
    names = [r["row"] for r in rows]
    kinds = (("multi_view_acc", "multi-view test data"), ("single_view_acc", "single-view test data"))
    colors = sns.color_palette("deep", 2)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(rows) + 1.8))
    y = np.arange(len(rows))
    height = 0.38
    for n, (key, label) in enumerate(kinds):
        acc = np.array([r[key] for r in rows])
        err = np.array([r[key + "_std"] or 0.0 for r in rows])
        ax.barh(y + (n - 0.5) * height, acc, height=height, xerr=err, color=colors[n], label=label,
                error_kw={"elinewidth": 1, "capsize": 2})
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.05), xlabel="test accuracy (bars: mean over the row's models; lines: ± 1 std)", ylabel="")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8, frameon=False)  # clear of the bars
    theorems = {n: v["holds"] for n, v in (judged or {}).items() if v["kind"] == "theorem"}
    title = "test accuracy of every row"
    if theorems:
        held = [LABELS.get(n, n) for n, ok in theorems.items() if ok]
        title += (f"; the paper's theorems held here: {', '.join(held) if held else 'none'} "
                  f"({len(held)} of {len(theorems)})")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def correlation_heatmaps(before: np.ndarray, after: np.ndarray, views: int,
                         titles=("single model (seed 0)", "first KD student")):
    """Neuron x feature correlations <w_{i,r}, v_{j,l}> of two models side by side: (k, m, F) each.
    Rows are neurons grouped by the class i they vote for, columns features grouped by the class j
    that owns them; thin lines separate the classes, so a learned view is a dark cell on the
    diagonal blocks."""
    k, m, F = before.shape
    fig, axes = plt.subplots(1, 2, figsize=(0.28 * F * 2 + 3.5, 0.12 * k * m + 2.2))
    vmax = max(np.abs(before).max(), np.abs(after).max())
    for ax, corr, title in zip(axes, (before, after), titles):
        sns.heatmap(corr.reshape(k * m, F), ax=ax, cmap="vlag", center=0, vmin=-vmax, vmax=vmax,
                    cbar=ax is axes[1],
                    cbar_kws={"label": r"$\langle w_{i,r}, v_{j,l} \rangle$"} if ax is axes[1] else None)
        for b in range(1, k):
            ax.axhline(b * m, color="grey", lw=0.3)
            ax.axvline(b * views, color="grey", lw=0.3)
        ax.set_xticks(np.arange(0, F, views) + views / 2)
        ax.set_xticklabels(range(k))
        ax.set_yticks(np.arange(0, k * m, m) + m / 2)
        ax.set_yticklabels(range(k), rotation=0)
        ax.set(xlabel=f"feature $v_{{j,l}}$: class j ({views} views each)",
               ylabel=f"neuron $w_{{i,r}}$: class i ({m} neurons each)", title=title)
    fig.suptitle("what each neuron correlates with (a dark cell in a diagonal block: a view its class learned)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def training_length(by_length: dict, views: int, k: int):
    """What the single models had learned at each recorded multiple of their own fit step: views
    used per class and single-view test accuracy, one thin line per seed and their mean, with the
    single-model theorem's band shaded: ``report.STATEMENTS["single"]`` as held at k
    (:func:`theory_sims.report.held_bound`). It bounds the error in units of mu and is symmetric
    about one half, so the same numbers bound the fraction of views used and the single-view accuracy."""
    lo, hi = held_bound("single", k)
    lengths = list(by_length)
    x = [float(name.rstrip("x")) for name in lengths]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("views_per_class", "views used per class", (lo * views, hi * views), (0, views + 0.1)),
              ("single_view_acc", "single-view test accuracy", (lo, hi), (0, 1.02)))
    for ax, (key, label, band, ylim) in zip(axes, panels):
        per_seed = np.array([by_length[n][key] for n in lengths])  # (lengths, S)
        ax.axhspan(*band, color="grey", alpha=0.15, lw=0,
                   label=f"the single-model theorem, with the tolerance: {lo:.0%}-{hi:.0%} of the views (left) "
                         "and of the single-view samples (right)")
        ax.plot(x, per_seed, color=sns.color_palette()[0], lw=0.8, alpha=0.35)
        ax.plot(x, per_seed.mean(axis=1), color=sns.color_palette()[0], lw=2.4, marker="o", label="mean over seeds")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}x" for v in x])
        ax.minorticks_off()
        ax.set(xlabel="training length, in multiples of each seed's fit step", ylabel=label, ylim=ylim)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("single models along training: the views they use and their single-view accuracy", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def lottery_figure(results: dict):
    """The lottery and the inheritance at a glance: seeds x classes panels of the init's favourite
    view (the larger Lambda at step 0), the views each single model uses, the views each student's
    own init uses (the control trained on labels alone), and the views each self-KD student (of the
    seed in the same row) and each KD student uses. A cross marks a (seed, class) that uses one view
    other than its init's favourite."""
    mech = results["mechanism"]
    single = np.asarray(results["individual"]["views_used"], dtype=bool)
    S, k, V = single.shape
    panels = [("single models: views used", single, "seed")]
    panels += [(title, np.asarray(results[key]["views_used"], dtype=bool), "student of seed")
               for key, title in (("long_single", "own init, labels only (control)"),
                                  ("self_kd", "self-KD students"), ("kd", "KD students (of the ensemble)"))
               if key in results]
    lam0 = mech.get("lambda_init")
    if lam0 is not None:
        fav = np.zeros_like(single)
        np.put_along_axis(fav, np.asarray(lam0).argmax(-1)[..., None], True, axis=-1)
        panels.insert(0, ("the init's favourite view", fav, "seed"))
    fig, axes = plt.subplots(1, len(panels), figsize=(0.32 * k * len(panels) + 2.5, 0.3 * S + 2.4))
    labels = ["none", "view 1", "view 2", "both"] if V == 2 else None
    cmap = sns.color_palette(["#eeeeee", "#4c72b0", "#dd8452", "#55a868"]) if V == 2 else "viridis"
    for i, (ax, (title, used, ylabel)) in enumerate(zip(axes, panels)):
        code = used[..., 0] * 1 + used[..., 1] * 2 if V == 2 else used.sum(-1)
        sns.heatmap(code, ax=ax, cmap=cmap, vmin=-0.5, vmax=3.5 if V == 2 else V, linewidths=0.5,
                    linecolor="white", cbar=i == len(panels) - 1,
                    cbar_kws={"ticks": range(4)} if V == 2 else {"label": "views used"})
        ax.set(title=title, xlabel="class", ylabel=ylabel if i == 0 or panels[i - 1][2] != ylabel else "")
        ax.title.set_fontsize(9)
        ax.set_ylim(S, 0)  # students sit in the rows of the seeds they share an index with
        ax.grid(False)
        if title.startswith("single") and lam0 is not None:
            favourite = np.asarray(lam0).argmax(-1)
            other = (used.sum(-1) == 1) & (used.argmax(-1) != favourite)
            for s_, j in zip(*np.nonzero(other)):
                ax.text(j + 0.5, s_ + 0.5, "x", ha="center", va="center", fontsize=9, color="black")
    if V == 2:
        axes[-1].collections[0].colorbar.set_ticklabels(labels)
    lot, sk, kd = mech.get("lottery"), mech.get("self_kd_inheritance"), mech["kd_inheritance"]
    parts = []
    if lot and lot["init_winner"] is not None:
        parts.append(f"{lot['init_winner']:.0%} of the one-view (seed, class) pairs use the init's favourite "
                     f"(chance {lot['chance']:.0%}; x: the others)")
    if sk and sk["union"]["fraction"] is not None:
        parts.append(f"self-KD students use {sk['union']['fraction']:.0%} of the views their teacher or own init uses")
    if kd["ensemble"]["fraction"] is not None:
        parts.append(f"KD students {kd['ensemble']['fraction']:.0%} of the ensemble's")
    fig.suptitle("who decides which views a model uses\n" + "; ".join(parts), fontsize=10)
    fig.tight_layout()
    return fig


# The main job's figures and their one-line captions (report.md, in this order).
VIEW_LEARNING_FIGURES = {
    "accuracy.png": "test accuracy of every row on multi-view and single-view data; the title says which "
                    "theorems the run holds",
    "views_used.png": "the views each single model uses, class by class (judged by its single-view accuracy)",
    "lottery.png": "the init's favourite view, the views the single models, the students' own inits and the "
                   "students use, seed by seed",
    "lambda_trajectories.png": "Lambda of each view through training for three seeds and classes; the fit step "
                               "and the threshold drawn in",
    "training_length.png": "views used and single-view accuracy at multiples of each single model's fit step",
    "views_used_kd.png": "the views each KD student uses, class by class",
    "correlations.png": "each neuron's correlation with each feature: a single model beside a KD student",
    "views_used_augmented.png": "the views each single model trained with --augment uses",
    "lambda_trajectories_augmented.png": "Lambda through training of the models trained with --augment",
}


def view_learning_figures(out: Path, cfg, results: dict, run, rows: list[dict]) -> list[Path]:
    """The main job's figures, from its results and its :class:`theory_sims.view_learning.Run`."""
    sns.set_theme(style="whitegrid", context="notebook")
    out = Path(out)
    single, kd = run.models["single"], run.models["kd"]
    V = cfg.data.views
    written = []
    written += save_figure(views_heatmap(results["individual"]["views_used"], "views used by each seed"),
                           out / "views_used.png")
    # The students' own lotteries: the (class, view) pairs a student misses differ from student to
    # student, which is what an ensemble of students still gains.
    written += save_figure(views_heatmap(results["kd"]["views_used"], "views used by each KD student",
                                         ylabel="student"),
                           out / "views_used_kd.png")
    written += save_figure(lottery_figure(results), out / "lottery.png")

    def trajectories(result, **title):  # Lambda of the first three seeds and classes of a trained stack
        S, k = result.history["lambda"].shape[1:3]
        return lambda_trajectories(result.history["step"], result.history["lambda"],
                                   seeds=tuple(range(min(3, S))), classes=tuple(range(min(3, k))),
                                   fit_step=result.fit_step, threshold=LEARNED_THRESHOLD * cfg.learner.varrho, **title)

    if "augmented" in results:  # the same seeds trained on crops (--augment)
        written += save_figure(views_heatmap(results["augmented"]["views_used"],
                                             f"views used by each seed trained with --augment "
                                             f"{results['setting'].get('augment', '')}"),
                               out / "views_used_augmented.png")
        augment = results["setting"].get("augment", "")
        written += save_figure(trajectories(run.models["augmented"], title=f"the same seeds trained with --augment "
                                            f"{augment}: their view correlations along training (solid: the view "
                                            "that ends larger)"), out / "lambda_trajectories_augmented.png")
    written += save_figure(trajectories(single), out / "lambda_trajectories.png")
    written += save_figure(accuracy_bars(rows, results.get("predictions")), out / "accuracy.png")
    if results["individual"].get("by_length"):
        written += save_figure(training_length(results["individual"]["by_length"], V, cfg.data.k),
                               out / "training_length.png")
    features = run.train_set.features
    corr = lambda result: (result.model.weights[0] @ result.model.weights.new_tensor(features).T).cpu().numpy()  # noqa: E731
    written += save_figure(correlation_heatmaps(corr(single), corr(kd), V), out / "correlations.png")
    return written


def gain_heatmap(cells: list[dict]):
    """Ensemble gains (percentage points) over the grid: rows input x teacher, columns
    sampling x margin x label noise. Cells not run are hatched and say so."""
    yes_no = lambda flag: "yes" if flag else "no"  # noqa: E731
    row = lambda c: f"{c['input']} / {c['teacher']}"  # noqa: E731
    col = lambda c: f"{c['sampling']}\nmargin {yes_no(c['margin'])}\nnoise {yes_no(c['label_noise'])}"  # noqa: E731
    rows = list(dict.fromkeys(row(r["cell"]) for r in cells))
    cols = list(dict.fromkeys(col(r["cell"]) for r in cells))
    grid = np.full((len(rows), len(cols)), np.nan)
    for r in cells:
        grid[rows.index(row(r["cell"])), cols.index(col(r["cell"]))] = 100 * r["gain"]
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.5 * len(rows) + 1.8))
    bound = max(1.0, float(np.nanmax(np.abs(grid))))
    sns.heatmap(grid, annot=True, fmt="+.1f", cmap="RdBu_r", vmin=-bound, vmax=bound, ax=ax,
                xticklabels=cols, yticklabels=rows, cbar_kws={"label": "ensemble gain (pts)"})
    for i, j in zip(*np.nonzero(np.isnan(grid))):  # a cell the grid did not run says so
        ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, hatch="//", edgecolor="lightgrey", lw=0))
        ax.text(j + 0.5, i + 0.5, "not run", ha="center", va="center", fontsize=8, color="grey")
    ax.set_title("ensemble minus mean single model, test accuracy (percentage points)")
    ax.tick_params(axis="x", labelsize=9, rotation=0)
    ax.tick_params(axis="y", labelsize=9)
    return fig


def gains_vs_multiview(cells: list[dict], reference: dict | None, noise: str | None = None):
    """Every Gaussian cell's gain (one dot per cell with its 95% interval, grouped by teacher;
    blue clean labels, orange label noise; the (at most 6) largest gains above 1 point named) beside the ensemble gain on
    multi-view data (on its test mixture and on its single-view samples). ``noise``: what the noisy
    cells' noise is (``gaussian_negative.noise_words``), named in the legend."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(9, 4.8))
    labels = [f"Gaussian-like\n{t} teacher" for t in dict.fromkeys(c["cell"]["teacher"] for c in cells)]
    seen: dict[str, int] = {}
    teachers = [c["cell"]["teacher"] for c in cells]
    per_teacher = {t: teachers.count(t) for t in teachers}
    yes_no = lambda flag: "+" if flag else "-"  # noqa: E731
    top_gains = sorted((100 * c["gain"] for c in cells), reverse=True)[:6][-1]  # name at most 6 cells
    for c in cells:
        cell = c["cell"]
        x = labels.index(f"Gaussian-like\n{cell['teacher']} teacher")
        i = seen[cell["teacher"]] = seen.get(cell["teacher"], -1) + 1  # spread a teacher's cells across its slot
        jitter = (i / max(per_teacher[cell["teacher"]] - 1, 1) - 0.5) * 0.6
        gain = 100 * c["gain"]
        lo, hi = (100 * v for v in c["gain_ci"])
        # a bootstrap interval need not contain the point estimate: clip the bars at the point
        ax.errorbar(x + jitter, gain, yerr=[[max(gain - lo, 0.0)], [max(hi - gain, 0.0)]],
                    fmt="o", ms=3, lw=0.7, color="tab:orange" if cell["label_noise"] else "tab:blue")
        if gain > 1 and gain >= top_gains:  # the cells that disagree most are named, not hidden
            name = (f"{cell['input'][:3]}/{cell['sampling'][:3]} m{yes_no(cell['margin'])}"
                    f" n{yes_no(cell['label_noise'])}")
            ax.annotate(name, (x + jitter, gain), xytext=(3, 0), textcoords="offset points", fontsize=8,
                        va="center", color="dimgrey")
    if reference is not None:
        for name, key in (("multi-view data:\ntest mixture", "test_acc"),
                          ("multi-view data:\nsingle-view samples", "single_view_acc")):
            labels.append(name)
            ax.bar(len(labels) - 1, 100 * reference[key]["gain"], width=0.6, color="tab:green")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axhline(1, color="grey", lw=0.6, ls="--")
    ax.set_ylabel("ensemble gain (percentage points)")
    handles = [Line2D([], [], marker="o", ls="", color="tab:blue", label="a Gaussian cell, clean labels (95% interval)"),
               Line2D([], [], marker="o", ls="", color="tab:orange", label=f"a Gaussian cell, {noise or 'label noise'}"),
               Line2D([], [], color="grey", ls="--", lw=0.6, label="1 point")]
    if reference is not None:
        handles.append(Patch(color="tab:green", label=f"multi-view data ({reference.get('source', 'view_learning defaults')})"))
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    ax.set_title("ensemble gain on each Gaussian-like cell" + (" and on multi-view data" if reference else "") +
                 "\n(named: the largest gains above 1 point; input/sampling, m+ margin, n+ label noise)", fontsize=10)
    fig.tight_layout()
    return fig


def _cell_label(cell: dict) -> str:
    marks = [name for flag, name in ((cell["margin"], "margin"), (cell["label_noise"], "noise")) if flag]
    return f"{cell['input']} {cell['sampling']} {cell['teacher']}" + (" + " + ", ".join(marks) if marks else "")


def individual_vs_ensemble(panels: list[tuple[int | None, list[dict], dict | None]], noise: str | None = None,
                           threshold: float = 0.01, theory: dict | None = None):
    """The paper's Figure 4 as a picture: every cell of the grid a row, the single models' test
    accuracy (grey bar: lowest to highest; black dot: their mean) beside their ensemble's (red
    diamond), one panel per width (``panels``: (width or None, the cells at it, the multi-view
    contrast at it or None)); the contrast's rows last, in green: the same learner on multi-view
    data, its single models' mean accuracy beside their ensemble's, on the single-view samples and
    on the test mixture; with ``theory`` (the theory's learner on that data) its two rows too, in
    purple: where the paper's gain lives. Each panel's title counts the cells whose ensemble is within
    ``threshold`` of the mean single model."""
    names = [_cell_label(c["cell"]) for c in panels[0][1]]
    extra = [("multi-view data: single-view samples", "single_view_acc"), ("multi-view data: test mixture", "test_acc")]
    with_contrast = any(ref is not None for _, _, ref in panels)
    rows = names + ([name for name, _ in extra] if with_contrast else [])
    rows += [f"{name}, theory's learner" for name, _ in extra] if theory is not None else []
    fig, axes = plt.subplots(1, len(panels), figsize=(max(8.0, 4.2 * len(panels) + 2.8), 0.22 * len(rows) + 2.0),
                             sharey=True, sharex=True, squeeze=False)
    for ax, (width, cells, ref) in zip(axes[0], panels):
        y = np.arange(len(cells))
        acc = [np.asarray(c["individual_acc"]) for c in cells]
        ax.hlines(y, [a.min() for a in acc], [a.max() for a in acc], color="lightgrey", lw=4)
        ax.plot([a.mean() for a in acc], y, "o", color="black", ms=3.5, label="single models: mean (bar: range)")
        ax.plot([c["ensemble_acc"] for c in cells], y, "D", color="tab:red", ms=3.5, mfc="none", label="their ensemble")
        contrasts = [(ref, "tab:green", len(cells)), (theory, "tab:purple", len(rows) - len(extra))]
        for source, colour, first in contrasts:
            if source is not None:
                for i, (_, key) in enumerate(extra):
                    ax.plot(source[key]["individual_mean"], first + i, "o", color=colour, ms=4)
                    ax.plot(source[key]["ensemble"], first + i, "D", color=colour, ms=4, mfc="none")
        if ref is not None:
            ax.axhline(len(cells) - 0.5, color="grey", lw=0.6)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        within = sum(c["gain"] <= threshold for c in cells)
        where = f"width {width}: " if width is not None else ""
        ax.set_title(f"{where}ensemble within {100 * threshold:g} pt of the mean\nsingle model in {within} of "
                     f"{len(cells)} cells", fontsize=9)
        ax.set_xlabel("test accuracy")
    ax0 = axes[0][0]
    ax0.set_yticks(range(len(rows)), rows, fontsize=7)
    from matplotlib.lines import Line2D

    handles, labels = axes[0][0].get_legend_handles_labels()
    for shown, colour, mean_label, ensemble_label in (
            (with_contrast, "tab:green", "multi-view data: single models' mean", "multi-view data: their ensemble"),
            (theory is not None, "tab:purple", "theory's learner: single models' mean", "its ensemble")):
        if shown:
            handles += [Line2D([], [], marker="o", ls="", color=colour),
                        Line2D([], [], marker="D", ls="", color=colour, mfc="none")]
            labels += [mean_label, ensemble_label]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    top = 1.0
    if noise:
        fig.suptitle(f"single models beside their ensemble in every cell\n(noise: {noise})", fontsize=10)
        top = 1 - 0.45 / fig.get_figheight()
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, top))
    return fig


# The Gaussian-like grid's figures and their one-line captions (report.md, in this order).
GAUSSIAN_NEGATIVE_FIGURES = {
    "individual_vs_ensemble.png": "every cell's single models (range and mean) beside their ensemble, one panel per "
                                  "width, with the same learner on multi-view data in green (with --widths) and the theory's "
                                  "learner there in purple (the paper's Figure 4)",
    "gains_heatmap.png": "the ensemble's gain over the mean single model in every cell of the grid (percentage "
                         "points; cells not run hatched)",
    "gains_vs_multiview.png": "each Gaussian-like cell's ensemble gain with its 95% interval, beside the gain on "
                              "multi-view data (with --widths: at the largest width)",
    "gain_vs_width.png": "with --widths: the ensemble's gain in every cell against the learner's width, beside the "
                         "gain on multi-view data at the same widths",
}


def gaussian_negative_figures(out: Path, cells: list[dict], reference: dict | None,
                              noise: str | None = None) -> list[Path]:
    sns.set_theme(style="whitegrid", context="notebook")
    out = Path(out)
    return (save_figure(gain_heatmap(cells), out / "gains_heatmap.png")
            + save_figure(gains_vs_multiview(cells, reference, noise), out / "gains_vs_multiview.png"))


def gain_vs_width(by_width: list[dict], noise: str | None = None, theory: dict | None = None):
    """The ensemble's gain against the standard learner's width (``gaussian_negative --widths``):
    one thin grey line per Gaussian-like cell, their median in black, the share of cells within
    1 point in the title, and the same learner's gain on multi-view data (single-view samples and
    the test mixture) at the same widths in green; with ``theory`` (the theory's learner on that
    data) its gain on single-view samples written in purple, tens of points off this scale. The
    paper: on Gaussian-like data the gain vanishes as networks widen, on multi-view data it stays
    for a learner whose seeds learn different views."""
    sns.set_theme(style="whitegrid", context="notebook")
    widths = [e["width"] for e in by_width]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    gains = np.array([e["gains"] for e in by_width]) * 100  # (widths, cells)
    for j in range(gains.shape[1]):
        ax.plot(widths, gains[:, j], color="grey", lw=0.6, alpha=0.5)
    ax.plot(widths, np.median(gains, axis=1), color="black", lw=2, marker="o",
            label=f"Gaussian-like cells: median ({gains.shape[1]} cells, thin lines)")
    if "multiview_gain_single_view" in by_width[0]:
        ax.plot(widths, [100 * e["multiview_gain_single_view"] for e in by_width], color="tab:green", lw=2, marker="s",
                label="multi-view data, the same learner: single-view samples")
        ax.plot(widths, [100 * e["multiview_gain_test"] for e in by_width], color="tab:green", lw=1.2, ls="--",
                marker="s", label="multi-view data, the same learner: test mixture")
    if theory is not None:
        sv = theory["single_view_acc"]
        ax.text(0.28, 0.97, f"multi-view data, the theory's learner: gain {100 * sv['gain']:+.2f} on single-view "
                f"samples\n({sv['individual_mean']:.3f} single, {sv['ensemble']:.3f} ensemble; off this scale)",
                transform=ax.transAxes, va="top", fontsize=8, color="tab:purple")
    ax.axhline(1, color="grey", lw=0.6, ls="--")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set(xlabel="width of the standard learner", ylabel="ensemble gain (percentage points)")
    within = ", ".join(f"{e['fraction_at_or_below_threshold']:.0%}" for e in by_width)
    ax.set_title(f"ensemble gain against width; cells within 1 point: {within}"
                 + (f"\nnoisy cells: {noise}" if noise else ""), fontsize=9)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig


# A sweep's figures and their one-line captions (report.md, in this order): map.png with --grid,
# k.png with --scale-k.
SWEEP_FIGURES = {
    "sweep.png": "single-view accuracy of every row, views used per class and each statement's margin against "
                 "the point (bars: the spread over data seeds)",
    "map.png": "where each prediction holds over the grid, coloured by its margin (mean over data seeds)",
    "k.png": "as k grows: the share of classes whose single models use both views, and their error beside the "
             "single-model theorem's band",
}


def row_palette() -> dict[str, tuple]:
    """One colour per row of the table and per statement, the same in every panel and figure: a
    statement about a row (``report.LABELS``, e.g. the ensemble's) takes that row's colour."""
    names = list(dict.fromkeys([*SHORT.values(), *LABELS.values()]))
    colours = sns.color_palette("tab20", len(names)) if len(names) > 10 else sns.color_palette("tab10", len(names))
    palette = dict(zip(names, colours))
    for name in [*ACCURACY_ROWS.values(), *VIEW_ROWS.values()]:  # a row's label with a note: the row's colour
        palette.setdefault(name, palette[name.split(" (")[0]])
    return palette


def sweep_figure(path_png, rows: list[dict], paths: list[str]) -> list[Path]:
    """A regime sweep (:mod:`theory_sims.sweep`): single-view accuracy of every row, views used per
    class, and every statement's margin (:func:`theory_sims.report.judge`) against the point; bars
    are the spread over data seeds."""
    sns.set_theme(style="whitegrid", context="notebook")
    # one line per varied parameter in the tick labels, top to bottom in the order of the x label
    label = lambda r: "\n".join(f"{r[p]:g}" if isinstance(r[p], float) else str(r[p]) for p in paths) or "base"  # noqa: E731
    order = list(dict.fromkeys(label(r) for r in rows))

    def long(prefix, names):
        names = {key: text for key, text in names.items() if all(prefix + key in r for r in rows)}
        return {"x": [label(r) for r in rows for _ in names],
                "y": [r[prefix + key] for r in rows for key in names],
                "row": [text for _ in rows for text in names.values()]}

    margins = {f"margin_{name}": LABELS.get(name, name) for name in judged_names(rows)}
    palette = row_palette()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    panels = ((long("sv_", ACCURACY_ROWS), "single-view test accuracy"),
              (long("views_", VIEW_ROWS), "views used per class"),
              (long("", margins), "margin (>= 0: holds)"))
    for ax, (data, ylabel) in zip(axes, panels):
        sns.pointplot(x=data["x"], y=data["y"], hue=data["row"], order=order, errorbar=("pi", 100),
                      dodge=0.3, ax=ax, markersize=4, linewidth=1.2, palette=palette,
                      hue_order=list(dict.fromkeys(data["row"])))
        ax.set(xlabel="\n".join(paths) or "point", ylabel=ylabel)
    axes[2].axhline(0.0, color="black", lw=0.8)
    fig.suptitle("the paper's statements across the sweep\n(right: each statement's margin against the paper's "
                 "bound, with the finite-k tolerance; bars: spread over data seeds)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    # legends under the x labels, clear of the points (the x labels grow with the varied parameters)
    fig.canvas.draw()
    to_fig = fig.transFigure.inverted()
    for ax in axes:
        box = ax.xaxis.label.get_window_extent().transformed(to_fig)
        ax.legend(fontsize=8, ncol=2, frameon=False, loc="upper center", bbox_transform=fig.transFigure,
                  bbox_to_anchor=((box.x0 + box.x1) / 2, box.y0 - 0.01))
    return save_figure(fig, path_png)


def k_figure(path_png, rows: list[dict]) -> list[Path]:
    """A sweep along a k rule (``sweep --scale-k``): left, the fraction of (single model, class)
    pairs that use both of the class's views; right, the single models' test error in units of mu
    beside the single-model theorem's band (``report.STATEMENTS["single"]``) widened by the finite-k
    tolerance (:func:`theory_sims.report.held_bound`).
    One line per data seed, the mean over them in black. The theory: the fraction falls towards 0
    and the error enters the band as k grows."""
    sns.set_theme(style="whitegrid", context="notebook")
    ks = sorted({int(r["data.k"]) for r in rows})
    seeds = sorted({r["data_seed"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("several_views_individual", "value_single")):
        for i, s in enumerate(seeds):
            pts = sorted((int(r["data.k"]), r[key]) for r in rows if r["data_seed"] == s)
            ax.plot(*zip(*pts), marker="o", lw=1, alpha=0.6, color=sns.color_palette()[i % 10], label=f"data seed {s}")
        mean = [np.mean([r[key] for r in rows if int(r["data.k"]) == k]) for k in ks]
        ax.plot(ks, mean, marker="s", color="black", lw=2, label="mean over data seeds")
        unfit = [(int(r["data.k"]), r[key]) for r in rows if r.get("train_acc_min", 1.0) < 1.0]
        if unfit:  # a point whose single models stopped before fitting says little about the race
            ax.scatter(*zip(*unfit), s=140, facecolors="none", edgecolors="tab:red", lw=1.5, zorder=5,
                       label="single models did not fit their training set")
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("k (classes), the other parameters along the k rule")
    lo, hi = zip(*(held_bound("single", k) for k in ks))
    axes[1].fill_between(ks, lo, hi, color="tab:green", alpha=0.2, label="the theorem's band, with the tolerance 0.5/k")
    axes[0].set(ylabel="fraction of (model, class) pairs using both views", ylim=(0, None))
    axes[1].set(ylabel="single models' test error (units of mu)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    share = [float(np.mean([r["several_views_individual"] for r in rows if int(r["data.k"]) == k])) for k in ks]
    if all(b <= a for a, b in zip(share, share[1:])) and share[-1] < share[0]:
        verdict = f"falls: {share[0]:.2f} at k = {ks[0]}, {share[-1]:.2f} at k = {ks[-1]}"
    else:
        verdict = (("falls, but not steadily" if share[-1] < share[0] else "does not fall") + ": "
                   + ", ".join(f"{v:.2f}" for v in share) + " at k = " + ", ".join(map(str, ks)))
    unfit_ks = sorted({int(r["data.k"]) for r in rows if r.get("train_acc_min", 1.0) < 1.0})
    caveat = (f"; at k = {', '.join(map(str, unfit_ks))} the single models stopped before fitting (circled)"
              if unfit_ks else "")
    fig.suptitle(f"as k grows, the share of classes whose single models use both views {verdict}\n"
                 f"(mean over {len(seeds)} data seeds{caveat})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return save_figure(fig, path_png)


def prediction_map(path_png, rows: list[dict], paths: list[str]) -> list[Path]:
    """Where each of the paper's predictions holds over a two-parameter grid sweep: one panel per
    prediction, each point coloured by the prediction's margin (mean over the data seeds; blue
    holds, red fails) and marked with the seeds on which it held."""
    sns.set_theme(style="white", context="notebook")
    names = judged_names(rows)
    cols = 3
    fig, axes = plt.subplots((len(names) + cols - 1) // cols, cols, figsize=(5.2 * cols, 4.2 * ((len(names) + cols - 1) // cols)),
                             squeeze=False)
    seeds = len({r["data_seed"] for r in rows})
    for ax, name in zip(axes.ravel(), names):
        ys, xs, margin, held = map_cells(rows, paths, name)
        lim = max(0.02, float(np.nanmax(np.abs(margin))))
        annot = np.array([[f"{'holds' if h == 1 else 'fails' if h == 0 else f'{round(h * seeds)}/{seeds}'}\n{m:+.3f}"
                           for m, h in zip(mrow, hrow)] for mrow, hrow in zip(margin, held)])
        sns.heatmap(margin, ax=ax, cmap="RdBu", vmin=-lim, vmax=lim, center=0, annot=annot, fmt="",
                    annot_kws={"fontsize": 8}, cbar_kws={"label": "margin"},
                    xticklabels=[f"{x:g}" if isinstance(x, float) else x for x in xs],
                    yticklabels=[f"{y:g}" if isinstance(y, float) else y for y in ys])
        ax.set(xlabel=paths[1], ylabel=paths[0], title=LABELS.get(name, name))
        ax.invert_yaxis()
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(f"where each prediction holds (margin >= 0; mean over {seeds} data seed{'s' * (seeds > 1)})",
                 fontsize=12)
    fig.tight_layout()
    return save_figure(fig, Path(path_png))


# ensemble_size's figure and its one-line caption (report.md).
ENSEMBLE_SIZE_FIGURES = {
    "ensemble_size.png": "the ensemble's accuracy against its members, measured, predicted by the members' views "
                         "and under independent errors; how often two seeds disagree",
}


def ensemble_size_figure(path_png, res: dict) -> list[Path]:
    """Left: the ensemble's accuracy against its number of members (log axis), measured (with its
    95% band), predicted by the members' views, and under the independent-error null; the
    multi-view accuracy beside it. Right: how often two seeds disagree, by samples and, on
    single-view samples, by how many of the pair use the view the sample shows."""
    sns.set_theme(style="whitegrid", context="notebook")
    rows = res["sizes"]
    n = np.array([r["members"] for r in rows])

    def col(key):
        return np.array([r[key] for r in rows])

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.5, 1]})
    (blue, orange, green), grey = sns.color_palette("deep")[:3], "0.45"
    ax.fill_between(n, col("single_view_lo"), col("single_view_hi"), color=blue, alpha=0.2, lw=0)
    ax.plot(n, col("single_view_acc"), "o-", color=blue, lw=2.2, label="single-view, measured (95% band)")
    ax.plot(n, col("predicted_single_view_acc"), "s--", color=blue, lw=1.4, ms=4,
            label="single-view, predicted: a member uses the view shown")
    ax.fill_between(n, col("null_single_view_lo"), col("null_single_view_hi"), color=orange, alpha=0.15, lw=0)
    ax.plot(n, col("null_single_view_acc"), "^:", color=orange, lw=1.8,
            label="single-view, the same members with independent errors")
    ax.plot(n, col("multi_view_acc"), "o-", color=green, lw=1.4, ms=4, label="multi-view, measured")
    ax.set_xscale("log")
    ax.set_xticks(n)
    ax.set_xticklabels([str(v) for v in n])
    ax.set(xlabel="members in the ensemble (mean over random subsets of the seeds)", ylabel="test accuracy",
           title=f"ensemble accuracy against its size ({len(res['members_single_view_acc'])} seeds trained)")
    ax.legend(loc="lower right", fontsize=8, frameon=True)
    dis = res["disagreement"]
    by = dis["single_view_by_views"]
    names = ["multi-view\n(all pairs)", "single-view\n(all pairs)", "single-view:\nboth use\nthe view",
             "single-view:\none uses it", "single-view:\nneither"]
    vals = [dis["multi_view"], dis["single_view"]] + [by[k]["disagreement"] for k in ("both", "one", "neither")]
    colors = [green, blue, blue, blue, blue]
    xs = np.arange(len(names))
    for x, v, c in zip(xs, vals, colors):
        if v is None:
            bx.text(x, 0.01, "no\ncases", ha="center", va="bottom", fontsize=8, color=grey)
        else:
            bx.bar(x, v, color=c, alpha=0.85 if x < 2 else 0.55)
            bx.text(x, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
    bx.set_xticks(xs)
    bx.set_xticklabels(names, fontsize=8)
    top = max([v for v in vals if v is not None] + [0.1])
    bx.set_ylim(0, min(1.0, top * 1.25 + 0.02))
    bx.set(ylabel="fraction of test samples the two predict differently",
           title="how often two seeds disagree (mean over pairs)")
    fig.tight_layout()
    return save_figure(fig, path_png)
