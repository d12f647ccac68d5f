"""The ``python -m multiview.generate`` command line."""

import subprocess
import sys

import pytest

import multiview
from multiview.generate import main


def test_writes_a_loadable_file_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "data.npz"
    assert main(["--views", "2", "--missing", "0.25", "--n", "400", "--k", "4", "--d", "40",
                 "--patches", "12", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "single-view fraction" in text and "class balance" in text
    data = multiview.load(out)
    assert data.n == 400 and data.config.missing == 0.25 and data.config.k == 4


def test_gaussian_kind(tmp_path, capsys):
    out = tmp_path / "g.npz"
    assert main(["--kind", "gaussian", "--teacher", "conv", "--patches", "3", "--patch-dim", "5",
                 "--sampling", "rejection", "--margin", "0.4", "--label-noise", "0.1",
                 "--n", "200", "--out", str(out)]) == 0
    assert "teacher margin" in capsys.readouterr().out
    data = multiview.load(out)
    assert data.margin.min() >= 0.4 and data.flipped.sum() == 20


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--views", "0"], "--views must be an integer >= 1"),
        (["--missing", "1.5"], "--missing must be a number in [0.0, 1.0]"),
        (["--d", "3"], "--d must be >= --k x --views = 20 so that all features are orthonormal, got --d 3"),
        (["--n", "0"], "--n must be an integer >= 1"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--world-seed", "-3"], "--world-seed must be an integer >= 0, got -3"),
        (["--teacher", "fc"], "--teacher applies only to --kind gaussian"),
        (["--kind", "gaussian", "--views", "3"], "--views applies only to --kind multiview"),
        (["--kind", "gaussian", "--label-noise", "1.5"], "--label-noise must be a number in [0.0, 1.0)"),
        (["--kind", "gaussian", "--label-noise", "1"], "--label-noise must be a number in [0.0, 1.0)"),
        (["--missing", "lots"], "invalid float value"),
        (["--seed", "-1e3"], "argument --seed: invalid int value: '-1e3'"),
        (["--missing", "-1e-3"], "--missing must be a number in [0.0, 1.0]"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_module_runs_as_a_script_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "multiview.generate", "--views", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--views must be" in proc.stderr
    help_text = subprocess.run([sys.executable, "-m", "multiview.generate", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for flag in ("--missing", "--feature-patches", "--teacher", "--label-noise", "--world-seed"):
        assert flag in help_text
