"""The package layout's rules (docs/architecture.md), checked on the source: no import circle between
modules (counting imports inside functions too: a lazy import still ties two modules together), RL never
imports the SFT stage, the verifier pool imports extraction and never the reverse, an engine backend, an arm
or a stage is registered in exactly one place, only the orchestration layer sits at the top level, and
docs/architecture.md's tree names every module."""

from __future__ import annotations

import ast
from pathlib import Path

import sftadapt

ROOT = Path(sftadapt.__file__).resolve().parent


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name and not (path.name == "__init__.py" and t.startswith(name + ".")):
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_no_import_circle_between_modules():
    graph = import_graph()
    # packages import each other's modules, so a package's __init__ re-exporting its own modules is no circle
    assert cycles(graph) == []


def test_rl_does_not_import_the_sft_stage():
    graph = import_graph()
    bad = {
        m: sorted(t for t in ts if t.startswith("sftadapt.train"))
        for m, ts in graph.items()
        if m.startswith("sftadapt.rl")
    }
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_verifier_extraction_does_not_import_the_pool():
    assert "sftadapt.verify.pool" not in import_graph()["sftadapt.verify.extract"]


def test_every_module_sits_in_a_package_of_the_data_flow():
    top = sorted(m for m in import_graph() if m.count(".") == 1 and not (ROOT / m.split(".")[1]).is_dir())
    # the orchestration layer: the two tables (stages, arms), the config machinery, the CLI and the run
    assert top == [
        "sftadapt.arms",
        "sftadapt.cli",
        "sftadapt.config",
        "sftadapt.pipeline",
        "sftadapt.registry",
        "sftadapt.run_config",
        "sftadapt.stage_cli",
    ]


def test_the_architecture_page_names_every_module():
    import re

    page = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = page.split("```")[1]  # the layout drawing
    words = set(re.findall(r"[A-Za-z_]+", tree))
    missing = sorted(module_name(p) for p in ROOT.rglob("*.py") if p.name != "__init__.py" and p.stem not in words)
    assert missing == [], f"docs/architecture.md's tree leaves out {missing}"


def test_backends_arms_and_stages_are_registered_in_one_place_each():
    """The three tables are assigned in one module each, and nothing else in the package builds a row of them."""
    where: dict[str, set[str]] = {"BACKENDS": set(), "TABLE": set(), "ROWS": set(), "Arm(": set(), "Row(": set()}
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and t.id in where:
                        where[t.id].add(module_name(path))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and f"{node.func.id}(" in where:
                where[f"{node.func.id}("].add(module_name(path))
    assert where == {
        "BACKENDS": {"sftadapt.engines.base"},
        "TABLE": {"sftadapt.arms"},
        "ROWS": {"sftadapt.registry"},
        "Arm(": {"sftadapt.arms"},
        "Row(": {"sftadapt.registry"},
    }
