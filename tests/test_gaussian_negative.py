"""The Gaussian-like negative-result grid: its bookkeeping, one cell end to end, the CLI."""

import collections
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from theory_sims import gaussian_negative as gn
from theory_sims.config import LearnerConfig, TrainConfig

TINY = gn.NegativeConfig(
    k=3, dim=8, conv_patches=2, components=4, teacher_width=8, n_train=90, n_test=150, seeds=3, n_boot=50,
    learner=LearnerConfig(k=3, m=4, q=1, sigma0=0.1), train=TrainConfig(lr=2.0, steps=30, track_every=0),
)
TINY_FLIP = dataclasses.replace(TINY, noise="flip")
TINY_FLAGS = ["--k", "3", "--dim", "8", "--conv-patches", "2", "--n-train", "90", "--n-test", "150",
              "--seeds", "3", "--n-boot", "50", "--width", "32", "--max-steps", "300", "--quiet"]


def test_grid_has_64_distinct_cells_with_every_axis_balanced():
    cells = gn.grid()
    assert len(cells) == 64
    assert len({tuple(sorted(c.items())) for c in cells}) == 64
    for axis, values in [("input", ("gaussian", "mixture")), ("sampling", ("uniform", "rejection")),
                         ("teacher", ("linear", "fc", "conv", "residual")), ("margin", (False, True)),
                         ("label_noise", (False, True))]:
        counts = collections.Counter(c[axis] for c in cells)
        assert set(counts) == set(values)
        assert set(counts.values()) == {64 // len(values)}


def test_quick_cells_are_grid_cells_covering_every_teacher_and_every_level_of_every_axis():
    """--quick: 10 distinct cells of the grid; every teacher on Gaussian inputs and every MLP teacher on
    mixtures clean; each MLP teacher once with noise; the conv teacher's costly CNN once."""
    full = {tuple(sorted(c.items())) for c in gn.grid()}
    quick = gn.grid(quick=True)
    assert len(quick) == 10 == len({tuple(sorted(c.items())) for c in quick})
    assert all(tuple(sorted(c.items())) in full for c in quick)
    clean = {(c["input"], c["teacher"]) for c in quick if not (c["margin"] or c["label_noise"])}
    assert clean == {("gaussian", t) for t in ("linear", "fc", "conv", "residual")} | {
        ("mixture", t) for t in ("linear", "fc", "residual")}
    assert sorted(c["teacher"] for c in quick if c["label_noise"]) == ["fc", "linear", "residual"]
    assert [c["teacher"] for c in quick].count("conv") == 1
    for axis in ("input", "sampling", "margin", "label_noise"):
        assert {c[axis] for c in quick} == {c[axis] for c in gn.grid()}


def test_task_config_maps_cells_to_tasks():
    noisy = dict(input="mixture", sampling="rejection", teacher="conv", margin=True, label_noise=True)
    conv = gn.task_config(TINY_FLIP, noisy)
    assert (conv.patches, conv.patch_dim, conv.margin, conv.label_noise) == (2, 4, TINY.margin, TINY.label_noise)
    assert conv.logit_noise == 0.0
    logit = gn.task_config(TINY, noisy)  # the default reading: noise in every label, none flipped
    assert (logit.label_noise, logit.logit_noise) == (0.0, TINY.logit_noise)
    assert (conv.input, conv.sampling, conv.components) == ("mixture", "rejection", 4)
    fc = gn.task_config(TINY, dict(input="gaussian", sampling="uniform", teacher="fc", margin=False,
                                   label_noise=False))
    assert (fc.patches, fc.patch_dim, fc.margin, fc.label_noise) == (1, 8, 0.0, 0.0)


@pytest.fixture(scope="module")
def cell_result():
    cell = dict(input="gaussian", sampling="rejection", teacher="fc", margin=True, label_noise=True)
    return gn.run_cell(TINY_FLIP, cell)


def test_cell_result_is_consistent(cell_result):
    r = cell_result
    assert len(r["individual_acc"]) == len(r["train_acc"]) == 3
    assert r["individual_mean"] == pytest.approx(np.mean(r["individual_acc"]))
    assert r["gain"] == pytest.approx(r["ensemble_acc"] - r["individual_mean"])
    lo, hi = r["gain_ci"]
    assert lo <= hi and -1 <= lo and hi <= 1
    assert r["train_label_noise"] == pytest.approx(TINY.label_noise)  # exactly round(0.1 * 90) flips
    assert r["train_acc_mean"] > 1 / TINY.k  # it learned something


def test_a_cell_is_reproducible_and_cells_differing_in_sampling_share_the_teacher(cell_result):
    again = gn.run_cell(TINY_FLIP, cell_result["cell"])
    assert again["individual_acc"] == cell_result["individual_acc"]
    assert again["gain_ci"] == cell_result["gain_ci"]
    a = dict(input="gaussian", sampling="uniform", teacher="residual", margin=False, label_noise=False)
    b = dict(a, sampling="rejection", margin=True, label_noise=True)
    teacher = lambda cell: gn.GaussianTask(gn.task_config(TINY, cell), seed=np.random.SeedSequence(  # noqa: E731
        [TINY.seed, 0, gn.TEACHERS.index(cell["teacher"])])).teacher.weights
    for wa, wb in zip(teacher(a), teacher(b)):
        np.testing.assert_array_equal(wa, wb)


def test_summary_counts_cells_above_the_threshold():
    cells = [{"cell": dict(input="gaussian", sampling="uniform", teacher=t, margin=False, label_noise=False),
              "gain": g} for t, g in zip(("linear", "fc", "conv"), (0.0, 0.005, 0.03))]
    s = gn.summarise(cells)
    assert s["fraction_at_or_below_threshold"] == pytest.approx(2 / 3)
    assert s["cells_above_threshold"] == ["gaussian/uniform/conv"]
    assert s["max_gain"] == 0.03


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The quick grid of TINY_FLAGS against a multiview results file: its folder."""
    tmp = tmp_path_factory.mktemp("gn")
    mv = tmp / "mv.json"
    mv.write_text(json.dumps({
        "individual": {"test_acc": [0.9, 0.92], "single_view_acc": [0.6, 0.7], "multi_view_acc": [1.0, 1.0]},
        "ensemble": {"test_acc": 0.99, "single_view_acc": 0.95, "multi_view_acc": 1.0},
    }))
    out = tmp / "run"
    assert gn.main(TINY_FLAGS + ["--quick", "--out", str(out), "--multiview-results", str(mv)]) == 0
    return out, mv


def test_cli_end_to_end_with_a_multiview_results_file(cli_run):
    out, _ = cli_run
    res = json.loads((out / "results.json").read_text())
    assert len(res["cells"]) == len(gn.QUICK)
    for entry in res["cells"]:
        assert set(entry) >= {"cell", "individual_acc", "ensemble_acc", "gain", "gain_ci"}
    assert res["multiview"]["single_view_acc"]["gain"] == pytest.approx(0.95 - 0.65)
    rows = (out / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + len(gn.QUICK) and rows[0].startswith("input,sampling,teacher")
    for name in ("gains_heatmap.png", "gains_vs_multiview.png", "gains_heatmap.pdf"):
        assert (out / name).exists()
    for png in out.glob("*.png"):
        img = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert img.shape[0] > 100 and img.std() > 5


def test_report_md_puts_the_run_on_one_page(cli_run):
    """report.md: the command as typed, the grid's table and verdict lines, and exactly the figures written."""
    import re

    from theory_sims.figures import GAUSSIAN_NEGATIVE_FIGURES

    out, mv = cli_run
    text = (out / "report.md").read_text()
    assert (f"python -m theory_sims.gaussian_negative {' '.join(TINY_FLAGS)} --quick --out {out} "
            f"--multiview-results {mv}") in text
    for heading in ("## The grid", "## The verdict", "## Time", "## Figures"):
        assert heading in text
    verdict = text.split("## The verdict")[1].split("## ")[0]
    assert f"of {len(gn.QUICK)} cells; median" in verdict and "multi-view data (" in verdict
    embedded = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    written = {p.name for p in out.glob("*.png")}
    assert {name for _, name in embedded} == written == set(GAUSSIAN_NEGATIVE_FIGURES) - {"gain_vs_width.png"}
    assert all(caption == GAUSSIAN_NEGATIVE_FIGURES[name] for caption, name in embedded)


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in ("timing_s", "wall_s")}
    return [_without_timings(v) for v in obj] if isinstance(obj, list) else obj


def test_config_re_creates_the_run_and_flags_beside_it_override(cli_run, tmp_path, capsys):
    """--config RUN: the run's settings, --quick and multi-view comparison included (the same config.json,
    the same results but for timings); a flag beside it overrides its setting; another command's
    config is one line naming --config."""
    out, _ = cli_run
    again = tmp_path / "again"
    assert gn.main(["--config", str(out), "--out", str(again), "--quiet", "--no-figures", "--cluster", "serial"]) == 0
    assert (again / "config.json").read_text() == (out / "config.json").read_text()
    assert (_without_timings(json.loads((again / "results.json").read_text()))
            == _without_timings(json.loads((out / "results.json").read_text())))
    args = gn.build_parser().parse_args(["--config", str(out), "--seeds", "4"])
    cfg = gn.config_from_args(args, {k: v for k, v in json.loads((out / "config.json").read_text()).items()
                                     if k not in ("quick", "cells", "multiview_results", "no_multiview")})
    assert cfg.seeds == 4 and cfg.dim == 8 and cfg.k == cfg.learner.k == 3 and cfg.standard.width == 32
    (tmp_path / "c.json").write_text('{"cells": 1}')
    for where, message in ((tmp_path / "c.json", "not the config of an earlier gaussian_negative run"),
                           (tmp_path / "nowhere", "cannot read")):
        with pytest.raises(SystemExit) as exc:
            gn.main(["--config", str(where), "--out", str(tmp_path / "never")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--config {where}" in err and message in err
        assert not (tmp_path / "never").exists()


def test_logit_noise_is_the_default_and_a_config_from_before_noise_existed_reads_back_as_flipped(cli_run):
    """The 'yes' cells' noise is part of the data by default (--noise logit); runs written before the flag
    existed flipped training labels, and --config re-creates that, while a saved 'logit' stays logit."""
    out, _ = cli_run
    assert gn.NegativeConfig().noise == "logit"
    saved = {k: v for k, v in json.loads((out / "config.json").read_text()).items()
             if k not in ("quick", "cells", "multiview_results", "no_multiview")}
    args = gn.build_parser().parse_args(["--config", str(out)])
    assert saved["noise"] == "logit" == gn.config_from_args(args, saved).noise
    assert gn.config_from_args(args, {k: v for k, v in saved.items() if k != "noise"}).noise == "flip"
    assert gn.config_from_args(gn.build_parser().parse_args([]), None).noise == "logit"


def test_a_config_from_before_the_cnn_pooled_its_patches_reads_back_as_concatenating(cli_run):
    """Runs written before ``StandardConfig.pool`` existed trained a CNN that concatenated its patches'
    features: their config.json has no ``pool``, and --config re-creates that learner, not the new default."""
    out, _ = cli_run
    saved = {k: v for k, v in json.loads((out / "config.json").read_text()).items()
             if k not in ("quick", "cells", "multiview_results", "no_multiview")}
    args = gn.build_parser().parse_args(["--config", str(out)])
    assert gn.config_from_args(args, saved).standard.pool == "mean" == gn.StandardConfig().pool
    old = {**saved, "standard": {k: v for k, v in saved["standard"].items() if k != "pool"}}
    assert gn.config_from_args(args, old).standard.pool == "concat"


@pytest.mark.parametrize(
    "flags, message",
    [(["--seeds", "1"], "seeds must be an integer >= 2, got 1"),
     (["--label-noise", "1.5"], "--label-noise must be a number in (0.0, 1.0), got 1.5"),
     (["--margin", "0"], "margin must be a number > 0.0, got 0.0"),
     (["--conv-patches", "3"], "--conv-patches must divide dim=64, got 3"),
     (["--multiview-results", "/nonexistent/results.json"], "--multiview-results /nonexistent/results.json: cannot be read"),
     (["--learner", "theory", "--m", "0"], "m must be an integer >= 1, got 0"),
     (["--learner", "theory", "--width", "50"], "--width does nothing unless --learner standard"),
     (["--m", "5"], "--m does nothing unless --learner theory"),
     (["--steps", "5"], "--steps does nothing unless --learner theory"),
     (["--noise", "gumbel"], "--noise must be one of 'flip', 'logit', got 'gumbel'"),
     (["--noise", "logit", "--label-noise", "0.2"], "--label-noise does nothing unless --noise flip"),
     (["--noise", "flip", "--logit-noise", "0.2"], "--logit-noise does nothing unless --noise logit"),
     (["--noise", "logit", "--logit-noise", "0"], "--logit-noise must be a number > 0.0, got 0.0"),
     (["--widths", "abc"], "--widths must be integers >= 1 separated by commas"),
     (["--widths", "0,16"], "--widths must be distinct integers >= 1"),
     (["--widths", "16,16"], "--widths must be distinct integers >= 1"),
     (["--widths", ""], "--widths must be integers >= 1"),
     (["--widths", "16", "--learner", "theory"], "--widths must be given with --learner standard"),
     (["--widths", "16,32", "--width", "64"], "--width does nothing with --widths"),
     (["--widths", "16", "--multiview-results", "x.json"], "--multiview-results with --widths")],
)
def test_bad_flags_exit_2_with_one_line(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        gn.main(flags + ["--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "never").exists()  # nothing written before the flags are checked


GOOD_MV = {"individual": {"test_acc": [0.9, 0.92], "single_view_acc": [0.6, 0.7], "multi_view_acc": [1.0, 1.0]},
           "ensemble": {"test_acc": 0.99, "single_view_acc": 0.95, "multi_view_acc": 1.0}}


@pytest.mark.parametrize("part, key, value, message", [
    ("ensemble", "single_view_acc", 7.0, "ensemble.single_view_acc must be an accuracy in [0, 1], got 7.0"),
    ("individual", "test_acc", [], "individual.test_acc must be a non-empty list of accuracies in [0, 1], got []"),
    ("individual", "multi_view_acc", [1, "x"], "individual.multi_view_acc must be a non-empty list"),
    ("ensemble", "test_acc", [0.9], "ensemble.test_acc must be an accuracy in [0, 1]"),
])
def test_a_multiview_results_file_with_bad_accuracies_is_refused(part, key, value, message, capsys, tmp_path):
    """The reference gains are read from a file: a value that is no accuracy is named in one
    line, not turned into "+632.57 pts" or "+nan pts"."""
    bad = json.loads(json.dumps(GOOD_MV))
    bad[part][key] = value
    mv = tmp_path / "mv.json"
    mv.write_text(json.dumps(bad))
    with pytest.raises(SystemExit) as exc:
        gn.main(["--multiview-results", str(mv), "--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--multiview-results {mv}: {message}" in err
    assert not (tmp_path / "never").exists()


def test_cli_help_and_a_bad_flag_in_a_subprocess():
    helped = subprocess.run([sys.executable, "-m", "theory_sims.gaussian_negative", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "--quick" in helped.stdout and "label noise" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "theory_sims.gaussian_negative", "--n-train", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_gain_heatmap_marks_the_cells_the_grid_did_not_run():
    from theory_sims import figures

    cells = [{"cell": {"input": "gaussian", "teacher": t, "sampling": "uniform", "margin": m, "label_noise": False},
              "gain": 0.01} for t, m in (("fc", False), ("conv", True))]  # 2 of the 4 (row, column) cells
    fig = figures.gain_heatmap(cells)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("not run") == 2 and texts.count("+1.0") == 2
    assert "multi-view" not in figures.gains_vs_multiview(
        [{**c, "gain_ci": [0.0, 0.02]} for c in cells], None).axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_gains_figure_names_the_runs_noise():
    import matplotlib.pyplot as plt

    from theory_sims import figures

    cells = [{"cell": {"input": "gaussian", "teacher": "fc", "sampling": "uniform", "margin": False, "label_noise": n},
              "gain": 0.01, "gain_ci": [0.0, 0.02]} for n in (False, True)]
    flip, logit = (dataclasses.replace(TINY_FLIP, label_noise=0.25), dataclasses.replace(TINY, logit_noise=0.3))
    for noise, text in ((gn.noise_words(flip), "a Gaussian cell, 25% of the training labels flipped"),
                        (gn.noise_words(logit), "a Gaussian cell, labels from the teacher's logits + Gumbel noise of "
                                                "scale 0.3"),
                        (None, "a Gaussian cell, label noise")):
        fig = figures.gains_vs_multiview(cells, None, noise)
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels[1] == text, labels
        plt.close(fig)


NOISY_CELL = dict(input="gaussian", sampling="uniform", teacher="fc", margin=False, label_noise=True)


def test_under_logit_noise_the_test_labels_follow_the_training_labels_noisy_rule():
    """--noise logit: training and test labels are both drawn from the teacher's logits plus Gumbel
    noise, so the share of labels the noise changed is the same in both (at the stated scale) and the
    models are judged on the noisy test labels; --noise flip changes the training labels only."""
    small = dataclasses.replace(TINY_FLIP, n_train=3000, n_test=3000, standard=gn.StandardConfig(width=16, max_steps=40))
    logit = dataclasses.replace(small, noise="logit", logit_noise=0.3)
    res = gn.run_cell(logit, NOISY_CELL)
    se = (2 * 0.3 * 0.7 / 3000) ** 0.5
    assert 0.1 < res["train_label_noise"] < 0.6 and abs(res["train_label_noise"] - res["test_label_noise"]) < 4 * se
    clean = gn.run_cell(logit, dict(NOISY_CELL, label_noise=False))
    assert clean["train_label_noise"] == clean["test_label_noise"] == 0.0
    flip = gn.run_cell(small, NOISY_CELL)
    assert flip["train_label_noise"] == pytest.approx(TINY.label_noise, abs=1e-3) and flip["test_label_noise"] == 0.0


def test_widths_run_every_cell_at_each_width_with_the_multiview_contrast(tmp_path):
    cfg = dataclasses.replace(TINY, widths=(8, 16), seeds=2, standard=gn.StandardConfig(max_steps=40))
    cells = gn.grid(quick=True)[:2]
    results, reference = gn.run(cfg, cells, tmp_path / "jobs", reference=True, log=lambda *a: None)
    assert [r["width"] for r in results] == [8, 8, 16, 16]
    assert [r["cell"] for r in results] == cells * 2
    assert [m["width"] for m in reference["by_width"]] == [8, 16]
    # and the theory's learner on the same multi-view data, once: the contrast where the paper's gain lives
    assert reference["theory"] == gn.multiview_reference(cfg.seeds)
    # a cell at width 16 is the cell of a run at --width 16
    one = gn.run_cell(dataclasses.replace(cfg, widths=(), standard=dataclasses.replace(cfg.standard, width=16)), cells[0])
    assert one["individual_acc"] == results[2]["individual_acc"]
    by = gn.widths_summary(cfg, results, reference)
    assert [e["width"] for e in by] == [8, 16] and all(e["cells"] == 2 for e in by)
    assert by[1]["multiview_gain_single_view"] == reference["by_width"][1]["single_view_acc"]["gain"]
    assert by[1]["multiview_single_test_acc"] == reference["by_width"][1]["test_acc"]["individual_mean"]
    assert "its single models' test accuracy" in gn.format_widths(by)  # a contrast at chance shows as such




def test_gain_on_a_subset_is_the_ensembles_accuracy_there_minus_the_models_mean():
    """Two models of two classes on four samples, worked by hand: the ensemble averages logits."""
    logits = np.array([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]],    # predicts 0 1 0 1
                       [[0.0, 1.0], [0.0, 2.0], [3.0, 0.0], [1.0, 0.0]]])   # predicts 1 1 0 0
    y = np.array([0, 1, 0, 1])  # model 0: 4/4, model 1: 2/4; ensemble: 0 1 0 1 -> 4/4
    assert gn.gain_on(logits, y, np.ones(4, bool)) == pytest.approx(1.0 - 0.75)
    assert gn.gain_on(logits, y, np.array([False, False, True, False])) == 0.0  # both right there
    assert gn.gain_on(logits, y, np.array([True, False, False, True])) == pytest.approx(1.0 - 0.5)
    assert np.isnan(gn.gain_on(logits, y, np.zeros(4, bool)))


def test_nearest_training_sample_is_the_brute_force_one():
    rng = np.random.default_rng(3)
    train, test = rng.standard_normal((40, 2, 3)), rng.standard_normal((25, 2, 3))
    brute = [int(np.argmin(((train - x) ** 2).sum(axis=(1, 2)))) for x in test]
    assert gn.nearest_training_sample(train, test, chunk=7).tolist() == brute


def test_where_the_gain_is_finds_a_gain_made_beside_changed_training_labels():
    """Hand-built: models that disagree only on the test samples beside a changed training label
    (and near the teacher's boundary) gain there and nowhere else."""
    from types import SimpleNamespace as NS

    train_X = np.arange(10, dtype=np.float32).reshape(10, 1, 1)
    flipped = np.array([False] * 8 + [True, True])
    test_X = (np.arange(10, dtype=np.float32) + 0.1).reshape(10, 1, 1)  # test sample i sits beside training sample i
    margin = np.array([1.0] * 8 + [0.1, 0.1])  # the two beside the changed labels are the nearest the boundary
    y = np.zeros(10, dtype=int)
    logits = np.zeros((3, 10, 2))
    logits[:, :8, 0] = 1.0  # everyone right away from the changed labels
    logits[:, 8:, 1] = 1.0  # beside them each model is wrong ...
    logits[0, 8:, :] = [[5.0, 0.0], [5.0, 0.0]]  # ... but one, confidently right: the ensemble is right there
    out = gn.where_the_gain_is(logits, y, NS(X=train_X, flipped=flipped), NS(X=test_X, margin=margin))
    assert out["near_noisy_share"] == pytest.approx(0.2)
    assert out["gain_near_noisy"] == pytest.approx(1 - 1 / 3) and out["gain_near_clean"] == 0.0
    assert out["gain_near_boundary"] == pytest.approx(1 - 1 / 3) and out["gain_far_from_boundary"] == 0.0
    assert out["disagreement"] == pytest.approx((0.2 + 0.2 + 0.0) / 3)
    clean = gn.where_the_gain_is(logits, y, NS(X=train_X, flipped=np.zeros(10, bool)), NS(X=test_X, margin=margin))
    assert "gain_near_noisy" not in clean


def test_the_verdict_says_where_each_cell_outside_gains():
    cell = {"input": "gaussian", "sampling": "uniform", "teacher": "fc", "margin": False, "label_noise": True}
    base = {"cell": cell, "gain_ci": [0.01, 0.03], "individual_mean": 0.8, "train_acc_mean": 1.0, "disagreement": 0.1,
            "gain_near_boundary": 0.05, "gain_far_from_boundary": 0.01}
    cells = [{**base, "gain": 0.02, "gain_near_noisy": 0.06, "gain_near_clean": 0.015, "near_noisy_share": 0.11},
             {**base, "cell": {**cell, "teacher": "linear", "label_noise": False}, "gain": 0.005},
             {**base, "cell": {**cell, "teacher": "conv", "label_noise": False}, "gain": 0.03}]
    lines = gn.outside_lines(cells)
    assert len(lines) == 3 and lines[1].startswith("  gaussian/uniform/conv: +3.00")  # largest first
    assert "+6.0 beside a changed training label (11% of test), +1.5 beside clean ones" in lines[2]
    assert "+5.0 on the 20% nearest the teacher's boundary, +1.0 elsewhere" in lines[2]
    assert gn.outside_lines(cells[1:2]) == []


def test_the_individual_vs_ensemble_figure_counts_each_widths_cells_within_a_point():
    import matplotlib.pyplot as plt

    from theory_sims import figures

    cell = {"input": "gaussian", "sampling": "uniform", "teacher": "fc", "margin": False, "label_noise": False}
    cells = lambda gains: [{"cell": {**cell, "teacher": t}, "gain": g, "ensemble_acc": 0.8 + g,  # noqa: E731
                            "individual_acc": [0.79, 0.81]} for t, g in zip(("fc", "conv", "linear"), gains)]
    ref = {key: {"individual_mean": 0.6, "ensemble": 0.9} for key in ("single_view_acc", "test_acc")}
    fig = figures.individual_vs_ensemble([(256, cells([0.03, 0.02, 0.0]), ref), (1024, cells([0.005, 0.02, 0.0]), ref)],
                                         theory=ref)
    titles = [ax.get_title() for ax in fig.axes]
    assert "width 256" in titles[0] and "in 1 of 3 cells" in titles[0] and "in 2 of 3 cells" in titles[1]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["gaussian uniform fc", "gaussian uniform conv", "gaussian uniform linear",
                      "multi-view data: single-view samples", "multi-view data: test mixture",
                      "multi-view data: single-view samples, theory's learner",
                      "multi-view data: test mixture, theory's learner"]
    plt.close(fig)


def test_the_figure_shows_the_theorys_learner_in_purple_and_only_the_grids_own_learner_in_green():
    """The multi-view reference is the theory's learner: beside a standard-learner grid without --widths
    it is the purple contrast, never the green 'same learner' one; beside a theory-learner grid it is green."""
    results = [{"width": 8, "cell": {}}, {"width": 16, "cell": {}}]
    theory_ref = {"source": "the theory's learner, measured in this run"}
    panels, purple = gn.figure_panels(TINY, results, theory_ref)
    assert panels == [(None, results, None)] and purple is theory_ref
    panels, purple = gn.figure_panels(dataclasses.replace(TINY, learner_kind="theory"), results, theory_ref)
    assert panels == [(None, results, theory_ref)] and purple is None
    by_width = {"by_width": [{"width": 8}, {"width": 16}], "theory": theory_ref}
    panels, purple = gn.figure_panels(dataclasses.replace(TINY, widths=(8, 16)), results, by_width)
    assert [(w, cells, ref) for w, cells, ref in panels] == [(8, results[:1], {"width": 8}),
                                                           (16, results[1:], {"width": 16})]
    assert purple is theory_ref
    assert gn.figure_panels(TINY, results, None) == ([(None, results, None)], None)


def test_the_gain_against_width_figure_writes_the_theorys_learner_beside_the_same_learners_lines():
    import matplotlib.pyplot as plt

    from theory_sims import figures

    by_width = [{"width": w, "gains": [g, g / 2], "fraction_at_or_below_threshold": 1.0,
                 "multiview_gain_single_view": 0.001, "multiview_gain_test": 0.002} for w, g in ((8, 0.02), (16, 0.01))]
    theory = {"single_view_acc": {"gain": 0.4315, "individual_mean": 0.569, "ensemble": 1.0}}
    fig = figures.gain_vs_width(by_width, None, theory)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 1 and "the theory's learner: gain +43.15 on single-view samples" in texts[0]
    assert "0.569 single, 1.000 ensemble" in texts[0]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[1] == "multi-view data, the same learner: single-view samples"
    assert not figures.gain_vs_width(by_width).axes[0].texts
    plt.close("all")
