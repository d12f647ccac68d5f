"""Regime sweeps: parsing of --vary, the points they make, the predictions' thresholds and a small
sweep end to end, checked against a direct run of the experiment."""

import json
import subprocess
import sys

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


def results_with(single=0.6, views=0.5, ens=0.95, kd=0.9, kd_both=0.8, self_kd=0.75, average=0.65,
                 kd_ensemble=0.92, multi=1.0, train=1.0):
    """A run's results holding the given single-view accuracies; ``views`` and ``kd_both`` are the
    fractions of (class, view) pairs the single models learn and of classes with both views in KD."""
    k, V = 10, 2
    ind_views = np.zeros((4, k, V), bool)
    ind_views.reshape(-1)[: int(round(views * ind_views.size))] = True
    kd_views = np.zeros((2, k, V), bool)
    kd_views[:, : int(round(kd_both * k))] = True
    return {
        "individual": {"single_view_acc": [single - 0.01, single + 0.01], "multi_view_acc": [multi, multi],
                       "train_acc": [train, 1.0], "views_learned": ind_views},
        "ensemble": {"single_view_acc": ens},
        "kd": {"single_view_acc": [kd, kd], "views_learned": kd_views},
        "self_kd": {"single_view_acc": [self_kd]},
        "average": {"single_view_acc": average},
        "kd_ensemble": {"single_view_acc": kd_ensemble},
    }


def test_predictions_hold_or_fail_at_their_thresholds():
    assert all(report.predictions(results_with()).values())
    assert set(report.predictions(results_with())) == set(report.PREDICTIONS)
    broken = {
        "lottery": [dict(single=0.72, ens=0.98, self_kd=0.81, average=0.78), dict(single=0.38, average=0.45),
                    dict(views=0.8), dict(multi=0.97), dict(train=0.99)],
        "ensemble": [dict(ens=0.84), dict(ens=0.91, single=0.67, self_kd=0.8)],
        "kd": [dict(kd=0.84, kd_ensemble=0.86), dict(kd_both=0.5)],
        "self_kd": [dict(self_kd=0.67), dict(self_kd=0.96)],
        "average": [dict(average=0.71), dict(average=0.68, ens=0.91)],
        "kd_ensemble": [dict(kd_ensemble=0.94)],
    }
    for name, cases in broken.items():
        for case in cases:
            held = report.predictions(results_with(**case))
            assert [n for n, ok in held.items() if not ok] == [name], (name, case)
    # training the average may gain at most a quarter of the ensemble's gain (+0.35 here)
    assert report.predictions(results_with(average=0.68))["average"]  # +0.08 <= +0.0875


def test_margins_measure_the_slack_and_agree_with_the_verdicts():
    r = results_with(kd_ensemble=0.92, average=0.66)
    m = report.margins(r)
    assert m["kd_ensemble"] == pytest.approx(0.03 - 0.02)
    assert m["average"] == pytest.approx(0.35 / 4 - 0.06)
    assert m["ensemble"] == pytest.approx(min(0.95 - 0.90, 0.35 - 0.25))
    assert m["self_kd"] == pytest.approx(min(0.15 - 0.08, 0.95 - 0.75))
    for case in (dict(), dict(views=0.8), dict(average=0.71), dict(kd_ensemble=0.94), dict(self_kd=0.96)):
        r = results_with(**case)
        assert report.predictions(r) == {name: v >= 0 for name, v in report.margins(r).items()}
    text = report.format_predictions(report.predictions(r), r)
    assert "teachers' ensemble 0.950" in text and "margin" in text


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


def test_sweep_writes_one_row_per_point_and_data_seed(sweep_dir):
    names = {p.name for p in sweep_dir.iterdir()}
    assert {"config.json", "sweep.csv", "sweep.json", "sweep.png", "sweep.pdf"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    rows = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    assert [(r["point"], r["learner.q"], r["train.lr"], r["data_seed"]) for r in rows] == [
        (0, 3, 5.0, 0), (0, 3, 5.0, 1), (1, 4, 8.0, 0), (1, 4, 8.0, 1)]
    for r in rows:
        assert r["gain_average"] == pytest.approx(r["sv_average"] - r["sv_individual"])
        assert r["gain_kd_ensemble"] == pytest.approx(r["sv_kd_ensemble"] - r["sv_kd"])
        assert 0 <= r["views_individual"] <= 2 and isinstance(r["holds_average"], bool)
    assert len((sweep_dir / "sweep.csv").read_text().splitlines()) == 1 + len(rows)
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
    assert row["holds_lottery"] == report.predictions(results)["lottery"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--vary", "learner.q=3", "--vary", "train.lr=1,2"], "need the same number of values"),
        (["--vary", "learner.q=3,0"], "q must be an integer >= 1"),
        (["--vary", "learner.q=3", "--vary", "learner.q=4"], "each parameter may be given once"),
        (["--data-seeds", "0,x"], "--data-seeds must be comma-separated integers >= 0"),
        (["--data-seeds", "-1"], "--data-seeds must be comma-separated integers >= 0"),
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


def test_a_grid_sweep_draws_the_map_and_prints_each_prediction(tmp_path, capsys):
    from conftest import assert_png_has_content

    out = tmp_path / "grid"
    argv = SMALL + ["--grid", "--vary", "learner.q=3,4", "--vary", "train.lr=5,8", "--cluster", "serial"]
    assert sweep.main(argv + ["--out", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())["runs"]
    assert [(r["learner.q"], r["train.lr"]) for r in rows] == [(3, 5.0), (3, 8.0), (4, 5.0), (4, 8.0)]
    for r in rows:
        assert all((r["margin_" + n] >= 0) == r["holds_" + n] for n in report.PREDICTIONS)
    assert_png_has_content(out / "map.png")
    printed = capsys.readouterr().out
    for name in report.PREDICTIONS:
        assert f"{name} (margin; held on how many of 1 data seeds), learner.q down, train.lr across" in printed
