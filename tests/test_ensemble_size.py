"""python -m theory_sims.ensemble_size: the run folder, the curve's consistency, and bad flags."""

import csv
import json

import numpy as np
import pytest

from conftest import assert_png_has_content
from theory_sims import ensemble_size as es


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("es") / "run"
    assert es.main(["--seeds", "4", "--sizes", "1,2,4", "--subsets", "20", "--n-boot", "50", "--out", str(out),
                    "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text())


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same(cell: str, value) -> bool:
    """A CSV cell holds ``value`` (a number, or empty for None)."""
    return cell == "" if value is None else float(cell) == pytest.approx(value, abs=1e-12)


def test_the_run_writes_its_tables_and_figure(run):
    """The files are there and say what results.json says: one CSV row per ensemble size with every
    column of its entry, the disagreement table with its three splits, and the flags in config.json."""
    out, res = run
    for name in ("config.json", "results.json", "ensemble_size.csv", "disagreement.csv", "ensemble_size.pdf"):
        assert (out / name).is_file()
    assert (out / "ensemble_size.pdf").read_bytes().startswith(b"%PDF")
    assert_png_has_content(out / "ensemble_size.png")
    assert [r["members"] for r in res["sizes"]] == [1, 2, 4]
    sizes = _csv(out / "ensemble_size.csv")
    assert len(sizes) == 3 and list(sizes[0]) == list(res["sizes"][0])
    assert "single_view_acc" in sizes[0] and "null_single_view_acc" in sizes[0] and "classes_covered" in sizes[0]
    for row, entry in zip(sizes, res["sizes"]):
        assert all(_same(row[key], value) for key, value in entry.items()), (row, entry)
    dis = _csv(out / "disagreement.csv")
    assert [(r["samples"], r["split"]) for r in dis] == [
        ("multi-view", "all"), ("single-view", "all"), ("single-view", "both of the pair use the view"),
        ("single-view", "one of the pair use the view"), ("single-view", "neither of the pair use the view")]
    assert _same(dis[0]["disagreement"], res["disagreement"]["multi_view"]) and dis[0]["cases"] == ""
    assert _same(dis[1]["disagreement"], res["disagreement"]["single_view"])
    by = res["disagreement"]["single_view_by_views"]
    for row, name in zip(dis[2:], ("both", "one", "neither")):
        assert _same(row["disagreement"], by[name]["disagreement"]) and int(row["cases"]) == by[name]["cases"]
    assert sum(int(r["cases"]) for r in dis[2:]) == 6 * 1000  # 6 pairs on every single-view test sample
    # the size curve's single-view column matches the members' accuracy and the coverage numbers
    assert float(sizes[0]["single_view_acc"]) == pytest.approx(np.mean(res["members_single_view_acc"]))
    rate = np.asarray(res["views_used"]).mean()
    for row in sizes:
        assert float(row["independent_lottery_single_view"]) == pytest.approx(1 - (1 - rate) ** int(row["members"]))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sizes"] == [1, 2, 4] and cfg["subsets"] == 20 and cfg["n_boot"] == 50
    assert cfg["experiment"]["seeds"] == 4 and len(res["members_single_view_acc"]) == 4 == len(res["train_acc"])


def test_one_member_is_the_mean_single_model_and_all_members_are_the_one_ensemble(run):
    _, res = run
    rows = res["sizes"]
    assert rows[0]["single_view_acc"] == pytest.approx(np.mean(res["members_single_view_acc"]))
    assert rows[-1]["subsets"] == 1  # the only ensemble of all 4
    assert rows[0]["subsets"] == 4 and rows[1]["subsets"] == 6  # every subset where there are few
    for r in rows:
        assert r["single_view_lo"] <= r["single_view_acc"] <= r["single_view_hi"]
        assert 0.0 <= r["predicted_single_view_acc"] <= 1.0
    assert rows[0]["fair_lottery_classes_covered"] == 0.0 and rows[1]["fair_lottery_classes_covered"] == 0.5


def test_disagreement_is_split_by_who_uses_the_view(run):
    _, res = run
    dis = res["disagreement"]
    assert len(dis["single_view_pairs"]) == 6  # 4 seeds: 6 pairs
    assert dis["single_view"] == pytest.approx(np.mean(dis["single_view_pairs"]))
    cases = sum(c["cases"] for c in dis["single_view_by_views"].values())
    assert cases == 6 * 1000  # every pair on every single-view test sample (n_test = 1000)


def test_resume_reads_the_trained_models_back_and_gives_the_same_numbers(run, tmp_path, capsys):
    import shutil

    out, res = run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "results.json").unlink()
    assert es.main(["--seeds", "4", "--sizes", "1,2,4", "--subsets", "20", "--n-boot", "50", "--resume", str(again)]) == 0
    assert "plus 1 trained stage(s) kept from an earlier process" in capsys.readouterr().out
    resumed = json.loads((again / "results.json").read_text())
    assert resumed["sizes"] == res["sizes"] and resumed["disagreement"] == res["disagreement"]


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "1"], "--seeds must be an integer >= 2, got 1"),
    (["--seeds", "10", "--sizes", "1,20"], "--sizes must be distinct comma-separated integers in [1, --seeds=10]"),
    (["--sizes", "1,1"], "--sizes must be distinct"),
    (["--sizes", "a"], "--sizes must be distinct"),
    (["--subsets", "0"], "--subsets must be an integer >= 1"),
    (["--seed", "-1"], "--seed must be an integer >= 0"),
    (["--views", "0"], "--views must be an integer >= 1, got 0"),
])
def test_bad_flags_exit_2_with_one_line_and_write_nothing(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        es.main(flags + ["--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "never").exists()


def test_report_md_puts_the_run_on_one_page(run):
    """report.md: the command as typed, the curve and its verdict lines, and exactly the figures written."""
    import re

    from theory_sims.figures import ENSEMBLE_SIZE_FIGURES

    out, _ = run
    text = (out / "report.md").read_text()
    assert (f"python -m theory_sims.ensemble_size --seeds 4 --sizes 1,2,4 --subsets 20 --n-boot 50 --out {out} "
            "--quiet") in text
    for heading in ("## The curve", "## Time", "## Figures"):
        assert heading in text
    assert "disagreement of two seeds" in text.split("## The curve")[1].split("## ")[0]
    embedded = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    assert {name for _, name in embedded} == {p.name for p in out.glob("*.png")} == {"ensemble_size.png"}
    assert all(caption == ENSEMBLE_SIZE_FIGURES[name] for caption, name in embedded)


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in ("timing_s", "wall_s")}
    return [_without_timings(v) for v in obj] if isinstance(obj, list) else obj


def test_config_re_creates_the_run_and_flags_beside_it_override(run, tmp_path, capsys):
    """--config RUN: the run's own settings (the same config.json, the same results but for timings);
    a flag beside it overrides its setting and is checked against the others (--seeds 4 from RUN);
    another command's config is one line naming --config."""
    out, res = run
    again = tmp_path / "again"
    assert es.main(["--config", str(out), "--out", str(again), "--quiet", "--no-figures"]) == 0
    assert (again / "config.json").read_text() == (out / "config.json").read_text()
    assert _without_timings(json.loads((again / "results.json").read_text())) == _without_timings(res)
    for flags, message in ((["--sizes", "1,8"], "--sizes must be distinct comma-separated integers in [1, --seeds=4]"),
                           (["--config", str(tmp_path / "c.json")], "not the config of an earlier ensemble_size run")):
        (tmp_path / "c.json").write_text('{"cells": 1}')
        with pytest.raises(SystemExit) as exc:
            es.main(["--config", str(out), *flags, "--out", str(tmp_path / "never")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
        assert not (tmp_path / "never").exists()
