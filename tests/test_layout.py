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


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's own ``__init__`` re-exports aside)."""
    mods = _modules()
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
        graph[name] = out - {name} - set(PACKAGES)  # "import theory_sims" only sets the environment
    return graph


def test_the_import_graph_has_no_circles():
    graphlib.TopologicalSorter(import_graph()).prepare()  # raises CycleError naming the circle


def test_the_checker_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


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
