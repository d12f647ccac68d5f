"""Seaborn figures of the multi-view experiments (PNG and PDF, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from theory_sims.report import ACCURACY_ROWS, VIEW_ROWS  # noqa: E402
from theory_sims.results import save_figure  # noqa: E402
from theory_sims.tracking import LEARNED_THRESHOLD  # noqa: E402


def views_heatmap(views_learned: np.ndarray, title: str, ylabel: str = "seed"):
    """Models x classes: which views each model learned (V = 2: none / view 1 / view 2 / both;
    other V: how many)."""
    vl = np.asarray(views_learned, dtype=bool)  # (S, k, V)
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
                    cbar_kws={"label": "views learned"})
    ax.set(xlabel="class", ylabel=ylabel, title=title)
    return fig


def lambda_trajectories(steps: np.ndarray, lam: np.ndarray, seeds=(0, 1, 2), classes=(0, 1, 2),
                        fit_step=None, threshold=None):
    """Lambda_{j,l}(t) for a few seeds (columns) and classes (rows); the view that ends larger
    (the winner) is drawn solid, the others dashed. With ``fit_step`` (S,) a grey vertical line marks
    the step at which each seed first fitted its training set; with ``threshold`` a dotted
    horizontal line marks the level at which a view counts as learned."""
    fig, axes = plt.subplots(len(classes), len(seeds), figsize=(3.2 * len(seeds), 2.4 * len(classes)),
                             sharex=True, squeeze=False)
    V = lam.shape[-1]
    colors = sns.color_palette("deep", V)
    for i, j in enumerate(classes):
        for c, s in enumerate(seeds):
            ax = axes[i, c]
            winner = int(np.argmax(lam[-1, s, j]))
            for l in range(V):
                ax.plot(steps, lam[:, s, j, l], color=colors[l], lw=2 if l == winner else 1.2,
                        ls="-" if l == winner else "--", label=f"view {l + 1}")
            if fit_step is not None and fit_step[s] >= 0:
                ax.axvline(fit_step[s], color="grey", lw=1, label="fitted")
            if threshold is not None:
                ax.axhline(threshold, color="black", lw=0.8, ls=":", label="learned")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_title(f"seed {s}, class {j}", fontsize=9)
            if c == 0:
                ax.set_ylabel(r"$\Lambda_{j,l}$")
            if i == len(classes) - 1:
                ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("view correlations during training (solid: the view that wins; grey: 100% training accuracy)")
    fig.tight_layout()
    return fig


def accuracy_bars(rows: list[dict]):
    """Multi-view and single-view test accuracy for every row of the table."""
    data = []
    for r in rows:
        for key, label in (("multi_view_acc", "multi-view"), ("single_view_acc", "single-view")):
            data.append({"row": r["row"], "test data": label, "accuracy": r[key], "std": r[key + "_std"]})
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    names = [r["row"] for r in rows]
    sns.barplot(x=[d["accuracy"] for d in data], y=[d["row"] for d in data], hue=[d["test data"] for d in data],
                order=names, ax=ax, orient="h")
    ax.set(xlim=(0, 1.02), xlabel="test accuracy", ylabel="")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def correlation_heatmaps(before: np.ndarray, after: np.ndarray, views: int, titles=("single model", "KD student")):
    """Neuron x feature correlations <w_{i,r}, v_f> of two models side by side: (k, m, F) each."""
    k, m, F = before.shape
    fig, axes = plt.subplots(1, 2, figsize=(0.28 * F * 2 + 3, 0.12 * k * m + 2))
    vmax = max(np.abs(before).max(), np.abs(after).max())
    for ax, corr, title in zip(axes, (before, after), titles):
        sns.heatmap(corr.reshape(k * m, F), ax=ax, cmap="vlag", center=0, vmin=-vmax, vmax=vmax,
                    cbar=ax is axes[1])
        ax.set_xticks(np.arange(0, F, views) + views / 2)
        ax.set_xticklabels(range(k))
        ax.set_yticks(np.arange(0, k * m, m) + m / 2)
        ax.set_yticklabels(range(k))
        ax.set(xlabel="feature v_{j,l} (grouped by class j)", ylabel="neuron w_{i,r} (grouped by class i)", title=title)
    fig.suptitle("neuron x feature correlations: single model (seed 0) and the first KD student")
    fig.tight_layout()
    return fig


def view_learning_figures(out: Path, cfg, results: dict, extras: dict, rows: list[dict]) -> list[Path]:
    sns.set_theme(style="whitegrid", context="notebook")
    out = Path(out)
    single, kd = extras["single"], extras["kd"]
    V = cfg.data.views
    written = []
    written += save_figure(views_heatmap(results["individual"]["views_learned"], "views learned by each seed"),
                           out / "views_learned.png")
    # The students' own lotteries: the (class, view) pairs a student misses differ from student to
    # student, which is what an ensemble of students still gains.
    written += save_figure(views_heatmap(results["kd"]["views_learned"], "views learned by each KD student",
                                         ylabel="student"),
                           out / "views_learned_kd.png")
    S, k = single.history["lambda"].shape[1:3]
    written += save_figure(
        lambda_trajectories(single.history["step"], single.history["lambda"],
                            seeds=tuple(range(min(3, S))), classes=tuple(range(min(3, k))),
                            fit_step=single.fit_step, threshold=LEARNED_THRESHOLD * cfg.learner.varrho),
        out / "lambda_trajectories.png",
    )
    written += save_figure(accuracy_bars(rows), out / "accuracy.png")
    features = extras["train_set"].features
    corr = lambda result: (result.model.weights[0] @ result.model.weights.new_tensor(features).T).cpu().numpy()  # noqa: E731
    written += save_figure(correlation_heatmaps(corr(single), corr(kd), V), out / "correlations.png")
    return written


def gain_heatmap(cells: list[dict]):
    """Ensemble gains (percentage points) over the grid: rows input x teacher, columns
    sampling x margin x label noise. Cells not run stay blank."""
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
    ax.set_title("ensemble minus mean single model, test accuracy (percentage points)")
    ax.tick_params(axis="x", labelsize=7, rotation=0)
    return fig


def gains_vs_multiview(cells: list[dict], reference: dict | None):
    """Every Gaussian cell's gain (points with 95% intervals, by teacher) beside the ensemble gain
    on multi-view data (on its test mixture and on its single-view samples)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    labels = [f"Gaussian-like\n{t}" for t in dict.fromkeys(c["cell"]["teacher"] for c in cells)]
    seen: dict[str, int] = {}
    teachers = [c["cell"]["teacher"] for c in cells]
    per_teacher = {t: teachers.count(t) for t in teachers}
    for c in cells:
        teacher = c["cell"]["teacher"]
        x = labels.index(f"Gaussian-like\n{teacher}")
        i = seen[teacher] = seen.get(teacher, -1) + 1  # spread a teacher's cells evenly across its slot
        jitter = (i / max(per_teacher[teacher] - 1, 1) - 0.5) * 0.6
        lo, hi = (100 * v for v in c["gain_ci"])
        ax.errorbar(x + jitter, 100 * c["gain"], yerr=[[100 * c["gain"] - lo], [hi - 100 * c["gain"]]],
                    fmt="o", ms=3, lw=0.7, color="tab:blue" if not c["cell"]["label_noise"] else "tab:orange")
    if reference is not None:
        for name, key in (("multi-view\ntest mixture", "test_acc"), ("multi-view\nsingle-view", "single_view_acc")):
            labels.append(name)
            ax.bar(len(labels) - 1, 100 * reference[key]["gain"], width=0.6, color="tab:green")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axhline(1, color="grey", lw=0.6, ls="--")
    ax.set_ylabel("ensemble gain (percentage points)")
    ax.set_title("ensembles help on multi-view data, not on Gaussian-like data\n"
                 "(blue: clean labels, orange: label noise; dashed: 1 point)", fontsize=10)
    return fig


def gaussian_negative_figures(out: Path, cells: list[dict], reference: dict | None) -> list[Path]:
    sns.set_theme(style="whitegrid", context="notebook")
    out = Path(out)
    return (save_figure(gain_heatmap(cells), out / "gains_heatmap.png")
            + save_figure(gains_vs_multiview(cells, reference), out / "gains_vs_multiview.png"))


def sweep_figure(path_png, rows: list[dict], paths: list[str]) -> list[Path]:
    """A regime sweep (:mod:`theory_sims.sweep`): single-view accuracy of every row, views learned
    per class, and the gains the paper predicts (ensemble) or says vanish (average, KD students'
    ensemble) against the point, with their thresholds; bars are the spread over data seeds."""
    sns.set_theme(style="whitegrid", context="notebook")
    # one line per varied parameter in the tick labels, top to bottom in the order of the x label
    label = lambda r: "\n".join(f"{r[p]:g}" if isinstance(r[p], float) else str(r[p]) for p in paths) or "base"  # noqa: E731
    order = list(dict.fromkeys(label(r) for r in rows))

    def long(prefix, names):
        return {"x": [label(r) for r in rows for _ in names],
                "y": [r[prefix + key] for r in rows for key in names],
                "row": [text for _ in rows for text in names.values()]}

    gains = {"ensemble": "ensemble - single (>= 0.25)", "average": "training the average - single (<= 0.10)",
             "kd_ensemble": "KD students' ensemble - KD (<= 0.03)"}
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    panels = ((long("sv_", ACCURACY_ROWS), "single-view test accuracy"),
              (long("views_", VIEW_ROWS), "views learned per class"),
              (long("gain_", gains), "single-view gain"))
    for ax, (data, ylabel) in zip(axes, panels):
        sns.pointplot(x=data["x"], y=data["y"], hue=data["row"], order=order, errorbar=("pi", 100),
                      dodge=0.3, ax=ax, markersize=4, linewidth=1.2)
        ax.set(xlabel="\n".join(paths) or "point", ylabel=ylabel)
    axes[0].axhspan(0.40, 0.70, color="grey", alpha=0.12, lw=0)  # the single models' target band
    for y, color in ((0.25, sns.color_palette()[0]), (0.10, sns.color_palette()[1]), (0.03, sns.color_palette()[2])):
        axes[2].axhline(y, color=color, ls="--", lw=0.8)
    fig.suptitle("the paper's predictions across the sweep (grey band: the single models' target; "
                 "dashed: each gain's threshold)", fontsize=11)
    fig.tight_layout()
    # legends under the x labels, clear of the points (the x labels grow with the varied parameters)
    fig.canvas.draw()
    to_fig = fig.transFigure.inverted()
    for ax in axes:
        box = ax.xaxis.label.get_window_extent().transformed(to_fig)
        ax.legend(fontsize=8, ncol=2, frameon=False, loc="upper center", bbox_transform=fig.transFigure,
                  bbox_to_anchor=((box.x0 + box.x1) / 2, box.y0 - 0.01))
    return save_figure(fig, path_png)
