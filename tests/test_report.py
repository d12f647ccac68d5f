"""The report's printed text on hand-made results with known answers: the mechanism lines, a sweep's
summary lines, what a summary's gains mean, and the figures that draw the report's bands and words."""

import numpy as np
import pytest

from theory_sims import report

INF = float("inf")


def views(pattern, seeds=2, k=10):
    """views_used (seeds, k, 2) from ``pattern``: one (k, 2) list per seed, or one for all."""
    arr = np.asarray(pattern, dtype=bool)
    return np.broadcast_to(arr, (seeds, k, 2)).copy() if arr.ndim == 2 else arr


def mechanism_results(single=None, k=10, clean=True):
    """A run's results as :func:`report.format_mechanism` reads them, every number chosen by hand.

    The single models (2 seeds, k = 10 classes, 2 views): seed 0 uses view 1 of classes 0-8 and
    nothing of class 9, seed 1 view 2 of classes 0-8 and nothing of class 9: 18 of the 40 (class,
    view) pairs (45%), 0.90 views per class."""
    if single is None:
        one = [[1, 0]] * 9 + [[0, 0]]
        single = np.array([one, [[0, 1]] * 9 + [[0, 0]]], dtype=bool)
    rows = {
        "individual": {"views_used": single},
        "ensemble": {"views_used": views([[1, 1]] * k, seeds=1, k=k)},  # 2.00
        "kd": {"views_used": views([[1, 1]] * (k // 2) + [[1, 0]] * (k - k // 2), k=k)},  # 1.50
        "self_kd": {"views_used": views([[1, 0]] * k, k=k)},  # 1.00
    }
    if clean:
        for key, acc in (("individual", [0.5, 0.6]), ("ensemble", [0.9]), ("kd", [0.7, 0.8]), ("self_kd", [0.6, 0.6])):
            rows[key]["single_view_clean_acc"] = acc
    mechanism = {
        "calibration": [
            {"lambda_lo": -INF, "lambda_hi": 1.0, "triples": 30, "mean_view_acc": 0.2},
            {"lambda_lo": 1.0, "lambda_hi": 2.0, "triples": 0, "mean_view_acc": None},  # empty: not printed
            {"lambda_lo": 2.0, "lambda_hi": INF, "triples": 10, "mean_view_acc": 0.95},
        ],
        "lottery": {"one_view": 18, "pairs": 20, "init_winner": 0.75, "chance": 0.5, "several_views": 0, "no_view": 2,
                    "median_gap_one_view": 0.0123, "median_gap_several_views": None},
        "kd_inheritance": {"ensemble": {"fraction": 0.8}, "few": {"fraction": 0.25}, "many": {"fraction": 1.0},
                           "teachers": 2, "by_teachers": [{"teachers": 1, "fraction": 0.25},
                                                          {"teachers": 2, "fraction": 1.0}]},
        "memorisation": {"unused": {"pairs": 22, "fitted": 1.0, "without_noise": 0.1, "median_stored_noise": 0.8},
                         "used": {"pairs": 18, "fitted": 1.0, "without_noise": 0.9, "median_stored_noise": None}},
    }
    return {"setting": {"k": k, "views": 2, "mu": 0.1}, "mechanism": mechanism, **rows}


def test_the_mechanism_lines_on_hand_made_results():
    lines = report.format_mechanism(mechanism_results()).splitlines()
    assert lines[0].startswith("the mechanism (a model uses a view when it gets >= 0.5 of the single-view test")
    assert lines[1] == "  views used per class: single models 0.90, ensemble 2.00, KD 1.50, self-KD 1.00 (of 2)"
    # 45% lies outside the theorem's [49%, 51%] but inside it widened by the tolerance 0.5/k = 5%
    assert lines[2] == ("  single models use 45% of the (class, view) pairs; the single-model theorem's band, in the "
                        "same units: 44%-56% (inside)")
    assert lines[3] == "  Lambda/varrho at the end -> per-view accuracy (triples): [-inf, 1) 0.20 (30), [2, inf) 0.95 (10)"
    assert lines[4] == ("  the init's lottery: 18 of 20 (seed, class) pairs use one view, 0.75 of them the one with the "
                        "larger initial Lambda (chance 0.50, theory about 1); 0 use several, 2 none; median initial gap "
                        "between the two largest Lambdas 0.0123 (one view) vs 0 (several)")
    assert lines[5] == ("  KD students use 0.80 of the views some teacher uses: 0.25 of those at most a third of the 2 "
                        "teachers use, 1.00 of the others; by teachers using the view: 1: 0.25, 2: 1.00")
    assert lines[6] == ("  single-view training samples whose view the model does not use (22 pairs): fitted 1.00, still "
                        "right without their noise 0.10, stored noise 0.80; whose view it uses (18): 1.00, 0.90, 0.00")
    assert lines[7] == ("  single-view accuracy with the inputs' Gaussian noise removed (diagnostic): single models 0.550, "
                        "ensemble 0.900, KD 0.750, self-KD 0.600")
    assert len(lines) == 8  # no self-KD inheritance, race, single-view samples or noise response in these results


def test_the_mechanism_band_follows_k_and_says_outside():
    # every pair used: 100%, outside the band; at k = 5 the tolerance is 0.1, so the band is 39%-61%
    res = mechanism_results(single=views([[1, 1]] * 5, k=5), k=5, clean=False)
    lines = report.format_mechanism(res).splitlines()
    assert lines[2] == ("  single models use 100% of the (class, view) pairs; the single-model theorem's band, in the "
                        "same units: 39%-61% (outside)")
    assert not any("noise removed" in line for line in lines)  # no clean accuracies, no line
    # the band is the single-model statement's, as judged (report.held_bound)
    assert report.held_bound("single", 5) == pytest.approx((0.39, 0.61))
    assert report.held_bound("ensemble", 10) == (None, pytest.approx(0.06))
    assert report.held_bound("rf_ensemble", 10) == (pytest.approx(0.05), None)  # a gain must exceed the tolerance


def sweep_row(point, seed, values, sv, views_, gains, holds):
    """A sweep row as :func:`report.summary` makes it (the numbers format_summary reads)."""
    ind, ens, kd, self_kd = sv
    return {"point": point, **values, "data_seed": seed, "sv_individual": ind, "views_individual": views_,
            "sv_ensemble": ens, "sv_kd": kd, "sv_self_kd": self_kd, "gain_average": gains[0],
            "gain_kd_ensemble": gains[1], **{"holds_" + n: h for n, h in holds.items()}}


def test_the_sweep_summary_lines_are_means_over_data_seeds_and_counts_of_verdicts():
    rows = [
        sweep_row(0, 0, {"learner.q": 3, "train.lr": 5.0}, (0.5, 0.9, 0.8, 0.7), 1.0, (0.10, -0.02),
                  {"single": True, "ensemble": True, "average": False}),
        sweep_row(0, 1, {"learner.q": 3, "train.lr": 5.0}, (0.6, 1.0, 0.9, 0.6), 1.5, (0.20, 0.04),
                  {"single": False, "ensemble": True, "average": False}),
        sweep_row(1, 0, {"learner.q": 4, "train.lr": 8.0}, (0.25, 0.75, 0.5, 0.5), 1.25, (-0.05, 0.0),
                  {"single": True, "ensemble": False, "average": True}),
    ]
    lines = report.format_summary(rows, ["learner.q", "train.lr"]).splitlines()
    assert lines[0] == (f"{'learner.q / train.lr':28s} single views    ens     KD selfKD  avg-1 KDe-KD  predictions held")
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    # point 0: means over its two data seeds, and on how many of them each prediction held
    assert lines[2] == (f"{'3 / 5.0':28s}  0.550  1.25  0.950  0.850  0.650 +0.150 +0.010  "
                        "single 1/2 ensemble 2/2 average 0/2")
    assert lines[3] == f"{'4 / 8.0':28s}  0.250  1.25  0.750  0.500  0.500 -0.050 +0.000  single 1/1 ensemble 0/1 average 1/1"
    assert len(lines) == 4
    # with no varied parameter the point's number labels its line
    assert report.format_summary(rows[2:], []).splitlines()[2].startswith(f"{'1':28s}  0.250")


def test_a_summarys_gains_are_single_view_accuracy_and_the_statements_values_error_drops():
    """With multi-view accuracy below 1 the two differ: training the average raises the single-view
    accuracy by 0.2 (gain_average) but lowers the test error over D by 0.1 mu (value_average)."""
    mu = 0.1

    def row(single, multi, n=1):  # test accuracy: the mixture (1 - mu) multi + mu single
        return {"test_acc": [(1 - mu) * multi + mu * single] * n, "single_view_acc": [single] * n,
                "multi_view_acc": [multi] * n}

    res = {"setting": {"k": 10, "views": 2, "mu": mu},
           "individual": {**row(0.5, 1.0, 2), "train_acc": [1.0, 1.0], "views_used": views([[1, 0]] * 2, k=2)},
           "ensemble": row(0.99, 1.0), "kd": {**row(0.8, 1.0, 2), "views_used": views([[1, 1]] * 2, k=2)},
           "self_kd": {**row(0.7, 1.0, 2), "views_used": views([[1, 1]] * 2, k=2)},
           "average": {**row(0.7, 0.99), "views_used": views([[1, 0]] * 2, seeds=1, k=2)},
           "kd_ensemble": row(0.9, 0.995)}
    s = report.summary(res)
    # errors over D in mu: one model 0.5, the average 0.39 (0.1 x 0.01 + 0.1 x 0.3, over 0.1); KD 0.2, the
    # students' ensemble 0.145
    assert s["gain_average"] == pytest.approx(0.2)  # single-view accuracy: 0.7 - 0.5
    assert s["value_average"] == pytest.approx(0.11)  # test error over D, in mu: 0.5 - 0.39
    assert s["gain_kd_ensemble"] == pytest.approx(0.1)
    assert s["value_kd_ensemble"] == pytest.approx(0.055)
    assert s["gain_ensemble"] == pytest.approx(0.49)


# ----------------------------------------------------------------------------- figures: the report's bands and words

def test_the_training_length_figure_shades_the_judged_band():
    import matplotlib.pyplot as plt

    from theory_sims import figures

    by_length = {"1x": {"views_per_class": [1.0, 1.2], "single_view_acc": [0.5, 0.6]},
                 "3x": {"views_per_class": [1.1, 1.3], "single_view_acc": [0.55, 0.65]}}
    for k, text in ((10, "44%-56%"), (5, "39%-61%")):
        fig = figures.training_length(by_length, views=2, k=k)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any(f"with the tolerance: {text} of the views" in label for label in labels), labels
        lo, hi = report.held_bound("single", k)
        span = fig.axes[1].patches[0]  # the single-view accuracy panel's shaded band (a Rectangle)
        assert (span.get_y(), span.get_y() + span.get_height()) == pytest.approx((lo, hi))
        plt.close(fig)


def test_a_views_heatmap_counts_views_used():
    import matplotlib.pyplot as plt

    from theory_sims import figures

    fig = figures.views_heatmap(np.ones((2, 3, 3), dtype=bool), "views used by each seed")
    assert fig.axes[-1].get_ylabel() == "views used"  # the colour bar: judged by accuracy, not by Lambda
    plt.close(fig)


def test_the_mechanism_prints_from_a_results_json_read_back(tmp_path):
    """Open bins (-inf, inf) are written to results.json as null: the kept main job's results, read
    back, print the same calibration and race bins as in memory."""
    import json
    from pathlib import Path

    saved = json.loads((Path(__file__).resolve().parents[1] / "docs" / "main_job_results.json").read_text())
    text = report.format_mechanism(saved)
    assert "[-inf, 1) " in text and "[4, inf) " in text and "[-inf, 0.25) " in text


def test_the_sweep_summary_prints_rows_without_the_trained_average():
    """A sweep with --no-average has no gain_average in its rows: the summary prints nan there
    (it raised KeyError at the end of a 25-minute sweep once)."""
    row = {"point": 0, "data_seed": 0, "sv_individual": 0.6, "views_individual": 1.1, "sv_ensemble": 1.0,
           "sv_kd": 0.9, "sv_self_kd": 0.9, "gain_kd_ensemble": 0.01, "holds_single": False, "margin_single": -0.1}
    text = report.format_summary([row], [])
    assert "  +nan +0.010  single 0/1" in text.splitlines()[-1]
