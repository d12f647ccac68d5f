"""The view-learning experiment: a small end-to-end run, its files, its table and its flags."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from theory_sims import experiments as ex
from theory_sims import report
from theory_sims import view_learning as vl
from theory_sims.tracking import second_views

# A small run whose learner does not follow the main job's defaults (a race in the power phase
# takes more steps than 400 at this size): the earlier defaults' varrho, sigma0 and noise.
SMALL = [
    "--k", "4", "--d", "40", "--patches", "16", "--n-train", "60", "--n-test", "80",
    "--seeds", "3", "--students", "2", "--steps", "400", "--kd-steps", "30", "--rf-steps", "30",
    "--varrho", "0.77", "--sigma0", "0.12", "--noise-std", "0.0245",
    "--lr", "50", "--kd-lr", "5", "--quiet", "--ntk", "--ntk-steps", "20",
]


@pytest.fixture(scope="module")
def small():
    """The SMALL run's config and its data (training set, test sets)."""
    cfg = vl.config_from_args(vl.build_parser().parse_args(SMALL))
    return cfg, *vl.make_data(cfg)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vl")
    assert vl.main(SMALL + ["--out", str(out)]) == 0
    return out


def test_run_folder_holds_config_results_tables_and_figures(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    for name in ("config.json", "results.json", "table.csv", "per_seed.csv", "views_used.png", "training_length.png",
                 "lottery.png",
                 "views_used_kd.png", "lambda_trajectories.png", "accuracy.png", "correlations.png", "accuracy.pdf"):
        assert name in names
    assert not [n for n in names if n.endswith(".tmp")]
    for png in run_dir.glob("*.png"):
        img = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 5  # not a blank canvas


def test_report_md_puts_the_run_on_one_page(run_dir):
    """report.md: the command as typed, the machine, the table, the statements with their verdicts,
    the mechanism, and every figure of the folder embedded with a caption (no link to a missing file)."""
    import re

    from theory_sims.figures import VIEW_LEARNING_FIGURES

    text = (run_dir / "report.md").read_text()
    assert f"python -m theory_sims.view_learning {' '.join(SMALL)} --out {run_dir}" in text
    assert "- machine: " in text and "cores" in text
    for heading in ("## The table", "## The statements", "## The mechanism", "## Figures"):
        assert heading in text
    assert "single-view" in text.split("## The table")[1].split("## ")[0]
    assert re.search(r"\[(holds|FAILS)\]", text.split("## The statements")[1].split("## ")[0])
    embedded = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    pngs = {p.name for p in run_dir.glob("*.png")}
    assert {name for _, name in embedded} == pngs  # every figure, and only those written
    assert all(caption == VIEW_LEARNING_FIGURES[name] for caption, name in embedded)


def test_results_json_has_the_documented_keys(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    ind = res["individual"]
    for key in ("test_acc", "multi_view_acc", "single_view_acc", "single_view_clean_acc", "views_used", "lambda",
                "view_acc", "lambda_learned"):
        assert len(ind[key]) == 3
    for key in ("views_used", "lambda", "view_acc", "lambda_learned"):
        assert np.asarray(ind[key]).shape == (3, 4, 2)
    for row in ("kd", "self_kd", "long_single"):  # stacks: one value per model
        for key in ("test_acc", "multi_view_acc", "single_view_acc"):
            assert len(res[row][key]) == 2 and all(0.0 <= v <= 1.0 for v in res[row][key])
    for row in ("ensemble", "average", "kd_ensemble"):  # one output: one value
        for key in ("test_acc", "multi_view_acc", "single_view_acc", "single_view_clean_acc"):
            assert 0.0 <= res[row][key] <= 1.0
        assert np.asarray(res[row]["views_used"]).shape == (1, 4, 2)
    for row in ("kd", "self_kd", "average"):
        assert "views_used" in res[row]
    mech = res["mechanism"]
    assert set(mech) >= {"calibration", "lottery", "lambda_init", "kd_inheritance", "self_kd_inheritance",
                         "memorisation", "noise_response"}
    assert sum(c["triples"] for c in mech["calibration"]) == 3 * 4 * 2
    assert mech["lottery"]["pairs"] == 3 * 4 and np.asarray(mech["lambda_init"]).shape == (3, 4, 2)
    assert set(mech["noise_response"]) == {"individual", "kd", "self_kd"}
    assert res["setting"] == {"k": 4, "views": 2, "mu": 0.1, "products": {"train": "float32", "distill": "float32"}}
    for family in ("random_features", "ntk"):
        for row in ("individual", "ensemble", "kd", "self_kd", "average", "kd_ensemble"):
            assert set(res[family][row]) >= {"test_acc", "multi_view_acc", "single_view_acc"}
    assert np.asarray(res["wide_single"]["views_used"]).shape == (1, 4, 2)
    assert np.asarray(res["average"]["views_used"]).shape == (1, 4, 2)
    assert res["timing_s"]["total"] > 0
    assert {v["kind"] for v in res["predictions"].values()} == {"theorem", "random features", "observation"}
    # each verdict, worked out from the rows by the paper's bounds: the error over D in units of mu,
    # held to the bound widened by the tolerance 0.5 / k = 0.125 (narrowed for a gain that must exist)
    mu, tol = res["setting"]["mu"], 0.5 / 4
    err = lambda row: (1 - np.mean(row["test_acc"])) / mu  # noqa: E731
    rf = res["random_features"]
    single, train = err(res["individual"]), min(res["individual"]["train_acc"])
    expected = {  # name: (kind, value, lo held, hi held)
        "single": ("theorem", single, 0.49 - tol, 0.51 + tol),
        "ensemble": ("theorem", err(res["ensemble"]), None, 0.01 + tol),
        "kd": ("theorem", err(res["kd"]), None, 0.01 + tol),
        "self_kd": ("theorem", err(res["self_kd"]), None, 0.26 + tol),
        "rf_ensemble": ("random features", err(rf["individual"]) - err(rf["ensemble"]), tol, None),
        "rf_kd": ("random features", err(rf["individual"]) - err(rf["kd"]), None, tol),
        "rf_average": ("random features", err(rf["individual"]) - err(rf["average"]), tol, None),
        "average": ("observation", single - err(res["average"]), None, tol),
        "kd_ensemble": ("observation", err(res["kd"]) - err(res["kd_ensemble"]), None, tol),
    }
    assert list(res["predictions"]) == list(expected)
    for name, (kind, value, lo, hi) in expected.items():
        got = res["predictions"][name]
        assert got["kind"] == kind and got["value"] == pytest.approx(value) and got["tolerance"] == pytest.approx(tol)
        assert got["lo_held"] == (None if lo is None else pytest.approx(lo))
        assert got["hi_held"] == (None if hi is None else pytest.approx(hi))
        slack = ([] if lo is None else [value - lo]) + ([] if hi is None else [hi - value])
        margin = min(slack + ([train - 1.0] if name == "single" and train < 1.0 else []))  # the fit is a gate
        assert got["margin"] == pytest.approx(margin) and got["holds"] == (margin >= 0), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["data"]["k"] == 4 and cfg["seeds"] == 3 and cfg["learner"]["k"] == 4


def test_single_models_are_recorded_at_multiples_of_their_fit_step(run_dir, small):
    """results.json holds what each single model had learned at 1x and 3x its own fit step;
    each snapshot is that model's state at that step (here: a stack re-trained to that step)."""
    cfg, train_set, tests = small
    res = json.loads((run_dir / "results.json").read_text())
    ind = res["individual"]
    assert list(ind["by_length"]) == ["1x", "3x"]
    fit = np.asarray(ind["fit_step"])
    assert (fit >= 0).all()
    for name, mult in (("1x", 1), ("3x", 3)):
        row = ind["by_length"][name]
        steps = np.asarray(row["step"])
        # the step itself, or the model's last step where training stopped before it
        assert ((steps == mult * fit) | (steps < mult * fit)).all() and (steps >= fit).all()
        views = np.asarray(row["views_used"], dtype=bool)
        assert views.shape == (3, 4, 2)
        np.testing.assert_allclose(row["views_per_class"], views.sum(-1).mean(-1))
        assert row["mean_single_view_acc"] == pytest.approx(np.mean(row["single_view_acc"]))
    last = ind["by_length"]["3x"]
    ev = ex.Evaluator(train_set, tests)
    s = 1  # seed 1 re-trained alone, by steps, to its recorded 3x step
    at = ind["by_length"]["3x"]["step"][s]
    again = ex.fit(train_set, [cfg.seed * 1000 + s], cfg.learner,
                   dataclasses.replace(cfg.train, stop="steps", steps=at, snapshots=()))
    assert ev.models(again)["single_view_acc"][0] == pytest.approx(ind["by_length"]["3x"]["single_view_acc"][s])
    assert len(last["single_view_acc"]) == 3


def test_training_accuracy_is_recorded_for_every_trained_row(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    for row, count in (("individual", 3), ("kd", 2), ("self_kd", 2), ("long_single", 2), ("average", 1)):
        acc, fit = res[row]["train_acc"], res[row]["fit_step"]
        assert len(acc) == count and all(0.0 <= a <= 1.0 for a in acc)
        assert len(fit) == count and all(isinstance(f, int) and f >= -1 for f in fit)  # -1: never at 100%
    assert len(res["random_features"]["kd"]["train_acc"]) == 2


def test_learned_steps_agree_with_the_views_and_the_fit_steps(run_dir):
    """Every learned view has the step it was first learned at; second_views recounts them."""
    res = json.loads((run_dir / "results.json").read_text())
    for row, count in (("individual", 3), ("kd", 2), ("self_kd", 2), ("long_single", 2), ("wide_single", 1)):
        steps = np.asarray(res[row]["learned_step"])
        views = np.asarray(res[row]["lambda_learned"], dtype=bool)
        assert steps.shape == (count, 4, 2) and steps.dtype.kind == "i"
        assert (steps[views] >= 0).all()  # Lambda over the threshold at the end: crossed it at some tracked step
        assert res[row]["second_views"] == second_views(steps, np.asarray(res[row]["fit_step"]))


def test_wide_single_is_one_single_model_with_seeds_times_the_neurons(run_dir, small):
    """The row that tests the paper's reading of training the average: one model of width S*m,
    trained like the single models from the first seed."""
    res = json.loads((run_dir / "results.json").read_text())
    cfg, train_set, tests = small
    learner = dataclasses.replace(cfg.learner, m=cfg.learner.m * cfg.seeds)
    wide = ex.fit(train_set, [0], learner, cfg.train)
    assert wide.model.W.shape[2] == cfg.learner.m * 3
    scores = ex.Evaluator(train_set, tests).models(wide)
    for key in ("test_acc", "single_view_acc"):
        assert res["wide_single"][key] == pytest.approx(scores[key])
    assert "single model as wide as the average" in (run_dir / "table.csv").read_text()


def test_average_views_are_those_of_the_whole_network(run_dir, small):
    """The trained average is one network of S*m neurons per class: its Lambda is the max over
    every member's neurons, so Lambda counts a view when any member's neuron crossed the threshold,
    and the views it uses are read off its output (the members' mean)."""
    res = json.loads((run_dir / "results.json").read_text())
    cfg, train_set, _ = small
    avg_cfg = dataclasses.replace(cfg.train, loss="average", group_size=cfg.seeds)
    average = ex.fit(train_set, range(cfg.seeds), cfg.learner, avg_cfg)
    per_member = average.views_learned()  # (S, k, V)
    assert np.array_equal(np.asarray(res["average"]["lambda_learned"])[0], per_member.any(axis=0))
    np.testing.assert_allclose(np.asarray(res["average"]["lambda"])[0],
                               average.history["lambda"][-1].max(axis=0), rtol=1e-6)
    assert res["average"]["fit_step"] == [int(average.fit_step[0])]


def test_ntk_rows_follow_the_random_feature_rows(run_dir):
    names = [line.split(",")[0] for line in (run_dir / "table.csv").read_text().splitlines()[1:]]
    assert names.index("random features: single model") < names.index("NTK: single model")
    assert "NTK: training the average" in names and "NTK: single model as wide as the average" not in names


def test_unfitted_names_the_rows_that_stop_short_of_the_training_set():
    results = {
        "individual": {"train_acc": [1.0, 1.0]},
        "kd": {"train_acc": [1.0, 0.265, 0.31]},
        "average": {"train_acc": [1.0]},
        "random_features": {"individual": {"train_acc": [0.4]}},  # not expected to fit: no warning
    }
    assert report.unfitted(results) == [
        "knowledge distillation: 2 of 3 models end below 100% training accuracy (0.265, 0.310)"
    ]
    results["kd"]["train_acc"] = [1.0, 1.0, 1.0]
    assert report.unfitted(results) == []


class _Stack:
    """A stand-in for a trained stack: its logits on each input array are given by hand."""

    def __init__(self, logits_by_input):
        self.table = logits_by_input

    def logits(self, X, backend, device):
        return next(z for x, z in self.table if x is X)


def test_test_accuracy_is_the_mixture_of_multi_and_single_view(run_dir):
    """Two models with hand-made predictions, mu = 0.2: model 0 gets 3 of 4 multi-view samples and
    1 of 2 single-view ones right (test accuracy 0.8 * 0.75 + 0.2 * 0.5 = 0.7), model 1 2 of 4 and 2
    of 2 (0.8 * 0.5 + 0.2 = 0.6); their ensemble follows model 0 on multi-view samples (its logits
    are larger there) and model 1 on single-view ones (0.8 * 0.75 + 0.2 * 1 = 0.8)."""
    from types import SimpleNamespace as NS

    def votes(pred, scale):  # logits (n, 3) whose argmax is pred
        return scale * np.eye(3)[pred]

    multi = NS(X=np.zeros((4, 1)), y=np.array([0, 1, 2, 0]))
    single = NS(X=np.zeros((2, 1)), y=np.array([1, 2]))
    clean = NS(X=np.zeros((2, 1)), y=np.array([1, 2]))
    tests = ex.TestSets(multi=multi, single=single, mu=0.2, single_clean=clean)
    stack = _Stack([
        (multi.X, np.stack([votes([0, 1, 2, 1], 2.0), votes([0, 0, 0, 0], 1.0)])),
        (single.X, np.stack([votes([1, 0], 1.0), votes([1, 2], 3.0)])),
        (clean.X, np.stack([votes([1, 2], 1.0), votes([0, 2], 1.0)])),
    ])
    ev = ex.Evaluator(None, tests)
    got = ev.models(NS(model=stack))
    assert got["multi_view_acc"] == pytest.approx([0.75, 0.5]) and got["single_view_acc"] == pytest.approx([0.5, 1.0])
    assert got["test_acc"] == pytest.approx([0.7, 0.6])
    assert got["single_view_clean_acc"] == pytest.approx([1.0, 0.5])
    ens = ev.ensemble(NS(model=stack))
    assert ens["multi_view_acc"] == pytest.approx(0.75) and ens["single_view_acc"] == pytest.approx(1.0)
    assert ens["test_acc"] == pytest.approx(0.8)
    # and in the run: the rows hold the mixture of their own multi- and single-view accuracy
    res = json.loads((run_dir / "results.json").read_text())
    mu = json.loads((run_dir / "config.json").read_text())["data"]["missing"]
    assert res["setting"]["mu"] == mu
    for row in (res["individual"], res["kd"], res["ensemble"]):
        expected = (1 - mu) * np.asarray(row["multi_view_acc"]) + mu * np.asarray(row["single_view_acc"])
        np.testing.assert_allclose(row["test_acc"], expected)


def test_table_rows_and_format():
    results = {
        key: {"test_acc": 0.5, "multi_view_acc": 0.6, "single_view_acc": 0.4}
        for key in ("ensemble", "kd_ensemble", "average")
    }
    per_model = {"test_acc": [0.4, 0.6], "multi_view_acc": [0.5, 0.7], "single_view_acc": [0.2, 0.4],
                 "single_view_clean_acc": [0.5, 0.7], "views_used": np.ones((2, 3, 2), bool)}
    results["individual"] = per_model
    results["kd"] = per_model
    results["self_kd"] = per_model
    rows = report.table_rows(results)
    assert [r["row"] for r in rows][:2] == ["single model", "ensemble"]
    assert rows[0]["single_view_acc"] == pytest.approx(0.3) and rows[0]["single_view_acc_std"] == pytest.approx(0.1)
    assert rows[0]["single_view_clean_acc"] == pytest.approx(0.6) and rows[1]["single_view_clean_acc"] is None
    assert rows[0]["views_per_class"] == 2.0
    text = report.format_table(rows)
    assert "0.300 ± 0.100" in text and "training the average" in text and "no noise" in text


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--views", "0"], "views must be an integer >= 1"),
        (["--missing", "1.5"], "missing must be a number in [0.0, 1.0]"),
        (["--seeds", "0"], "seeds must be an integer >= 2"),
        (["--seeds", "1"], "seeds must be an integer >= 2"),
        (["--out", ""], "--out must name a folder, got an empty string"),
        (["--stop", "fit", "--fit-multiple", "5"], "--fit-multiple does nothing unless --stop converge"),
        (["--extra-steps", "5"], "--extra-steps does nothing unless --stop fit"),
        (["--kd-loss", "kd", "--kd-weight", "5"], "--kd-weight does nothing unless --kd-loss kd_paper"),
        (["--no-random-features", "--rf-steps", "5"], "--rf-steps does nothing with --no-random-features"),
        (["--ntk-lr", "5"], "--ntk-lr does nothing without --ntk"),
        (["--students", "20"], "students must be an integer in [1, 10]"),
        (["--q", "0"], "q must be an integer >= 1"),
        (["--lr", "-1"], "lr must be a number > 0.0"),
        (["--ntk", "--ntk-lr", "0"], "lr must be a number > 0.0"),
        (["--kd-loss", "mse"], "invalid choice"),
        (["--kd-max-step", "-1"], "--kd-max-step must be a number >= 0.0"),
        (["--kd-weight", "-1"], "--kd-weight must be a number >= 0.0"),
        (["--kd-teacher-scale", "0"], "--kd-teacher-scale must be a number > 0.0"),
        (["--kd-loss", "kd_paper", "--kd-label-weight", "0.5"], "--kd-label-weight must be 0 with loss='kd_paper'"),
        (["--fit-multiple", "0.5"], "--fit-multiple must be a number >= 1.0"),
        (["--loss-target", "0"], "--loss-target must be a number > 0.0"),
        (["--stop", "forever"], "invalid choice"),
        (["--preset", "huge"], "invalid choice"),
        (["--backend", "numba", "--device", "cpu", "--k", "1"], "k must be an integer >= 2"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        vl.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--n-train", "99999999999"], ["--n-test", "99999999999"]])
def test_a_run_too_large_for_memory_is_refused_before_its_folder(argv, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        vl.main(argv + ["--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--n-train" in err and "GiB of memory available" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_help_and_bad_flag_have_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "theory_sims.view_learning", "--seeds", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    help_text = subprocess.run([sys.executable, "-m", "theory_sims.view_learning", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for flag in ("--views", "--missing", "--seeds", "--kd-temperature", "--preset", "--backend", "--sigma0",
                 "--stop", "--fit-multiple", "--loss-target", "--kd-weight", "--kd-teacher-scale"):
        assert flag in help_text


def test_the_distillation_control_trains_on_labels_on_the_students_schedule():
    cfg = vl.configure(distill={"lr": 7.0, "steps": 11, "max_step": 2.5})
    control = vl.control_config(cfg, 9)  # as long as the longest student
    assert (control.lr, control.steps, control.max_step) == (7.0, 9, 2.5)
    assert control.loss == "ce" and control.stop == "steps"


def test_configure_applies_presets_and_overrides():
    cfg = vl.configure("large", data={"k": 5}, seeds=4, students=2)
    assert cfg.data.patches == vl.PRESETS["large"]["data"]["patches"]
    assert cfg.data.k == 5 and cfg.learner.k == 5
    assert cfg.seeds == 4
    with pytest.raises(ValueError, match="preset must be one of"):
        vl.configure("nope")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_exits_2_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        vl.main(["--device", "cuda", "--out", str(out)])
    assert exc.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


def test_second_views_line_reports_the_counts():
    res = {"individual": {"second_views": {"pairs": 100, "several_views": 41, "last_view_by_fit": 39,
                                           "median_lag_steps": 12.0}}}
    line = report.format_second_views(res)
    assert line.startswith("single models: in 41 of 100") and "39 of them" in line and "median 12 steps" in line
    res["kd"] = {"second_views": {"pairs": 50, "several_views": 49, "last_view_by_fit": 2, "median_lag_steps": 30.0}}
    assert report.format_second_views(res, "kd", "KD students").startswith("KD students: in 49 of 50")
    res["individual"]["second_views"].update(several_views=0, last_view_by_fit=0, median_lag_steps=None)
    assert "at most one view" in report.format_second_views(res)


def test_default_data_follows_the_papers_definition_in_its_weights():
    """Definition 4.1 as we read it: other-class features weigh [Omega(1), 0.4] in multi-view
    samples and at most Gamma, less than that, in single-view ones; every patch carries feature
    noise in [0, gamma] with gamma > 0. Measured on samples of the default world."""
    from multiview import MultiViewDistribution

    c = vl.DEFAULT_DATA
    data = MultiViewDistribution(c, seed=0).sample(400, seed=1)
    V = c.views
    multi, single = [], []
    for b in range(len(data.y)):
        pf = data.patch_feature[b]
        for f in set(pf[pf >= 0].tolist()) - {data.y[b] * V + l for l in range(V)}:  # other-class features
            patches = pf == f
            total = data.weights[b, patches, f].sum() - patches.sum() * c.feature_noise / 2  # less the noise's mean
            (multi if data.is_multi[b] else single).append(total)
    multi, single = np.array(multi), np.array(single)
    assert len(single) >= 20
    slack = c.feature_patches * c.feature_noise / 2  # the feature noise in the feature's own patches
    assert 0.2 - slack <= multi.min() and multi.max() <= 0.4 + slack  # U[0.2, 0.4]
    assert single.max() <= 0.05 + slack and single.mean() < 0.25 * multi.mean()  # Gamma = 0.05 < 0.2
    noise = data.weights[data.patch_feature < 0]  # noise-only patches: feature noise on every feature
    assert c.feature_noise > 0 and noise.min() >= 0 and noise.max() <= c.feature_noise
    assert noise.mean() == pytest.approx(c.feature_noise / 2, rel=0.05)


def test_the_mechanism_in_results_is_recomputed_from_the_rows_it_reads():
    """The mechanism block reads the rows' views: Run.mechanism on a hand-made run (3 single models,
    2 students, k = 2 classes of V = 2 views) gives the numbers worked out by hand from those rows."""
    from types import SimpleNamespace as NS

    B = lambda a: np.array(a, dtype=bool)  # noqa: E731
    individual = B([[[1, 0], [0, 1]], [[1, 0], [1, 0]], [[0, 1], [1, 1]]])  # views used (S, k, V)
    view_acc = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.95, 0.1]], [[0.2, 0.6], [0.55, 1.0]]])
    lam = np.array([[[2.5, 0.2], [0.1, 3.5]], [[1.5, 0.3], [4.5, 0.2]], [[0.4, 2.2], [1.1, 5.0]]])  # final
    lam0 = np.array([[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.4], [0.45, 0.1]], [[0.1, 0.3], [0.2, 0.25]]])  # at init
    results = {
        "individual": {"views_used": individual, "view_acc": view_acc, "lambda": lam},
        "kd": {"views_used": B([[[1, 1], [1, 0]], [[1, 0], [0, 1]]])},
        "self_kd": {"views_used": B([[[1, 1], [0, 1]], [[1, 0], [0, 0]]])},
        "long_single": {"views_used": B([[[0, 1], [0, 1]], [[1, 0], [0, 0]]])},  # the students' own inits
        "ensemble": {"views_used": B([[[1, 1], [1, 0]]])},
    }
    noise = {"single": [[[1, 2], [3, 0]]], "kd": [[[0, 5], [1, 1]]], "self_kd": [[[4, 4], [-1, -2]]]}
    seen = []
    run = NS(results=results, cfg=NS(students=2, learner=NS(varrho=0.5)),
             models={"single": NS(history={"step": np.array([0, 10]), "lambda": np.stack([lam0, lam])},
                                  fit_step=np.array([10, 10, -1]), model="single"),
                     "kd": NS(model="kd"), "self_kd": NS(model="self_kd")},
             tests=NS(noise_only=np.zeros((2, 3))), ev=NS(on=lambda model, X: np.array(noise[model], float)),
             memorisation=lambda used: seen.append(used) or ("stored", "per sample"))
    vl.Run.mechanism(run)
    m = results["mechanism"]
    # Lambda / varrho binned: below 1: 5 triples (accuracies .1 .2 .3 .1 .2), [2, 3): 1 (.55), [3, 4): 1 (.7),
    # 4 and above: 5 (.9 .8 .95 .6 1)
    assert [c["triples"] for c in m["calibration"]] == [5, 0, 1, 1, 5]
    assert [c["mean_view_acc"] for c in m["calibration"]] == [pytest.approx(0.18), None, pytest.approx(0.55),
                                                               pytest.approx(0.7), pytest.approx(0.85)]
    # the lottery: 5 (model, class) pairs use one view, 4 of them the one with the larger Lambda at init
    np.testing.assert_array_equal(m["lambda_init"], lam0)
    assert (m["lottery"]["pairs"], m["lottery"]["one_view"], m["lottery"]["several_views"]) == (6, 5, 1)
    assert m["lottery"]["init_winner"] == pytest.approx(0.8)
    # teachers per (class, view): 2, 1 / 2, 2; the students use 1 of the 2 triples at one teacher,
    # 4 of the 6 at two, 5 of 8 in all
    kd = m["kd_inheritance"]
    assert kd["by_teachers"] == [{"teachers": 1, "triples": 2, "fraction": 0.5},
                                 {"teachers": 2, "triples": 6, "fraction": pytest.approx(4 / 6)}]
    assert kd["ensemble"]["fraction"] == pytest.approx(5 / 8) and kd["few"]["fraction"] == 0.5
    assert kd["ensemble_views"] == pytest.approx(0.75)
    # self-KD against the first two single models and the control: both 2 triples (both used),
    # teacher only 2 (1 used), own init only 1 (used), neither 3 (none), the union 5 (4 used)
    skd = m["self_kd_inheritance"]
    assert {g: (skd[g]["triples"], skd[g]["fraction"]) for g in ("both", "teacher", "own_init", "neither", "union")} \
        == {"both": (2, 1.0), "teacher": (2, 0.5), "own_init": (1, 1.0), "neither": (3, 0.0),
            "union": (5, pytest.approx(0.8))}
    assert len(seen) == 1 and np.array_equal(seen[0], individual)  # memorisation reads the single models' views
    assert (m["memorisation"], m["single_view_samples"]) == ("stored", "per sample")
    assert m["race"]["pairs"] == 6 and m["race"]["raced"] == 6
    assert m["noise_response"] == {"individual": {"mean_max_logit": [2.5], "max_logit": [3.0]},
                                   "kd": {"mean_max_logit": [3.0], "max_logit": [5.0]},
                                   "self_kd": {"mean_max_logit": [1.5], "max_logit": [4.0]}}


def test_the_sum_control_is_the_average_members_trained_as_their_sum(run_dir, small):
    """The members of the average (same inits) trained as one network whose output is their sum,
    at lr / seeds: the row's scores are that network's."""
    res = json.loads((run_dir / "results.json").read_text())
    cfg, train_set, tests = small
    sum_cfg = dataclasses.replace(cfg.train, loss="sum", group_size=cfg.seeds, snapshots=(), lr=cfg.train.lr / cfg.seeds)
    summed = ex.fit(train_set, range(cfg.seeds), cfg.learner, sum_cfg)
    scores = ex.Evaluator(train_set, tests).ensemble(summed)
    for key in ("test_acc", "single_view_acc"):
        assert res["sum_single"][key] == pytest.approx(scores[key])
    assert np.asarray(res["sum_single"]["views_used"]).shape == (1, 4, 2)
    assert "the average's members trained as their sum" in (run_dir / "table.csv").read_text()


def test_help_shows_the_defaults_a_run_with_no_flags_uses():
    """Every default --help prints for the data and learner flags is the value in the config of a
    run given no flags (not the dataclasses' own defaults)."""
    import re

    help_text = vl.build_parser().format_help()
    cfg = vl.config_from_args(vl.build_parser().parse_args([])).to_dict()
    flat = " ".join(help_text.split())
    flat = flat[flat.index("data (multiview):"):]  # the flags' help, past the usage lines
    for part, skip in (("data", ()), ("learner", ("k", "mode"))):
        for name, value in cfg[part].items():
            if name in skip:
                continue
            m = re.search(rf"--{name.replace('_', '-')} (?:INT|FLOAT|STR) .*?\(default: ([^)]*)\)", flat)
            assert m is not None, name
            assert m.group(1) == str(value), (name, m.group(1), value)


def test_no_controls_leaves_out_their_rows_and_the_line_that_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert vl.main(SMALL + ["--no-controls", "--no-figures", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert not {"long_single", "wide_single", "sum_single"} & set(res)
    assert "self_kd_inheritance" not in res["mechanism"] and "kd_inheritance" in res["mechanism"]
    printed = capsys.readouterr().out
    assert "self-KD students use the views" not in printed and "KD students use" in printed


def test_generate_help_quotes_both_sets_of_defaults_as_they_are():
    """multiview.generate's --help says its defaults are not the main job's data and quotes both;
    the quoted numbers must be the configs' own."""
    from multiview import MultiViewConfig, generate

    doc = " ".join(generate.__doc__.split())
    gen, job = MultiViewConfig(), vl.DEFAULT_DATA
    assert f"d = {gen.d}, P = {gen.patches} patches, noise std {gen.noise_std:g}" in doc
    assert f"(d = {job.d}, P = {job.patches}, noise std {job.noise_std:g}" in doc


@pytest.mark.parametrize("bottom, top, ticks", [
    (0.0, 13.0, [0.0, 0.1, 1.0, 10.0]),
    (-0.47, 7.0, [-0.1, 0.0, 0.1, 1.0]),
    (-3.2, 0.05, [-1.0, -0.1, 0.0]),
])
def test_lambda_axis_ticks_are_zero_and_decades_reached_by_the_data(bottom, top, ticks):
    from theory_sims.figures import _symlog_ticks

    assert _symlog_ticks(bottom, top) == ticks


def test_lambda_figure_labels_each_tick_once_in_plain_numbers():
    from theory_sims import figures

    lam = np.zeros((5, 3, 3, 2))
    lam[:, :, :, 0] = np.linspace(0.0, 6.0, 5)[:, None, None]
    lam[:, :, :, 1] = np.linspace(-0.4, 0.2, 5)[:, None, None]
    fig = figures.lambda_trajectories(np.arange(5), lam, threshold=0.77)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["\N{MINUS SIGN}0.1", "0", "0.1", "1"] or labels == ["-0.1", "0", "0.1", "1"]


def test_accuracy_figure_names_the_theorems_that_held_as_the_table_does():
    """Hand-made rows, mu = 0.1 and k = 10 (tolerance 0.05 mu): the single model errs on 0.5 mu and
    KD on 0 (both hold), the ensemble on 0.2 mu and self-KD on 0.5 mu (both fail); the observations
    hold but are no theorems. The title names the two that held; the bars are the rows' accuracies."""
    from theory_sims import figures, report

    def row(test, single, models=1):
        return {"test_acc": [test] * models, "multi_view_acc": [1.0] * models, "single_view_acc": [single] * models}

    res = {"setting": {"k": 10, "views": 2, "mu": 0.1},
           "individual": {**row(0.95, 0.5, 2), "train_acc": [1.0, 1.0]}, "ensemble": row(0.98, 0.8),
           "kd": row(1.0, 1.0, 2), "self_kd": row(0.95, 0.5, 2), "average": row(0.953, 0.53),
           "kd_ensemble": row(1.0, 1.0)}
    fig = figures.accuracy_bars(report.table_rows(res), report.judge(res))
    ax = fig.axes[0]
    assert ax.get_title().endswith("; the paper's theorems held here: single model, KD (2 of 4)")
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "single model", "ensemble", "knowledge distillation", "self-distillation", "training the average",
        "ensemble of KD students"]
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([1.0] * 6 + [0.5, 0.8, 1.0, 0.5, 0.53, 1.0])  # multi-view, then single-view
    none_held = {n: {**v, "holds": False} for n, v in report.judge(res).items()}
    title = figures.accuracy_bars(report.table_rows(res), none_held).axes[0].get_title()
    assert title.endswith("held here: none (0 of 4)")
    assert figures.accuracy_bars(report.table_rows(res)).axes[0].get_title() == "test accuracy of every row"
    figures.plt.close("all")


def test_check_lr_trains_the_single_models_at_half_the_rate_and_reports_the_race(tmp_path, capsys):
    """Halving the learning rate (and the step cap) in a run that follows gradient flow takes about
    twice the steps to fit and leaves the views alone; the run says so, and prints the race."""
    out = tmp_path / "run"
    argv = [a for a in SMALL if a not in ("--ntk", "--ntk-steps", "20")]
    assert vl.main(argv + ["--lr", "5", "--check-lr", "--no-figures", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    c = res["lr_check"]
    assert (c["lr"], c["half_lr"]) == (5.0, 2.5)
    ratio = np.asarray(c["half_lr_fit_step"]) / np.asarray(c["fit_step"])
    # gradient flow: the same path at half the pace (the 100% fit is a sharp event: one seed may move)
    assert 1.8 < np.median(ratio) < 2.2 and ((ratio > 1.5) & (ratio < 3.0)).all(), ratio
    assert abs(c["half_lr_views_per_class"] - c["views_per_class"]) <= 0.25
    assert "the learning rate, halved (--check-lr)" in printed and "the race: in " in printed
    race = res["mechanism"]["race"]
    assert race["pairs"] == 3 * 4 and sum(b["pairs"] for b in race["by_loser_at_win"]) == race["raced"]
    assert race["loser_crossed_with_winner"] + race["loser_later_before_fit"] + race["loser_later_after_fit"] \
        + race["loser_never"] == race["raced"]


def test_no_average_leaves_out_its_row_and_keeps_the_rest(tmp_path, capsys):
    """--no-average: no trained average of the full learner (the random features' cheap one stays),
    the table without its row, the controls still run, and the statement that reads it is not judged."""
    out = tmp_path / "run"
    assert vl.main(SMALL + ["--no-average", "--no-figures", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert "average" not in res and "sum_single" in res and "kd" in res
    assert "average" not in res["predictions"] and "kd_ensemble" in res["predictions"]
    table = capsys.readouterr().out.split("the paper's statements")[0].splitlines()
    assert not [line for line in table if line.startswith("training the average")]
    assert [line for line in table if line.startswith("random features: training the average")]
    assert "rf_average" in res["predictions"]


def test_the_module_docstring_states_the_default_stop_rule():
    """The steps the docstring describes are the defaults' (it said 10x and 1x/3x/10x once, when
    the defaults were 3x and [1, 3])."""
    doc = " ".join(vl.__doc__.split())
    c = vl.DEFAULT_TRAIN
    assert f"trained {c.fit_multiple:g} times as long as it took to fit" in doc
    assert f"cross-entropy is at most {c.loss_target:g}" in doc
    assert "at " + " and ".join(f"{x:g}x" for x in c.snapshots) + " its fit step" in doc
    assert vl.DEFAULT_DISTILL.stop == "converge" and "until its loss reaches a plateau" in doc
