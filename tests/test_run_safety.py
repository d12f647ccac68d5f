"""Nothing lost, nothing mislabelled: run folders are never overwritten, runs resume to the
uninterrupted result, wrong data is refused, and every bad input is one line naming the flag."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_image_tree
from multiview import generate
from multiview.files import write_atomic
from real_data import reproduce, visualize
from theory_sims import experiments as ex
from theory_sims import gaussian_negative as gn
from theory_sims import sweep
from theory_sims import view_learning as vl

from test_gaussian_negative import TINY_FLAGS
from test_view_learning import SMALL

VL_SMALL = [a for a in SMALL if a not in ("--ntk", "--ntk-steps", "20")] + ["--no-figures"]


def one_line_error(main, argv, capsys) -> str:
    """Run a CLI's main expecting exit 2 with exactly one line on stderr; return that line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in ("timing_s", "wall_s", "cpu_s",
                                                                           "images_per_s", "throughput")}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


# ------------------------------------------------------------------ run folders and resume (1-4)


@pytest.fixture(scope="module")
def vl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vl") / "run"
    assert vl.main(VL_SMALL + ["--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("main, argv", [(vl.main, VL_SMALL), (gn.main, TINY_FLAGS + ["--quick", "--no-multiview"]),
                                        (sweep.main, SMALL[:-3])], ids=["view_learning", "gaussian", "sweep"])
def test_out_holding_another_run_is_refused_and_left_as_it_was(main, argv, vl_run, capsys):
    before = {p.name: p.read_bytes() for p in vl_run.iterdir() if p.is_file()}
    err = one_line_error(main, argv + ["--seed", "7", "--out", str(vl_run)], capsys)
    assert f"--out {vl_run} holds another run" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in vl_run.iterdir() if p.is_file()} == before


def test_resume_with_another_out_is_refused_and_writes_nothing(vl_run, tmp_path, capsys):
    """--resume RUN --out OTHER: refused in one line (it used to ignore --out and write into RUN);
    neither folder changes. --out RUN beside --resume RUN is the same folder and allowed."""
    before = {p.name: p.read_bytes() for p in vl_run.iterdir() if p.is_file()}
    other = tmp_path / "other"
    err = one_line_error(vl.main, VL_SMALL + ["--resume", str(vl_run), "--out", str(other)], capsys)
    assert f"--out {other} with --resume {vl_run}" in err and "drop --out" in err
    assert not other.exists()
    assert {p.name: p.read_bytes() for p in vl_run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("argv, needle", [(["--missing", "0"], "--missing must be > 0"),
                                          (["--n-train", "3"], "--n-train must be an integer >= 4, got 3")])
def test_a_run_without_single_view_data_or_with_fewer_samples_than_classes_is_refused(argv, needle, tmp_path, capsys):
    """--missing 0 (mu = 0: nothing to judge the statements in) and --n-train below k are refused up
    front, before any folder is made (the first trained, then failed with a ZeroDivisionError)."""
    out = tmp_path / "run"
    assert needle in one_line_error(vl.main, VL_SMALL + argv + ["--out", str(out)], capsys)
    assert not out.exists()


def test_an_out_name_too_long_and_a_stages_file_are_refused_in_one_line(vl_run, tmp_path, capsys):
    """An --out whose name the file system refuses (errno 36, a traceback before) and a resumed run
    whose stages/ is a file (FileExistsError before): one line each, nothing written."""
    long = tmp_path / ("a" * 300)
    assert "cannot use this path (File name too long)" in one_line_error(vl.main, VL_SMALL + ["--out", str(long)], capsys)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_bytes((vl_run / "config.json").read_bytes())
    (copy / "stages").write_text("not a folder")
    err = one_line_error(vl.main, VL_SMALL + ["--resume", str(copy)], capsys)
    assert "stages is a file, not the run's stages folder" in err
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "stages"]


def test_view_learning_killed_mid_run_resumes_to_the_uninterrupted_result(vl_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "killed"
    real_fit, calls = ex.fit, []

    def dies_at_the_third_stage(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ex, "fit", dies_at_the_third_stage)
    with pytest.raises(KeyboardInterrupt):
        vl.main(VL_SMALL + ["--out", str(out)])
    assert not (out / "results.json").exists()
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["kd.pt", "single.pt"]

    monkeypatch.setattr(ex, "fit", real_fit)
    assert vl.main([a for a in VL_SMALL if a != "--quiet"] + ["--resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert "read back 2 finished stages: single, kd" in text
    resumed = json.loads((out / "results.json").read_text())
    assert without_timings(resumed) == without_timings(json.loads((vl_run / "results.json").read_text()))
    earlier = resumed["timing_s"]["earlier_processes"]  # the killed process's training is counted, not lost
    assert earlier["jobs"] == 2 and earlier["wall_s"] > 0
    assert "plus 2 trained stage(s) kept from an earlier process" in text


def test_a_damaged_stage_is_trained_again_on_resume(vl_run, tmp_path, capsys):
    """A truncated stages/*.pt (a disk filled mid-write by another program, a bad copy) is named
    in one line and trained again: the resumed run gives the uninterrupted result."""
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(vl_run, out)
    (out / "results.json").unlink()
    kd = out / "stages" / "kd.pt"
    kd.write_bytes(kd.read_bytes()[:100])
    (out / "stages" / "average.pt").write_text("not a stage")
    assert vl.main([a for a in VL_SMALL if a != "--quiet"] + ["--resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{kd}: not a finished stage" in text and "average.pt: not a finished stage" in text
    resumed = json.loads((out / "results.json").read_text())
    assert without_timings(resumed) == without_timings(json.loads((vl_run / "results.json").read_text()))


def test_a_stage_of_another_run_is_not_trusted_on_resume(vl_run, tmp_path, capsys):
    """A stages/single.pt copied from a --seed 1 run into this (seed 0) run's folder was read back
    as this run's (exit 0, a wrong ensemble): each stage carries the fingerprint of its data, seeds
    and settings, and one that does not match is named in one line and trained again."""
    import shutil

    other = tmp_path / "seed1"
    assert vl.main(VL_SMALL + ["--seed", "1", "--out", str(other)]) == 0
    out = tmp_path / "mixed"
    shutil.copytree(vl_run, out)
    (out / "results.json").unlink()
    shutil.copy(other / "stages" / "single.pt", out / "stages" / "single.pt")
    capsys.readouterr()
    assert vl.main([a for a in VL_SMALL if a != "--quiet"] + ["--resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{out / 'stages' / 'single.pt'}: trained on other data, seeds or settings than this run's" in text
    read_back = text.split("finished stages: ")[1].split("\n")[0].split(", ")
    assert "kd" in read_back and "single" not in read_back  # the others are read back, single is trained again
    resumed = json.loads((out / "results.json").read_text())
    assert without_timings(resumed) == without_timings(json.loads((vl_run / "results.json").read_text()))


def test_config_re_creates_a_run_from_its_folder(vl_run, tmp_path):
    """--config RUN starts from RUN's settings: with no other flag the new run's results equal the
    original's (timings aside); a flag beside it overrides that one setting."""
    again = tmp_path / "again"
    assert vl.main(["--config", str(vl_run), "--out", str(again), "--quiet", "--no-figures"]) == 0
    assert (again / "config.json").read_text() == (vl_run / "config.json").read_text()
    original = json.loads((vl_run / "results.json").read_text())
    assert without_timings(json.loads((again / "results.json").read_text())) == without_timings(original)
    args = vl.build_parser().parse_args(["--config", str(vl_run / "config.json"), "--kd-lr", "9", "--k", "4"])
    cfg, saved = vl.config_from_args(args), json.loads((vl_run / "config.json").read_text())
    assert cfg.distill.lr == 9.0 and cfg.data.k == cfg.learner.k == 4
    assert cfg.train.lr == saved["train"]["lr"] and cfg.data.d == saved["data"]["d"] and cfg.seeds == saved["seeds"]


@pytest.mark.parametrize("make, flags, message", [
    (lambda run, tmp: tmp / "nowhere", [], "cannot read"),
    (lambda run, tmp: run / "table.csv", [], "is not JSON"),
    (lambda run, tmp: (tmp / "c.json", (tmp / "c.json").write_text('{"cells": 1}'))[0], [], "not the config of a view_learning run"),
    (lambda run, tmp: run, ["--preset", "large"], "give one starting point"),
], ids=["missing", "not-json", "another-command", "with-preset"])
def test_a_bad_config_is_one_line_naming_it(make, flags, message, vl_run, tmp_path, capsys):
    path = make(vl_run, tmp_path)
    err = one_line_error(vl.main, ["--config", str(path), *flags, "--out", str(tmp_path / "new")], capsys)
    assert f"--config {path}" in err and message in err
    assert not (tmp_path / "new").exists()


def test_resume_of_another_commands_run_says_so(vl_run, capsys):
    from theory_sims import sweep

    err = one_line_error(sweep.main, ["--resume", str(vl_run), "--cluster", "serial"], capsys)
    assert f"--resume {vl_run}: not a sweep run" in err and "the command that made it" in err


def test_resume_with_other_flags_is_refused(vl_run, capsys):
    err = one_line_error(vl.main, VL_SMALL + ["--kd-lr", "9", "--resume", str(vl_run)], capsys)
    assert "describes another run" in err and "distill.lr (5.0 there, 9.0 here)" in err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, image_tree):
    out = tmp_path_factory.mktemp("smoke") / "run"
    assert reproduce.main(["--preset", "smoke", "--data", str(image_tree), "--out", str(out), "--quiet"]) == 0
    return out


def test_reproduce_resume_alone_uses_the_saved_data_path(smoke_run, monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAR_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # the saved path is absolute
    before = json.loads((smoke_run / "results.json").read_text())
    assert reproduce.main(["--resume", str(smoke_run), "--quiet"]) == 0
    assert without_timings(json.loads((smoke_run / "results.json").read_text())) == without_timings(before)
    assert Path(json.loads((smoke_run / "config.json").read_text())["data"]).is_absolute()


@pytest.mark.parametrize("flags, named", [(["--seeds", "5"], "--seeds"), (["--out", "elsewhere"], "--out"),
                                          (["--epochs", "9", "--preset", "smoke"], "--epochs, --preset")])
def test_reproduce_resume_refuses_flags_it_would_ignore(flags, named, smoke_run, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in smoke_run.iterdir()}
    err = one_line_error(reproduce.main, ["--resume", str(smoke_run)] + flags, capsys)
    assert f"{named} cannot change it" in err
    assert {p.name: p.stat().st_mtime_ns for p in smoke_run.iterdir()} == before


def test_reproduce_refuses_an_existing_run_and_checkpoints_of_another_config(smoke_run, image_tree, capsys,
                                                                             tmp_path):
    err = one_line_error(reproduce.main, ["--preset", "smoke", "--data", str(image_tree), "--lr", "0.05",
                                          "--out", str(smoke_run)], capsys)
    assert "holds another run" in err
    # a run folder whose config no longer matches its checkpoints (edited by hand) is not resumed
    edited = tmp_path / "edited"
    import shutil

    shutil.copytree(smoke_run, edited)
    for record in (edited / "jobs").iterdir():
        record.unlink()
    cfg = json.loads((edited / "config.json").read_text())
    cfg["experiment"]["spec"]["lr"] = 0.05
    (edited / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--resume", str(edited), "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "was trained under another config (spec: lr differ)" in err


# --------------------------------------------------------------------------- wrong data (5, 10)


@pytest.fixture(scope="module")
def ten_class_tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("ten") / "tree", n_train=4, n_test=2, classes=10)


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "cifar100"], "holds 10 classes (class0, class1, class2, class3, ...), but cifar100 with fine "
                                "labels has 100"),
    (["--labels", "coarse"], "--labels must be 'fine' unless dataset is 'cifar100'"),
])
def test_data_of_another_dataset_is_refused_and_no_folder_is_left(flags, message, ten_class_tree, tmp_path, capsys):
    out = tmp_path / "run"
    err = one_line_error(reproduce.main, ["--preset", "smoke", "--data", str(ten_class_tree), "--out", str(out)]
                         + flags, capsys)
    assert message in err
    assert not out.exists()


def test_visualize_refuses_data_of_another_dataset(smoke_run, ten_class_tree, capsys, tmp_path):
    err = one_line_error(visualize.main, ["--checkpoint", str(smoke_run / "checkpoints" / "single-0.pt"),
                                          "--data", str(ten_class_tree), "--out", str(tmp_path / "v")], capsys)
    assert "holds the classes class0, class1, class2, class3, ..." in err and "trained on class0" in err
    assert not (tmp_path / "v").exists()


# ------------------------------------------------------------- one line naming the flag (6, 7, 8)


@pytest.mark.parametrize("main, argv, message", [
    (vl.main, ["--kd-lr", "0"], "--kd-lr must be a number > 0.0, got 0.0"),
    (vl.main, ["--rf-steps", "-1"], "--rf-steps must be an integer >= 1"),
    (vl.main, ["--steps", "0"], "--steps must be an integer >= 1"),
    (vl.main, ["--kd-steps", "0"], "--kd-steps must be an integer >= 1"),
    (vl.main, ["--seeds", "2", "--students", "3"], "--students must be an integer in [1, 2], got 3"),
    (gn.main, ["--k", "100000"], "--n-train must be at least k (one training sample per class), got n_train=2000"),
    (gn.main, ["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (reproduce.main, ["--width", "0"], "--width must be a number > 0.0, got 0.0"),
    (reproduce.main, ["--model", "wrn", "--depth", "27", "--width", "0.5"], "--depth must be 6n + 4"),
    (reproduce.main, ["--model", "wrn", "--width", "0.5"], "--width must be an integer >= 1 for model 'wrn'"),
])
def test_bad_values_name_the_flag_typed(main, argv, message, capsys):
    assert message in one_line_error(main, argv, capsys)


def test_students_default_to_at_most_the_seeds():
    args = vl.build_parser().parse_args(["--seeds", "2"])
    assert vl.config_from_args(args).students == 2
    assert vl.config_from_args(vl.build_parser().parse_args([])).students == 5


def test_a_foreign_multiview_results_file_is_named(tmp_path, capsys):
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"a": 1}')
    err = one_line_error(gn.main, ["--multiview-results", str(foreign), "--quick"], capsys)
    assert f"--multiview-results {foreign}: not a results.json of theory_sims.view_learning" in err


@pytest.mark.parametrize("content, message", [(b"", "(an empty file)"), (b"not a tar at all", "truncated or corrupt")])
def test_an_empty_or_foreign_archive_is_one_line(content, message, tmp_path, capsys):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(content)
    out = tmp_path / "run"
    err = one_line_error(reproduce.main, ["--preset", "smoke", "--data", str(bad), "--out", str(out)], capsys)
    assert message in err and not out.exists()


def test_cache_dir_that_is_a_file_is_refused(image_tree, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = one_line_error(reproduce.main, ["--preset", "smoke", "--data", str(image_tree), "--cache-dir", str(afile),
                                          "--out", str(tmp_path / "run")], capsys)
    assert f"--cache-dir must be a folder, got the file {afile}" in err


def test_resume_of_a_folder_of_another_command(vl_run, capsys):
    err = one_line_error(reproduce.main, ["--resume", str(vl_run)], capsys)
    assert "not a real_data.reproduce run folder" in err


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--channels", "abc"], "--channels must be comma-separated channel indices like 3,17, got 'abc'"),
])
def test_visualize_bad_flags(argv, message, smoke_run, image_tree, capsys):
    base = ["--checkpoint", str(smoke_run / "checkpoints" / "single-0.pt"), "--data", str(image_tree)]
    assert message in one_line_error(visualize.main, base + argv, capsys)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs a /proc that refuses new folders")
@pytest.mark.parametrize("main, argv", [
    (vl.main, VL_SMALL), (gn.main, TINY_FLAGS + ["--quick"]), (sweep.main, SMALL[:-3]),
    (generate.main, ["--n", "5"]),
], ids=["view_learning", "gaussian", "sweep", "generate"])
def test_an_out_that_cannot_be_created_is_one_line(main, argv, capsys):
    err = one_line_error(main, argv + ["--out", "/proc/no/such/run"], capsys)
    assert "--out /proc/no/such/run: cannot create" in err


# -------------------------------------------------------------------------- generate --out (6, 9)


def test_generate_keeps_an_existing_file_unless_told(tmp_path, capsys):
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("mine")
    err = one_line_error(generate.main, ["--n", "5", "--out", str(unrelated)], capsys)
    assert "exists; pass --overwrite" in err and unrelated.read_text() == "mine"
    assert "--out must name a .npz file, got the folder" in one_line_error(generate.main, ["--out", str(tmp_path)],
                                                                           capsys)
    assert generate.main(["--n", "5", "--out", str(unrelated), "--overwrite"]) == 0
    assert unrelated.read_bytes()[:2] == b"PK"  # an .npz now


def test_generate_refuses_a_size_beyond_memory_up_front(capsys, monkeypatch):
    monkeypatch.setattr(generate, "available_memory", lambda: 2**30)
    err = one_line_error(generate.main, ["--n", "100000000"], capsys)
    assert "--n 100000000 needs at least" in err and "more than the 1.0 GiB of memory available" in err


# -------------------------------------------------------------- file modes and progress (11, 12)


def test_written_files_follow_the_umask(tmp_path):
    import multiview.files as files

    old = os.umask(0o027)
    try:
        mode = files._file_mode()
    finally:
        os.umask(old)
    assert mode == 0o640
    path = write_atomic(tmp_path / "a.json", b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == files.FILE_MODE == 0o666 & ~old


def test_no_progress_bars_in_a_redirected_log(tmp_path):
    argv = [a for a in VL_SMALL if a != "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "theory_sims.view_learning", *argv, "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, check=True)
    assert "\r" not in proc.stderr + proc.stdout
    assert "single: " in proc.stdout  # the plain per-stage lines instead
