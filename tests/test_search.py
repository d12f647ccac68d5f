"""The regime search: a tiny study end to end, its resume after SIGKILL, its scoring and its flags."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from theory_sims import search
from theory_sims import view_learning as vl

TINY = [
    "--k", "4", "--d", "40", "--patches", "16", "--n-train", "60", "--n-test", "80", "--seeds", "3",
    "--students", "2", "--steps", "150", "--kd-steps", "20", "--lr", "50", "--kd-lr", "5", "--quiet",
    "--axes", "learner.sigma0,distill.teacher_scale", "--data-seeds", "0,1",
]


def _complete(folder):
    study = search.open_study(folder, 0)
    return [t for t in study.get_trials() if t.state.name == "COMPLETE"], study


def test_score_is_the_theorems_total_shortfall_averaged_over_seeds():
    def rec(**margins):
        full = {f"margin_{n}": margins.get(n, 0.1) for n in search.THEOREMS}
        return {**full, **{f"holds_{n}": full[f"margin_{n}"] >= 0 for n in search.THEOREMS}}

    assert search.score([rec(), rec()]) == 0.0  # every theorem holds on every seed
    # shortfalls -0.3 and -0.3: no spread
    assert search.score([rec(single=-0.2, kd=-0.1), rec(kd=-0.3)]) == pytest.approx(-0.3)
    # shortfalls 0 and -0.4: mean -0.2, standard deviation 0.2, penalised by half of it
    assert search.score([rec(), rec(single=-0.4)]) == pytest.approx(-0.2 - search.SPREAD_PENALTY * 0.2)
    assert search.held_everywhere([rec(kd=-0.1), rec()]) == 3


def test_a_regime_sets_the_noise_from_its_norm_and_its_command_reproduces_it():
    params = {"data.d": 640, "noise_norm": 1.0, "learner.m": 3, "distill.teacher_scale": 3.0, "n_train": 150}
    cfg = search.regime(vl.ViewLearningConfig(), params)
    assert cfg.data.noise_std == pytest.approx(1.0 / np.sqrt(640))
    assert (cfg.learner.m, cfg.distill.teacher_scale, cfg.n_train) == (3, 3.0, 150)
    assert not cfg.random_features and not cfg.controls  # rows that judge no theorem are left out
    line = search.command(cfg).split()
    again = vl.config_from_args(vl.build_parser().parse_args(line[3:]))
    assert again.data.noise_std == pytest.approx(cfg.data.noise_std, rel=1e-5)  # 6 significant digits
    assert vl.dataclasses.replace(again.data, noise_std=cfg.data.noise_std) == cfg.data
    assert again.learner == cfg.learner and again.distill == cfg.distill
    assert again.n_train == 150
    assert search.params_key(params) == search.params_key(dict(reversed(params.items())))


def test_init_lambda_is_the_mean_largest_of_m_gaussian_alignments():
    rng = np.random.default_rng(0)
    for m, sigma0 in ((1, 0.2), (3, 0.12), (5, 0.05)):
        draws = (rng.standard_normal((200_000, m)) * sigma0).max(axis=1)
        assert search.init_lambda(sigma0, m) == pytest.approx(draws.mean(), abs=0.01 * sigma0), m
    assert search.init_lambda(0.3, 1) == pytest.approx(0.0, abs=1e-9)  # one neuron: a centred Gaussian


def test_a_regime_sets_varrho_from_the_race_ratio_and_leaves_out_the_average():
    params = {"learner.sigma0": 0.1, "learner.m": 4, "race_ratio": 20.0, "distill.plateau": 0.01}
    cfg = search.regime(vl.ViewLearningConfig(), params)
    assert cfg.learner.varrho == pytest.approx(20.0 * search.init_lambda(0.1, 4), abs=1e-4)
    assert cfg.distill.plateau == 0.01 and cfg.distill.stop == "converge"
    assert not cfg.average
    line = search.command(cfg).split()  # the command names varrho and the plateau
    assert "--varrho" in line and "--kd-plateau" in line


def test_the_budget_cuts_the_steps_of_costlier_shapes_only():
    base = vl.ViewLearningConfig()
    probe = search.regime(base, {"data.d": 640, "data.patches": 32, "n_train": 150, "learner.m": 3})
    assert (probe.train.steps, probe.distill.steps) == (base.train.steps, search.SEARCH_DISTILL["steps"])
    big = search.regime(base, {"data.d": 640, "data.patches": 64, "n_train": 300, "learner.m": 3})
    assert (big.train.steps, big.distill.steps) == (base.train.steps // 4, search.SEARCH_DISTILL["steps"] // 4)
    small = search.regime(base, {"data.d": 320, "data.patches": 32, "n_train": 150, "learner.m": 2})
    assert small.train.steps == base.train.steps  # never more than the experiment's own


def test_a_new_study_starts_from_the_probe_regime(tmp_path):
    out = tmp_path / "s"
    axes = "learner.sigma0,race_ratio,distill.temperature"
    argv = TINY[:-4] + ["--axes", axes, "--data-seeds", "0", "--trials", "1", "--out", str(out), "--no-figures"]
    assert search.main(argv) == 0
    done, _ = _complete(out)
    assert done[0].params == {a: search.PROBE[a] for a in axes.split(",")}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A study of 3 trials on TINY validated on data seed 5: its folder and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("search") / "s"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert search.main(TINY + ["--trials", "3", "--validate", "5", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_a_tiny_study_writes_its_trials_best_regimes_plots_and_validation(tiny_study):
    out, printed = tiny_study
    done, _ = _complete(out)
    assert len(done) == 3
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and "margin_kd_seed1" in rows[0] and "learner.sigma0" in rows[0]
    best = json.loads((out / "best.json").read_text())
    assert best[0]["score"] == max(t.value for t in done)
    assert "--kd-teacher-scale" in best[0]["command"] and "--k 4" in best[0]["command"]
    for name in ("importances.png", "slices.png", "validation.csv"):
        assert (out / name).exists(), name
    val = json.loads((out / "validation.json").read_text())
    assert [r["data_seed"] for r in val["seeds"]] == [5] and val["params"] == best[0]["params"]
    # the held-out seed's verdicts are those of a direct run of the experiment at the best regime
    cfg = search.regime(vl.config_from_args(vl.build_parser().parse_args(TINY[:22])), best[0]["params"])
    direct = search.trial_job(vl.dataclasses.replace(cfg, seed=5))
    assert val["seeds"][0]["margin_kd"] == pytest.approx(direct["margin_kd"])
    assert "held-out data seeds" in printed


def test_report_md_puts_the_search_on_one_page(tiny_study):
    """report.md: the command as typed, the best regimes and the validation as printed, and exactly
    the figures written."""
    import re

    out, printed = tiny_study
    text = (out / "report.md").read_text()
    assert f"python -m theory_sims.search {' '.join(TINY)} --trials 3 --validate 5 --out {out}" in text
    for heading in ("## The best regimes", "## Held-out data seeds", "## Figures"):
        assert heading in text
    best = text.split("## The best regimes")[1].split("## ")[0]
    assert "3 trials; the best:" in best and best.split("```")[1].strip() in printed
    embedded = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    assert {name for _, name in embedded} == {p.name for p in out.glob("*.png")} == set(search.SEARCH_FIGURES)
    assert all(caption == search.SEARCH_FIGURES[name] for caption, name in embedded)


def test_config_of_a_search_takes_its_data_seeds_axes_and_sampler_seed_unless_given(tiny_study):
    """--config SEARCH_RUN: its base, data seeds, axes (with the ranges it ran) and sampler seed, so
    the config.json the search would write is the original's; flags given beside it replace them."""
    from theory_sims.results import as_json

    out, _ = tiny_study
    saved = json.loads((out / "config.json").read_text())
    args = search.build_parser().parse_args(["--config", str(out)])
    base, seeds, held_out, axes = search.settings(args)
    assert base.to_dict() == vl.config_from_args(vl.build_parser().parse_args(TINY[:-4])).to_dict()
    assert seeds == [0, 1] and held_out == [] and args.sampler_seed == 0
    assert as_json([search.dataclasses.asdict(a) for a in axes]) == saved["space"]
    args = search.build_parser().parse_args(["--config", str(out), "--data-seeds", "3", "--axes", "learner.q",
                                             "--sampler-seed", "2"])
    _, seeds, _, axes = search.settings(args)
    assert seeds == [3] and [a.path for a in axes] == ["learner.q"] and args.sampler_seed == 2


def test_resume_after_sigkill_continues_the_study(tmp_path):
    """A search killed while a trial runs keeps its finished trials; --resume asks the killed trial
    again with the same parameters and finishes the study."""
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "theory_sims.search", *TINY, "--trials", "4", "--no-figures"]
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "trials.csv").exists():  # written after the first trial
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before, study = _complete(out)
    assert 1 <= len(before) < 4
    running = [t for t in study.get_trials() if t.state.name == "RUNNING"]
    subprocess.run(cmd + ["--resume", str(out)], check=True, capture_output=True)
    after, study = _complete(out)
    assert len(after) == 4
    assert [t.params for t in after[: len(before)]] == [t.params for t in before]  # kept as they were
    for t in running:  # asked again with the same parameters
        assert any(d.params == t.params for d in after)
    assert not [t for t in study.get_trials() if t.state.name == "RUNNING"]


def test_a_warm_start_copies_an_earlier_search_and_goes_on_from_it(tmp_path, capsys):
    """--warm-start copies the earlier study's finished trials (scores, records) into a new one,
    which then asks new parameters (the sampler reseeded by the study's size, not its first random
    trials again); another experiment's, data seeds' or range's study is refused before anything
    is written."""
    first, second = tmp_path / "a", tmp_path / "b"
    assert search.main(TINY + ["--trials", "2", "--no-figures", "--out", str(first)]) == 0
    assert search.main(TINY + ["--trials", "3", "--no-figures", "--out", str(second), "--warm-start", str(first)]) == 0
    old, _ = _complete(first)
    new, _ = _complete(second)
    assert len(new) == 3
    assert [(t.params, t.value, t.user_attrs["records"]) for t in new[:2]] == [(t.params, t.value, t.user_attrs["records"]) for t in old]
    assert new[2].params not in [t.params for t in old]
    assert json.loads((second / "warm_start.json").read_text())["trials_copied"] == 2
    capsys.readouterr()
    for argv, needle in [(["--data-seeds", "0,2"], "other data seeds"), (["--k", "5"], "another experiment"),
                         (["--warm-start", str(tmp_path / "none")], "not a search folder")]:
        out = tmp_path / "c"
        with pytest.raises(SystemExit) as exc:
            search.main(TINY + ["--warm-start", str(first), "--out", str(out)] + argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    # a range narrower than the earlier trials' values is refused, naming the axis
    config = json.loads((first / "config.json").read_text())
    narrow = (search.Axis("learner.sigma0", 0.29, 0.3, log=True), search.Axis("distill.teacher_scale", 1.0, 10.0))
    with pytest.raises(ValueError, match="has learner.sigma0 = .* outside this search's range"):
        search.warm_trials(first, config, narrow)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--trials", "0"], "--trials must be an integer >= 1"),
        (["--timeout-min", "0"], "--timeout-min must be a number > 0"),
        (["--data-seeds", "0,0"], "--data-seeds must be distinct comma-separated integers >= 0"),
        (["--validate", "1,x"], "--validate must be distinct comma-separated integers >= 0"),
        (["--validate", "2,100"], "--validate must name held-out data seeds that no trial uses"),
        (["--axes", "learner.nope"], "--axes must name distinct axes among"),
        (["--sampler-seed", "-1"], "--sampler-seed must be an integer >= 0"),
        (["--k", "1"], "k must be an integer >= 2"),
    ],
)
def test_bad_search_flags_exit_2_with_one_line_and_write_nothing(argv, needle, capsys, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        search.main(argv + ["--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _fake_trial_job(calls: list, clock: list | None = None):
    """A stand-in for the experiment (``search.trial_job``) with scores known in advance: every
    theorem holds (margin 0) in each trial but the 6th, 8th, 10th, ... to start (counted by their
    first data seed; trials 5, 7, 9, ...), where every theorem misses by 1 on every seed. With
    ``clock``, each run moves the search's clock on by 30 s."""
    def job(cfg):
        if cfg.seed == 0:
            calls.append(cfg.learner.sigma0)
        if clock is not None:
            clock[0] += 30.0
        margin = -1.0 if len(calls) > 5 and len(calls) % 2 == 0 else 0.0
        return {**{f"margin_{n}": margin for n in search.THEOREMS},
                **{f"holds_{n}": margin >= 0 for n in search.THEOREMS}, "wall_s": 0.0}

    return job


def test_a_trial_below_the_median_on_its_first_seed_is_pruned_there(tmp_path, monkeypatch):
    """Optuna's median pruner, after 5 finished trials: each trial that scores -4 on its first data
    seed while the finished ones scored 0 stops there (its record holds that one seed, its second
    seed never runs) and trials.csv lists only the finished trials."""
    import csv

    calls = []
    monkeypatch.setattr(search, "trial_job", _fake_trial_job(calls))
    out = tmp_path / "s"
    assert search.main(TINY + ["--trials", "8", "--no-figures", "--out", str(out)]) == 0
    study = search.open_study(out, 0)
    trials = study.get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert [t.number for t in pruned] == [5, 7, 9] and len(done) == 8 and len(trials) == 11
    for t in pruned:
        assert len(t.user_attrs["records"]) == 1 and t.intermediate_values == {0: -4.0}
        key = search.params_key(t.params)
        assert (out / "jobs" / f"{key}-seed0.json").exists() and not (out / "jobs" / f"{key}-seed1.json").exists()
    assert all(len(t.user_attrs["records"]) == 2 and t.value == 0.0 for t in done)
    assert len(calls) == 11  # each trial's first data seed ran once
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [t.number for t in done]


def test_a_search_past_its_timeout_asks_no_new_trial_and_says_so(tmp_path, monkeypatch, capsys):
    """--timeout-min 1 with runs that take 30 s each on the search's clock and two data seeds: the
    first trial ends at 60 s (not past the minute), the second at 120 s, after which no trial is
    asked although --trials wants 5."""
    from types import SimpleNamespace

    clock = [0.0]
    monkeypatch.setattr(search, "trial_job", _fake_trial_job([], clock))
    monkeypatch.setattr(search, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    out = tmp_path / "s"
    argv = [a for a in TINY if a != "--quiet"] + ["--trials", "5", "--timeout-min", "1", "--no-figures", "--out", str(out)]
    assert search.main(argv) == 0
    trials = search.open_study(out, 0).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + 2
    printed = capsys.readouterr().out
    assert "--timeout-min 1 reached" in printed and "2 trials; the best:" in printed


def test_the_validation_table_counts_theorems_out_of_those_there_are(monkeypatch):
    monkeypatch.setattr(search, "THEOREMS", ["single", "kd"])
    row = {"data_seed": 100, "single": 0.5, "holds_single": True, "kd": 0.2, "holds_kd": False, "theorems_held": 1}
    line = search.format_validation([row]).splitlines()[1]
    assert line.endswith("  1/2") and "FAILS" in line and "holds" in line


def _killed_mid_write(tmp_path, monkeypatch, cut: int):
    """A finished two-trial study (the stand-in experiment) whose journal lost its last ``cut``
    bytes, as a kill -9 during a write leaves it: the folder and the journal's bytes before the cut."""
    monkeypatch.setattr(search, "trial_job", _fake_trial_job([]))
    out = tmp_path / "s"
    assert search.main(TINY + ["--trials", "2", "--no-figures", "--out", str(out)]) == 0
    journal = out / "study.journal"
    data = journal.read_bytes()
    data = data[: len(data) - cut]
    journal.write_bytes(data)
    return out, data


def test_a_resume_sets_aside_a_journal_record_cut_off_by_a_kill_and_asks_its_trial_again(tmp_path, monkeypatch, capsys):
    """The last 40 bytes of the journal gone (the tell of trial 1 cut in half): the resume sets the
    torn line aside, says so in one line, asks trial 1 again with its parameters and finishes; the
    journal it leaves reads back whole."""
    out, data = _killed_mid_write(tmp_path, monkeypatch, 40)
    whole = data[: data.rfind(b"\n") + 1]
    capsys.readouterr()
    assert search.main(TINY + ["--trials", "2", "--no-figures", "--resume", str(out)]) == 0
    assert (out / "study.journal.torn-1").read_bytes() == data[len(whole):]  # nothing lost
    assert (out / "study.journal").read_bytes().startswith(whole)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.journal" in err[0] and "cut off" in err[0] and "study.journal.torn-1" in err[0]
    trials = search.open_study(out, 0).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params  # the trial whose record was cut, asked again
    # killed again the same way: the next torn line goes beside the first
    journal = out / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-40])
    assert search.main(TINY + ["--trials", "2", "--no-figures", "--resume", str(out)]) == 0
    assert (out / "study.journal.torn-2").exists() and "torn-2" in capsys.readouterr().err


def test_a_resume_writes_back_the_line_end_of_a_whole_last_record(tmp_path, monkeypatch, capsys):
    out, data = _killed_mid_write(tmp_path, monkeypatch, 1)
    capsys.readouterr()
    assert search.main(TINY + ["--trials", "2", "--no-figures", "--resume", str(out)]) == 0
    assert (out / "study.journal").read_bytes().startswith(data + b"\n")
    assert not list(out.glob("study.journal.torn-*"))
    assert "line end is written back" in capsys.readouterr().err
    assert [t.state.name for t in search.open_study(out, 0).get_trials()] == ["COMPLETE", "COMPLETE"]


def test_a_resume_refuses_a_journal_damaged_before_its_end(tmp_path, monkeypatch, capsys):
    """A line in the middle that is not a record is no cut-off write: refused in one line naming the
    file and the line, exit 2, the journal left as it is."""
    out, _ = _killed_mid_write(tmp_path, monkeypatch, 0)
    journal = out / "study.journal"
    lines = journal.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    damaged = b"\n".join(lines)
    journal.write_bytes(damaged)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        search.main(TINY + ["--trials", "3", "--no-figures", "--resume", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{journal} line 3 is not a journal record" in err[0]
    assert journal.read_bytes() == damaged and not list(out.glob("study.journal.torn-*"))
