"""Regime sweeps: parsing of --vary, the points they make, the predictions' thresholds and a small
sweep end to end, checked against a direct run of the experiment."""

import json
import subprocess
import sys

import matplotlib.colors
import numpy as np
import pytest

from theory_sims import sweep
from theory_sims import report
from theory_sims import view_learning as vl

SMALL = [
    "--k", "4", "--d", "40", "--patches", "16", "--n-train", "60", "--n-test", "80",
    "--seeds", "3", "--students", "2", "--steps", "60", "--kd-steps", "30", "--lr", "5", "--kd-lr", "5",
    "--no-random-features", "--quiet",
]
VARY = ["--vary", "learner.q=3,4", "--vary", "train.lr=5,8", "--data-seeds", "0,1"]


def results_with(single=0.5, ens=0.0, kd=0.0, self_kd=0.2, average=0.47, kd_ensemble=0.0, train=1.0, k=10, rf=None):
    """Hand-made results whose rows have the given test errors over D, in units of mu = 0.1
    (multi-view accuracy 1, so the single-view accuracy is 1 - the error in mu); ``rf`` the
    random-feature rows' errors {"individual": ..., "ensemble": ..., "kd": ..., "average": ...}."""
    mu = 0.1

    def row(err, models=1):
        spread = [-0.001, 0.001] if models > 1 else [0.0]  # a stack's models around their mean
        return {"test_acc": [1 - (err + e) * mu for e in spread], "single_view_acc": [1 - err - e for e in spread],
                "multi_view_acc": [1.0] * len(spread)}

    res = {"setting": {"k": k, "views": 2, "mu": mu},
           "individual": {**row(single, 2), "train_acc": [train, 1.0]},
           "ensemble": row(ens), "kd": row(kd, 2), "self_kd": row(self_kd, 2), "average": row(average),
           "kd_ensemble": row(kd_ensemble)}
    if rf is not None:
        res["random_features"] = {key: row(err) for key, err in rf.items()}
    return res


THEOREMS = ["single", "ensemble", "kd", "self_kd"]
OBSERVATIONS = ["average", "kd_ensemble"]


def test_each_statement_holds_up_to_its_bound_widened_by_the_tolerance_and_fails_past_it():
    """At k = 10 the tolerance is 0.05 mu: the single model's error may lie in [0.44, 0.56] mu, the
    ensemble's and KD's reach 0.06 mu, self-KD's 0.31 mu; a gain the paper says vanishes may reach
    0.05 mu. Just inside holds, just outside fails that statement alone."""
    assert report.tolerance(10) == pytest.approx(0.05)
    assert list(report.predictions(results_with())) == THEOREMS + OBSERVATIONS
    assert all(report.predictions(results_with()).values())
    inside = [dict(single=0.442), dict(single=0.558, average=0.52), dict(ens=0.058), dict(kd=0.058, kd_ensemble=0.03), dict(self_kd=0.308),
              dict(average=0.452), dict(kd=0.04, kd_ensemble=0.0)]
    for case in inside:
        assert all(report.predictions(results_with(**case)).values()), case
    broken = {"single": [dict(single=0.438, average=0.43), dict(single=0.562, average=0.55), dict(train=0.995)],
              "ensemble": [dict(ens=0.062)], "kd": [dict(kd=0.062, kd_ensemble=0.03)],
              "self_kd": [dict(self_kd=0.312)], "average": [dict(average=0.448)],
              "kd_ensemble": [dict(kd=0.055, kd_ensemble=0.0, ens=0.0)]}
    for name, cases in broken.items():
        for case in cases:
            held = report.predictions(results_with(**case))
            failed = [n for n, ok in held.items() if not ok]
            assert name in failed and set(failed) <= {name, "kd"}, (name, case, failed)


def test_the_tolerance_shrinks_with_k():
    """0.5 / k: a single model at 0.42 mu meets the theorem at k = 5 (tolerance 0.1), not at k = 10."""
    assert report.tolerance(5) == pytest.approx(0.1) and report.tolerance(40) == pytest.approx(0.0125)
    assert report.predictions(results_with(single=0.42, average=0.42, k=5))["single"]
    assert not report.predictions(results_with(single=0.42, average=0.42, k=10))["single"]


def test_random_feature_statements_need_a_gain_beyond_the_tolerance():
    rf = {"individual": 5.0, "ensemble": 4.94, "kd": 5.2, "average": 3.0}
    judged = report.judge(results_with(rf=rf))
    assert [n for n, v in judged.items() if v["kind"] == "random features"] == ["rf_ensemble", "rf_kd", "rf_average"]
    assert judged["rf_ensemble"]["holds"] and judged["rf_ensemble"]["value"] == pytest.approx(0.06)
    assert judged["rf_kd"]["holds"] and judged["rf_average"]["holds"]
    judged = report.judge(results_with(rf={**rf, "ensemble": 4.96, "kd": 4.9}))  # gains 0.04 (too small), 0.1 (too big)
    assert not judged["rf_ensemble"]["holds"] and not judged["rf_kd"]["holds"]


def test_judge_keeps_value_bound_tolerance_margin_and_verdict():
    r = results_with(single=0.6, ens=0.03)
    j = report.judge(r)
    single = j["single"]
    assert single["kind"] == "theorem" and single["bound"] == [0.49, 0.51] and single["tolerance"] == pytest.approx(0.05)
    assert single["value"] == pytest.approx(0.6)
    assert (single["lo_held"], single["hi_held"]) == (pytest.approx(0.44), pytest.approx(0.56))
    assert single["margin"] == pytest.approx(-0.04) and not single["holds"]
    assert j["ensemble"]["margin"] == pytest.approx(0.03) and j["ensemble"]["bound"] == [None, 0.01]
    assert j["average"]["kind"] == "observation" and j["average"]["value"] == pytest.approx(0.6 - 0.47)
    assert report.margins(r) == {n: v["margin"] for n, v in j.items()}
    assert report.predictions(r) == {n: v["margin"] >= 0 for n, v in j.items()}
    text = report.format_predictions(r)
    assert "the paper's theorems" in text and "observations on real networks" in text
    assert "paper [0.49, 0.51], held to [0.44, 0.56]; margin -0.040" in text
    assert "[FAILS] single" in text and "[holds] ensemble" in text


def test_parse_vary_reads_each_field_as_its_type():
    base = vl.ViewLearningConfig()
    assert sweep.parse_vary("learner.q=3,4", base) == ("learner.q", [3, 4])
    path, values = sweep.parse_vary("train.lr=5, 8.5", base)
    assert path == "train.lr" and values == [5.0, 8.5] and all(isinstance(v, float) for v in values)
    assert sweep.parse_vary("n_train=50,60", base) == ("n_train", [50, 60])
    assert sweep.parse_vary("distill.loss=kd,kd_capped", base) == ("distill.loss", ["kd", "kd_capped"])
    assert sweep.parse_vary("random_features=false,1", base) == ("random_features", [False, True])


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("learner.q", "--vary must look like SECTION.FIELD=V1,V2"),
        ("model.q=1,2", "the section must be one of data, learner, train"),
        ("learner.depth=1,2", "--vary learner.depth: no such field; learner has k, m, q"),
        ("learner.q=3,four", "--vary learner.q: values must be of type int, got 'four'"),
        ("seed=1,2", "use --data-seeds"),
        ("train.corr_at=1", "cannot be swept"),
    ],
)
def test_parse_vary_rejects_bad_specs(spec, needle):
    with pytest.raises(ValueError) as exc:
        sweep.parse_vary(spec, vl.ViewLearningConfig())
    assert needle in str(exc.value)


def test_points_move_together_and_are_validated_before_running():
    base = vl.ViewLearningConfig()
    runs = sweep.points(base, [("learner.q", [3, 4]), ("data.k", [5, 6])], [0, 7])
    assert [(r["point"], r["data_seed"]) for r in runs] == [(0, 0), (0, 7), (1, 0), (1, 7)]
    cfg = runs[3]["config"]
    assert cfg.learner.q == 4 and cfg.data.k == 6 and cfg.learner.k == 6 and cfg.seed == 7
    assert base.learner.q == 5  # the base is not changed
    assert [r["config"].seed for r in sweep.points(base, [], [3])] == [3]
    with pytest.raises(ValueError, match="need the same number of values, got learner.q: 2, train.lr: 3"):
        sweep.points(base, [("learner.q", [3, 4]), ("train.lr", [1.0, 2.0, 3.0])], [0])
    with pytest.raises(ValueError, match="q must be an integer >= 1"):
        sweep.points(base, [("learner.q", [3, 0])], [0])


def test_grid_points_span_every_combination():
    base = vl.ViewLearningConfig()
    runs = sweep.points(base, [("data.k", [5, 10, 20]), ("learner.sigma0", [0.05, 0.1])], [0, 1], grid=True)
    assert len(runs) == 12 and len({r["point"] for r in runs}) == 6
    assert [tuple(r["values"].values()) for r in runs[::2]] == [
        (5, 0.05), (5, 0.1), (10, 0.05), (10, 0.1), (20, 0.05), (20, 0.1)]
    assert runs[-1]["config"].learner.k == 20 and runs[-1]["config"].learner.sigma0 == 0.1


def test_map_cells_average_margins_over_data_seeds():
    rows = [{"a": a, "b": b, "data_seed": s, "margin_kd": a - b + s, "holds_kd": a - b + s >= 0}
            for a in (1, 2) for b in (1, 3) for s in (0, 1)]
    ys, xs, margin, held = report.map_cells(rows, ["a", "b"], "kd")
    assert ys == [1, 2] and xs == [1, 3]
    np.testing.assert_allclose(margin, [[0.5, -1.5], [1.5, -0.5]])
    np.testing.assert_allclose(held, [[1.0, 0.0], [1.0, 0.5]])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert sweep.main(SMALL + VARY + ["--out", str(out)]) == 0
    return out


def hand_results(**errors):
    """``results_with`` plus the views each row uses, for :func:`report.summary`: the single models
    use 2 + 1 and 1 + 0 views in their two classes (1 per class; 1 pair of 4 uses both), the KD
    students all (2), the self-KD students one (1), the average 2 + 1 (1.5)."""
    res = results_with(**errors)
    used = {"individual": [[[1, 0], [1, 1]], [[0, 1], [0, 0]]], "kd": [[[1, 1], [1, 1]], [[1, 1], [1, 1]]],
            "self_kd": [[[1, 0], [1, 0]], [[0, 1], [1, 0]]], "average": [[[1, 1], [1, 0]]]}
    for key, views in used.items():
        res[key]["views_used"] = np.array(views, dtype=bool)
    return res


def test_a_runs_summary_holds_its_rows_numbers_gains_and_verdicts():
    """report.summary, the row a sweep writes for each run, on hand-made results (mu = 0.1, k = 10:
    tolerance 0.05 mu): single-view accuracy is 1 - the error in mu, and each verdict follows."""
    row = report.summary(hand_results(single=0.5, ens=0.1, kd=0.2, self_kd=0.3, average=0.4, kd_ensemble=0.17))
    assert {k: row[k] for k in ("sv_individual", "sv_ensemble", "sv_kd", "sv_self_kd", "sv_average",
                                "sv_kd_ensemble")} == pytest.approx(
        {"sv_individual": 0.5, "sv_ensemble": 0.9, "sv_kd": 0.8, "sv_self_kd": 0.7, "sv_average": 0.6,
         "sv_kd_ensemble": 0.83})
    assert row["gain_ensemble"] == pytest.approx(0.4) and row["gain_average"] == pytest.approx(0.1)
    assert row["gain_kd_ensemble"] == pytest.approx(0.03)
    assert (row["multi_view_single"], row["train_acc_min"]) == (1.0, 1.0)
    assert {k: row["views_" + k] for k in ("individual", "kd", "self_kd", "average")} == {
        "individual": 1.0, "kd": 2.0, "self_kd": 1.0, "average": 1.5}
    assert row["several_views_individual"] == 0.25
    # single 0.5 in [0.44, 0.56]; ensemble 0.1 and KD 0.2 past 0.06; self-KD 0.3 under 0.31; training
    # the average gains 0.1 > 0.05; the students' ensemble gains 0.03 <= 0.05
    assert {n: row["holds_" + n] for n in THEOREMS + OBSERVATIONS} == {
        "single": True, "ensemble": False, "kd": False, "self_kd": True, "average": False, "kd_ensemble": True}
    assert {n: row["margin_" + n] for n in THEOREMS + OBSERVATIONS} == pytest.approx(
        {"single": 0.06, "ensemble": -0.04, "kd": -0.14, "self_kd": 0.01, "average": -0.05, "kd_ensemble": 0.02})
    assert row["value_single"] == pytest.approx(0.5) and row["value_average"] == pytest.approx(0.1)


def test_sweep_writes_one_row_per_point_and_data_seed(sweep_dir):
    """One row per (point, data seed) in order, the same in sweep.csv as in sweep.json, and each
    row the summary of its run (its verdicts as judged from its margins)."""
    import csv

    names = {p.name for p in sweep_dir.iterdir()}
    assert {"config.json", "sweep.csv", "sweep.json", "sweep.png", "sweep.pdf"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    rows = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    assert [(r["point"], r["learner.q"], r["train.lr"], r["data_seed"]) for r in rows] == [
        (0, 3, 5.0, 0), (0, 3, 5.0, 1), (1, 4, 8.0, 0), (1, 4, 8.0, 1)]
    summary_keys = set(report.summary(hand_results()))  # the numbers of every run's summary, and its wall time
    for r in rows:
        assert {"point", "learner.q", "train.lr", "data_seed", "wall_s", "sv_long_single", "sv_individual_3x"} \
            | summary_keys <= set(r)
        assert r["gain_average"] == pytest.approx(r["sv_average"] - r["sv_individual"])
        assert r["gain_kd_ensemble"] == pytest.approx(r["sv_kd_ensemble"] - r["sv_kd"])
        assert all(r["holds_" + n] == (r["margin_" + n] >= 0) for n in THEOREMS + OBSERVATIONS)
        assert 0 <= r["views_individual"] <= 2 and isinstance(r["holds_average"], bool)
    with open(sweep_dir / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and list(table[0]) == list(rows[0])
    for line, r in zip(table, rows):
        for key, value in r.items():
            if isinstance(value, bool):
                assert line[key] == str(value), key
            else:
                assert float(line[key]) == pytest.approx(value, abs=1e-12), key
    cfg = json.loads((sweep_dir / "config.json").read_text())
    assert cfg["vary"] == {"learner.q": [3, 4], "train.lr": [5.0, 8.0]} and cfg["data_seeds"] == [0, 1]
    assert cfg["base"]["data"]["k"] == 4


def test_a_sweep_point_is_the_experiment_run_with_that_config(sweep_dir):
    """Point 1 on data seed 1 gives the numbers of a direct run of view_learning with q=4, lr 8, seed 1."""
    row = json.loads((sweep_dir / "sweep.json").read_text())["runs"][3]
    base = vl.config_from_args(vl.build_parser().parse_args(SMALL))
    cfg = sweep.with_value(sweep.with_value(base, "learner.q", 4), "train.lr", 8.0)
    results, _ = vl.run(vl.dataclasses.replace(cfg, seed=1), log=lambda *a, **k: None)
    assert row["sv_individual"] == pytest.approx(np.mean(results["individual"]["single_view_acc"]))
    assert row["sv_kd_ensemble"] == pytest.approx(results["kd_ensemble"]["single_view_acc"])
    assert row["holds_single"] == report.predictions(results)["single"]
    assert row["margin_kd"] == pytest.approx(report.margins(results)["kd"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--vary", "learner.q=3", "--vary", "train.lr=1,2"], "need the same number of values"),
        (["--vary", "learner.q=3,0"], "q must be an integer >= 1"),
        (["--vary", "learner.q=3", "--vary", "learner.q=4"], "each parameter may be given once"),
        (["--data-seeds", "0,x"], "--data-seeds must be comma-separated integers >= 0"),
        (["--data-seeds", "-1"], "--data-seeds must be comma-separated integers >= 0"),
        (["--data-seeds", "-1,0"], "--data-seeds must be comma-separated integers >= 0"),
        (["--missing", "2"], "missing must be a number in [0.0, 1.0]"),
        (["--grid", "--vary", "learner.q=3,4"], "--grid needs exactly two --vary parameters"),
    ],
)
def test_bad_sweep_flags_exit_2_with_one_line_and_write_nothing(argv, needle, capsys, tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exc:
        sweep.main(argv + ["--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_sweep_help_explains_vary():
    proc = subprocess.run([sys.executable, "-m", "theory_sims.sweep", "--help"], capture_output=True, text=True, check=True)
    assert "--vary" in proc.stdout and "--data-seeds" in proc.stdout and "move together" in proc.stdout
    assert "runs/sweep-<time>" in proc.stdout


def test_a_grid_sweep_draws_the_map_and_prints_each_prediction(tmp_path, capsys, monkeypatch):
    """Each grid point's run replaced by hand-made results whose single-model error depends on the
    point (q = 3: 0.5 and 0.6 mu at lr 5 and 8; q = 4: 0.45 and 0.3 mu; k = 10, tolerance 0.05): the
    map prints each point's margin and verdict where the point lies, and draws them."""
    from conftest import assert_png_has_content

    error = {(3, 5.0): 0.5, (3, 8.0): 0.6, (4, 5.0): 0.45, (4, 8.0): 0.3}
    monkeypatch.setattr(sweep, "point_job", lambda cfg: {
        **report.summary(hand_results(single=error[cfg.learner.q, cfg.train.lr])), "wall_s": 0.0})
    out = tmp_path / "grid"
    argv = SMALL + ["--grid", "--vary", "learner.q=3,4", "--vary", "train.lr=5,8", "--cluster", "serial"]
    assert sweep.main(argv + ["--out", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())["runs"]
    assert [(r["learner.q"], r["train.lr"]) for r in rows] == [(3, 5.0), (3, 8.0), (4, 5.0), (4, 8.0)]
    assert [r["holds_single"] for r in rows] == [True, False, True, False]
    assert_png_has_content(out / "map.png")
    printed = capsys.readouterr().out
    for name in THEOREMS + OBSERVATIONS:
        assert f"{name} (margin; held on how many of 1 data seeds), learner.q down, train.lr across" in printed
    lines = printed.splitlines()
    at = lines.index("single (margin; held on how many of 1 data seeds), learner.q down, train.lr across")
    assert lines[at + 1:at + 4] == [
        " " * 10 + " " * 13 + "5.0" + " " * 13 + "8.0",
        "         3   +0.060 (1/1)   -0.040 (0/1)",  # 0.5: 0.06 inside [0.44, 0.56]; 0.6: 0.04 past it
        "         4   +0.010 (1/1)   -0.140 (0/1)",
    ]


def test_k_rule_ties_the_regime_to_k():
    """d and n_train in proportion to k, the noise's norm per patch fixed, m about log k."""
    base = vl.configure(data={"d": 160, "noise_std": 0.08}, n_train=200, learner={"m": 2})
    rule = dict(sweep.k_rule(base, [5, 10, 20]))
    assert rule["data.k"] == [5, 10, 20] and rule["data.d"] == [80, 160, 320] and rule["n_train"] == [100, 200, 400]
    norms = [s * np.sqrt(d) for s, d in zip(rule["data.noise_std"], rule["data.d"])]
    np.testing.assert_allclose(norms, 0.08 * np.sqrt(160), rtol=1e-5)
    assert rule["learner.m"] == [1, 2, 3]  # 2 ln 5 / ln 10 = 1.4, 2 ln 20 / ln 10 = 2.6
    runs = sweep.points(base, sweep.k_rule(base, [5, 20]), [0])
    assert [(r["config"].data.k, r["config"].learner.k, r["config"].data.d) for r in runs] == [(5, 5, 80), (20, 20, 320)]


def test_the_race_k_rule_scales_sigma0_as_the_theory_and_keeps_varrho():
    """sigma0^(q-2) proportional to 1/k: with q = 5, sigma0 falls by 2^(1/3) each time k doubles."""
    base = vl.configure(learner={"q": 5, "sigma0": 0.12, "varrho": 2.0})
    rule = dict(sweep.k_rule(base, [5, 10, 20, 40], "race"))
    np.testing.assert_allclose(rule["learner.sigma0"], [0.12 * 2 ** (1 / 3), 0.12, 0.12 / 2 ** (1 / 3), 0.12 / 4 ** (1 / 3)],
                               rtol=1e-5)
    sig = np.asarray(rule["learner.sigma0"])
    np.testing.assert_allclose(sig ** 3 * np.asarray(rule["data.k"]), 0.12 ** 3 * 10, rtol=1e-5)
    assert "learner.varrho" not in rule
    assert dict(sweep.k_rule(base, [5, 10])).keys() == rule.keys() - {"learner.sigma0", "train.steps"}
    # the power phase lasts ~ 1 / (eta sigma0^(q-2)) ~ k steps: the cap grows with k, never below the base's
    assert rule["train.steps"] == [base.train.steps, base.train.steps, 2 * base.train.steps, 4 * base.train.steps]
    runs = sweep.points(base, sweep.k_rule(base, [10, 40], "race"), [0])
    assert [r["config"].train.steps for r in runs] == [base.train.steps, 4 * base.train.steps]
    with pytest.raises(ValueError, match="needs q > 2"):
        sweep.k_rule(vl.configure(learner={"q": 2}), [5, 10], "race")


def test_k_rule_without_scale_k_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--k-rule", "race"])
    assert exc.value.code == 2 and "--k-rule does nothing without --scale-k" in capsys.readouterr().err


def test_scale_k_refuses_vary_and_bad_values(capsys, tmp_path):
    for argv, needle in ((["--scale-k", "5,10", "--vary", "learner.q=3,4"], "give no --vary with it"),
                         (["--scale-k", "1,10"], "--scale-k must be distinct comma-separated integers >= 2"),
                         (["--scale-k", "x"], "--scale-k must be")):
        with pytest.raises(SystemExit) as exc:
            sweep.main(argv + ["--out", str(tmp_path / "s")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["--vary", "learner.varrho=1,1"],
    ["--vary", "train.lr=330,330.0"],
    ["--data-seeds", "0,0"],
    ["--vary", "learner.q=3,3", "--vary", "learner.m=2,3", "--grid"],
])
def test_a_sweep_refuses_two_runs_of_one_config(argv, capsys):
    """Identical runs would be counted as independent evidence ("2/2"): refused before anything
    runs, in one line naming the flags."""
    with pytest.raises(SystemExit) as err:
        sweep.main(argv + ["--out", "never-written", "--cluster", "serial"])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("would be the same run" in msg or "would run twice" in msg) and "--vary" in msg and "--data-seeds" in msg


def test_the_k_figure_says_whether_both_views_fall_with_k(monkeypatch, tmp_path):
    """k.png: one line per data seed and their mean; the title states the measured trend, from
    hand-made rows whose answer is known."""
    from theory_sims import figures

    shown = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: shown.update(fig=fig) or [path])

    def rows(shares):
        return [{"data.k": k, "data_seed": s, "several_views_individual": v + 0.01 * s, "value_single": 0.3}
                for k, v in shares.items() for s in (0, 1)]

    figures.k_figure(tmp_path / "k.png", rows({5: 0.4, 10: 0.2, 20: 0.1}))
    title = shown["fig"]._suptitle.get_text()
    assert "falls: 0.41 at k = 5, 0.11 at k = 20" in title
    left = shown["fig"].axes[0]
    assert len(left.lines) == 3 and list(left.lines[2].get_ydata()) == pytest.approx([0.405, 0.205, 0.105])
    figures.k_figure(tmp_path / "k.png", rows({5: 0.1, 10: 0.2}))
    assert "does not fall: 0.11, 0.21 at k = 5, 10" in shown["fig"]._suptitle.get_text()
    figures.k_figure(tmp_path / "k.png", rows({5: 0.3, 10: 0.1, 20: 0.2}))
    assert "falls, but not steadily: 0.30, 0.11, 0.21 at k = 5, 10, 20" in shown["fig"]._suptitle.get_text()
    assert "stopped before fitting" not in shown["fig"]._suptitle.get_text()
    unfit = rows({5: 0.3, 10: 0.1, 20: 0.2})
    for r in unfit:
        r["train_acc_min"] = 0.9 if r["data.k"] == 20 else 1.0
    figures.k_figure(tmp_path / "k.png", unfit)  # a point whose single models did not fit is circled and named
    assert "at k = 20 the single models stopped before fitting (circled)" in shown["fig"]._suptitle.get_text()
    circled = [c for c in shown["fig"].axes[0].collections if c.get_label().startswith("single models did not fit")]
    assert len(circled) == 1 and sorted(circled[0].get_offsets()[:, 0]) == [20, 20]


@pytest.mark.parametrize("argv, needle", [
    (["--stop", "steps", "--vary", "train.fit_multiple=2,3"],
     "--vary train.fit_multiple does nothing unless --stop converge"),
    (["--stop", "steps", "--vary", "train.plateau=0.01,0.02"], "--vary train.plateau does nothing unless --stop converge"),
    (["--stop", "fit", "--vary", "train.loss_target=0.01,0.001"],
     "--vary train.loss_target does nothing unless --stop converge"),
    (["--kd-stop", "steps", "--vary", "distill.fit_multiple=2,3"],
     "--vary distill.fit_multiple does nothing unless --kd-stop converge"),
    (["--vary", "train.plateau_window=20,40"],
     "--vary train.plateau_window does nothing unless --stop converge with --plateau above 0"),
    (["--vary", "train.extra_steps=0,10"], "--vary train.extra_steps does nothing unless --stop fit"),
    (["--vary", "ntk_train.lr=1,2"], "--vary ntk_train.lr does nothing without --ntk"),
    (["--vary", "train.stop=steps,converge", "--vary", "train.fit_multiple=2,3"],
     "--vary train.fit_multiple does nothing unless --stop converge (as at point 0: train.stop=steps)"),
    (["--grid", "--vary", "distill.stop=converge,steps", "--vary", "distill.plateau=0.01,0.02"],
     "--vary distill.plateau does nothing unless --kd-stop converge (as at point 2: distill.stop=steps)"),
])
def test_a_varied_field_that_does_nothing_in_the_mode_is_refused_as_its_flag_is(argv, needle, capsys, tmp_path,
                                                                                 monkeypatch):
    """The rule of view_learning's flags (--fit-multiple with --stop steps is refused) holds for --vary:
    points that differ in a field the stop rule (or the mode) ignores would be the same run."""
    monkeypatch.setattr(sweep, "run", lambda *a, **k: pytest.fail("the sweep ran"))  # not a full-size sweep
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exc:
        sweep.main(argv + ["--out", str(out), "--cluster", "serial"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_a_varied_field_is_refused_only_where_it_does_nothing():
    base = vl.ViewLearningConfig()  # both stop rules 'converge', the single models' plateau off
    assert base.train.stop == "converge" and base.train.plateau == 0 and base.distill.plateau > 0
    for varied in ([("train.fit_multiple", [2.0, 3.0])], [("distill.plateau_window", [20, 40])],
                   [("train.steps", [100, 200])],  # the cap of 'converge', not idle under it
                   [("train.plateau", [0.01, 0.02]), ("train.plateau_window", [20, 40])],
                   [("distill.stop", ["steps", "converge"]), ("distill.steps", [100, 200])]):
        assert len(sweep.points(base, varied, [0])) == 2, varied
    # every refusal rule of the experiment's flags is reached from the field that flag sets
    paths = [f"{part}.{f.name}" for part in vl.PARTS for f in vl.dataclasses.fields(getattr(base, part))]
    paths += [f.name for f in vl.dataclasses.fields(base) if f.name not in vl.PARTS]
    pairs = [(sweep.inert_rule(p)[0], p) for p in paths if sweep.inert_rule(p) is not None]
    reached = dict(pairs)
    assert len(reached) == len(pairs) and set(reached) == {rule[0] for rule in vl.INERT_FLAGS}  # one field a flag
    assert reached["--kd-plateau"] == "distill.plateau" and reached["--kd-weight"] == "distill.kd_weight"
    assert reached["--augment-rate"] == "augment_rate" and reached["--rf-steps"] == "rf_train.steps"
    assert sweep.inert_rule("train.kd_weight") is None and sweep.inert_rule("train.augment_rate") is None  # no flags


def test_report_md_puts_the_sweep_on_one_page(sweep_dir):
    """report.md: the command as typed, the summary as printed, and exactly the figures written."""
    import re

    from theory_sims.figures import SWEEP_FIGURES

    text = (sweep_dir / "report.md").read_text()
    assert f"python -m theory_sims.sweep {' '.join(SMALL + VARY)} --out {sweep_dir}" in text
    for heading in ("## The sweep", "## Time", "## Figures"):
        assert heading in text
    assert "## The map" not in text  # no --grid
    embedded = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    assert {name for _, name in embedded} == {p.name for p in sweep_dir.glob("*.png")} == {"sweep.png"}
    assert all(caption == SWEEP_FIGURES[name] for caption, name in embedded)


def test_config_of_a_sweep_takes_its_points_unless_given(sweep_dir):
    """--config SWEEP_RUN: the sweep's base, --vary values and --data-seeds (its config.json again);
    --data-seeds or --vary given beside it replace the sweep's."""
    from theory_sims.results import as_json

    saved = json.loads((sweep_dir / "config.json").read_text())

    def planned(*flags):
        args = sweep.build_parser().parse_args(["--config", str(sweep_dir), *flags])
        base, varied, runs = sweep.plan(args)
        return args, base, varied, runs

    args, base, varied, runs = planned()
    config = {"base": base.to_dict(), "vary": dict(varied), "grid": args.grid,
              "data_seeds": sorted({r["data_seed"] for r in runs})}
    assert as_json(config) == saved and len(runs) == 4
    _, _, varied, runs = planned("--data-seeds", "2")
    assert dict(varied) == saved["vary"] and {r["data_seed"] for r in runs} == {2}
    _, _, varied, runs = planned("--vary", "learner.m=2,3")
    assert varied == [("learner.m", [2, 3])] and {r["data_seed"] for r in runs} == {0, 1}


def test_config_re_creates_a_grid_sweep(tmp_path, monkeypatch):
    """A grid sweep's --config re-creates it: the same config.json and rows (timings aside), its map
    drawn and printed on its one page."""
    monkeypatch.setattr(sweep, "point_job", lambda cfg: {
        **report.summary(hand_results(single=0.1 * cfg.learner.q + 0.01 * cfg.train.lr)), "wall_s": 0.0})
    out, again = tmp_path / "grid", tmp_path / "again"
    argv = SMALL + ["--grid", "--vary", "learner.q=3,4", "--vary", "train.lr=5,8", "--cluster", "serial"]
    assert sweep.main(argv + ["--out", str(out)]) == 0
    assert sweep.main(["--config", str(out), "--cluster", "serial", "--quiet", "--out", str(again)]) == 0
    assert (again / "config.json").read_text() == (out / "config.json").read_text()
    rows = lambda folder: json.loads((folder / "sweep.json").read_text())["runs"]  # noqa: E731
    assert rows(again) == rows(out)
    assert (again / "map.png").is_file() and "## The map" in (again / "report.md").read_text()


def test_sweep_png_gives_a_row_and_its_statement_one_colour_in_every_panel(sweep_dir, monkeypatch):
    """sweep.png once drew orange as the ensemble in two panels and KD in the third: each row and
    the statement about it now keep one colour in every panel (figures.row_palette)."""
    from theory_sims import figures

    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or [])
    runs = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    figures.sweep_figure(sweep_dir / "again.png", runs, ["learner.q", "train.lr"])
    colours: dict = {}
    for ax in drawn[0].axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            colour = tuple(np.round(matplotlib.colors.to_rgb(handle.get_color()), 4))
            colours.setdefault(text.split(" (")[0], set()).add(colour)
    assert {"ensemble", "KD", "single model"} <= set(colours)
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and no two share one
