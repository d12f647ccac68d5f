"""The code's rooms: imports flow multiview <- theory_sims <- real_data, with no circles anywhere.

Every ``import`` and ``from ... import`` of the three packages is read with ``ast`` (lazy imports
inside functions included), giving one edge per importing module and imported project module;
the graph must then sort topologically (``graphlib`` raises ``CycleError`` on a circle).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("multiview", "theory_sims", "real_data")


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    mods = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(root).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's own ``__init__`` re-exports aside), for
    the ``packages`` under ``root`` (the project's own by default)."""
    mods = _modules(root, packages)
    graph = {}
    for name, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            out |= {t for t in targets if t in mods}
        graph[name] = out - {name} - set(packages)  # "import theory_sims" only sets the environment
    return graph


def test_the_import_graph_has_no_circles():
    graph = import_graph()
    # the graph the check sorts is the project's: every module, and edges we know are there
    assert {"multiview", "theory_sims.view_learning", "theory_sims.report", "real_data"} <= set(graph)
    assert "theory_sims.report" in graph["theory_sims.view_learning"]
    assert "theory_sims.mechanism" in graph["theory_sims.report"]
    assert sum(len(deps) for deps in graph.values()) >= 20
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the circle


def test_the_checker_finds_a_circle(tmp_path):
    """A fake project in tmp_path whose modules import each other in a circle, one edge of it a lazy
    import inside a function and one a ``from pkg import module``: the project's own graph has every
    edge, and sorting it raises CycleError naming the circle; without the lazy import it sorts."""
    files = {
        "pkg_a/__init__.py": "from pkg_a.one import f  # a re-export: no edge of the circle\n",
        "pkg_a/one.py": "import os\nfrom pkg_a import two\n\ndef f():\n    return two.g()\n",
        "pkg_a/two.py": "from pkg_b.three import h\n\ndef g():\n    return h()\n",
        "pkg_b/__init__.py": "",
        "pkg_b/three.py": "import pkg_b\n\ndef h():\n    import pkg_a.one  # lazy: closes the circle\n    return 1\n",
        "pkg_b/four.py": "import numpy\nimport pkg_b.three\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ("pkg_a", "pkg_b"))
    assert graph == {
        "pkg_a": {"pkg_a.one"}, "pkg_a.one": {"pkg_a.two"}, "pkg_a.two": {"pkg_b.three"},
        "pkg_b": set(), "pkg_b.three": {"pkg_a.one"}, "pkg_b.four": {"pkg_b.three"},
    }
    with pytest.raises(graphlib.CycleError) as err:
        graphlib.TopologicalSorter(graph).prepare()
    assert set(err.value.args[1]) == {"pkg_a.one", "pkg_a.two", "pkg_b.three"}
    (tmp_path / "pkg_b/three.py").write_text("def h():\n    return 1\n")
    graphlib.TopologicalSorter(import_graph(tmp_path, ("pkg_a", "pkg_b"))).prepare()


def test_packages_import_one_way():
    allowed = {"multiview": {"multiview"}, "theory_sims": {"multiview", "theory_sims"},
               "real_data": {"multiview", "theory_sims", "real_data"}}
    wrong = [f"{mod} imports {dep}" for mod, deps in import_graph().items() for dep in deps
             if dep.split(".")[0] not in allowed[mod.split(".")[0]]]
    assert wrong == []


def test_no_private_module_is_imported_across_packages():
    crossing = [f"{mod} imports {dep}" for mod, deps in import_graph().items() for dep in deps
                if dep.split(".")[0] != mod.split(".")[0] and any(p.startswith("_") for p in dep.split(".")[1:])]
    assert crossing == []
