"""The README and docs/ as a newcomer meets them: the Python blocks run as written, links resolve.

Each ```python block of README.md and docs/*.md is executed on its own, in a fresh namespace and
a temporary working directory (the blocks are written at small sizes so that this stays cheap).
Every relative Markdown link must name a file of the repository, and a ``#fragment`` must name a
heading of that file (GitHub's anchor rule: lower case, punctuation dropped, spaces to hyphens).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(m) for m in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


BLOCKS = [(p, i, b) for p in DOCS for i, b in enumerate(python_blocks(p))]


def test_the_readme_has_a_python_quick_start_and_stays_short():
    assert python_blocks(ROOT / "README.md"), "the README's quick start is a ```python block"
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("path,index,block", BLOCKS, ids=[f"{p.name}:{i}" for p, i, _ in BLOCKS])
def test_python_blocks_run_as_written(path, index, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{path.name} python block {index}", "exec"), {"__name__": "__readme__"})


def test_anchor_follows_github():
    assert anchor("Closer to the theory: `--preset large`") == "closer-to-the-theory---preset-large"
    assert anchor("The library in brief") == "the-library-in-brief"


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file or heading does not exist."""
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked offline
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists() or (fragment and dest.suffix == ".md" and fragment not in anchors(dest)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_the_link_checker_catches_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("## A heading\n")
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [ok](other.md#a-heading) [bad](missing.md) [bad anchor](#nowhere) "
                    "[bad anchor](other.md#b)\n")
    assert broken_links(page) == ["missing.md", "#nowhere", "other.md#b"]


# The README's headline table, tied to the run that made it: docs/main_job_results.json and its
# config.json are that run's files (python -m theory_sims.view_learning --views 2 --missing 0.1).
README_ROWS = {
    "single model (10 seeds)": ["single model"],
    "ensemble of the 10 (mean logits)": ["ensemble"],
    "knowledge distillation from the ensemble (5 students)": ["knowledge distillation"],
    "self-distillation (5 students)": ["self-distillation"],
    "training the average of 10": ["training the average"],
    "ensemble of the KD students": ["ensemble of KD students"],
    "random features: single / ensemble / KD": ["random features: single model", "random features: ensemble",
                                                "random features: knowledge distillation"],
}


def _cell(row: dict, key: str, with_std: bool = True) -> str:
    if row[key] is None:
        return ""
    std = row.get(key + "_std") if with_std else None
    return f"{row[key]:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def test_the_readme_table_is_the_kept_run_of_the_current_defaults():
    import json

    from theory_sims import report
    from theory_sims import view_learning as vl
    from theory_sims.results import as_json

    kept = json.loads((ROOT / "docs" / "main_job_config.json").read_text())
    assert kept == as_json(vl.ViewLearningConfig().to_dict()), "the defaults changed: re-run the main job into docs/"
    rows = {r["row"]: r for r in report.table_rows(json.loads((ROOT / "docs" / "main_job_results.json").read_text()))}
    table = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        if cells[0] in README_ROWS:
            table[cells[0]] = cells[1:]
    assert set(table) == set(README_ROWS)
    for label, names in README_ROWS.items():
        got = [rows[n] for n in names]
        want = [" / ".join(_cell(r, key, with_std=len(got) == 1) for r in got) for key in ("multi_view_acc", "single_view_acc",
                                                                    "single_view_clean_acc")]
        views = got[0]["views_per_class"]
        assert table[label][:3] == want, label
        if len(names) == 1:
            assert table[label][3].split(" of ")[0] == f"{views:.2f}", label
