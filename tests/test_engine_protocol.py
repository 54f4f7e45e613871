"""Every engine has the whole `Engine` protocol (sftadapt/engines/base.py), so stages use each member directly.

Each backend in `BACKENDS` is read from its source (the class's own members, class-level names and what its
`__init__` sets on `self`), so the vllm backend is checked where vllm cannot be imported; hf and openai are also
built and checked as objects. Every fake engine in the tests (a class defining `generate` or `score` in tests/ or
tests/hostile/) is read the same way, its bases followed within its file and tests/fakes.py. Methods must take
the protocol's parameters by name."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest
from fakes import FakeEngine, FakeTokenizer

from sftadapt.data import budget
from sftadapt.engines.base import BACKENDS, Engine

TESTS = Path(__file__).resolve().parent
METHODS = {
    name: [p for p in inspect.signature(fn).parameters if p != "self"]
    for name, fn in vars(Engine).items()
    if inspect.isfunction(fn) and not name.startswith("_")
}
ATTRIBUTES = set(Engine.__annotations__)
MEMBERS = ATTRIBUTES | set(METHODS)


def _self_targets(node: ast.AST) -> set[str]:
    """Names assigned as `self.X` anywhere in `node` (plain, tuple and annotated assignments)."""
    found = set()
    for sub in ast.walk(node):
        targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target] if isinstance(sub, ast.AnnAssign) else []
        for target in targets:
            for leaf in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    found.add(leaf.attr)
    return found


def _own_members(cls: ast.ClassDef) -> tuple[set[str], dict[str, ast.FunctionDef]]:
    names, methods = set(), {}
    for item in cls.body:
        if isinstance(item, ast.FunctionDef):
            methods[item.name] = item
            names.add(item.name)
            if item.name == "__init__":  # what every instance has; attributes set later may be missing
                names |= _self_targets(item)
        elif isinstance(item, ast.Assign):
            names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    return names, methods


def _classes(path: Path) -> dict[str, ast.ClassDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


FAKES = _classes(TESTS / "fakes.py")


def _members(cls: ast.ClassDef, scope: dict[str, ast.ClassDef]) -> tuple[set[str], dict[str, ast.FunctionDef]]:
    """The class's members with those of its bases found in its own file or tests/fakes.py (nearest wins)."""
    names, methods = set(), {}
    for base in cls.bases:
        parent = scope.get(base.id) or FAKES.get(base.id) if isinstance(base, ast.Name) else None
        if parent is not None:
            more_names, more_methods = _members(parent, scope if parent is scope.get(parent.name) else FAKES)
            names |= more_names
            methods.update(more_methods)
    own_names, own_methods = _own_members(cls)
    methods.update(own_methods)
    return names | own_names, methods


def protocol_gaps(cls: ast.ClassDef, scope: dict[str, ast.ClassDef]) -> list[str]:
    """What `cls` lacks of the protocol: missing members, and methods that do not take its parameters by name."""
    names, methods = _members(cls, scope)
    gaps = [f"no {member}" for member in sorted(MEMBERS - names)]
    for name, wanted in METHODS.items():
        if name not in methods:
            continue
        args = methods[name].args
        taken = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        if args.kwarg is None:
            gaps += [f"{name}() takes no {p}" for p in wanted if p not in taken]
    return gaps


def test_the_protocol_itself_has_what_the_stages_use():
    # the stages read these without a fallback (budget.py, store.py, eval/, adapt/): none may leave the protocol
    assert {"name", "tokenizer", "context_length", "end_ids", "seeded", "stats", "precision"} <= ATTRIBUTES
    assert {"generate", "score", "close"} <= set(METHODS)
    assert METHODS["score"][:4] == ["prompts", "responses", "entropy", "hidden"]


def test_the_checker_finds_a_missing_member_and_a_missing_parameter():
    source = (
        "class Half:\n"
        "    name = 'x'\n"
        "    def __init__(self):\n"
        "        self.tokenizer, self.stats, self.end_ids, self.seeded = None, {}, (0,), True\n"
        "        self.precision: dict = {}\n"
        "    def generate(self, prompts, params, seeds=None): ...\n"
        "    def score(self, prompts, responses, entropy=False): ...\n"
        "    def close(self): ...\n"
    )
    classes = {n.name: n for n in ast.parse(source).body}
    assert protocol_gaps(classes["Half"], classes) == ["no context_length", "score() takes no hidden"]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_has_the_whole_protocol(backend):
    module, name = BACKENDS[backend].split(":")
    path = Path(importlib.util.find_spec(module).origin)  # the parent package only: vllm itself is not imported
    classes = _classes(path)
    assert name in classes, f"{path} defines no class {name}"
    assert protocol_gaps(classes[name], classes) == [], f"{backend} ({path.name}:{name})"


def _fake_engines() -> list[tuple[str, ast.ClassDef, dict]]:
    found = []
    for path in sorted([*TESTS.glob("*.py"), *(TESTS / "hostile").glob("*.py")]):
        classes = _classes(path)
        for cls in classes.values():
            _, methods = _members(cls, classes)
            if {"generate", "score"} & set(methods):
                found.append((f"{path.relative_to(TESTS)}:{cls.name}", cls, classes))
    return found


def test_every_fake_engine_has_the_whole_protocol():
    fakes = _fake_engines()
    names = {where for where, _, _ in fakes}
    # the known fakes are found, so an empty search cannot pass this test
    assert {"fakes.py:FakeEngine", "test_rewrite.py:ScriptedEngine", "test_evaluate.py:SeedAnswerEngine"} <= names
    gaps = {where: protocol_gaps(cls, scope) for where, cls, scope in fakes}
    assert {where: gap for where, gap in gaps.items() if gap} == {}


def test_a_fake_refuses_what_it_does_not_script():
    fake = FakeEngine()
    assert all(hasattr(fake, member) for member in MEMBERS)
    assert fake.context_length is None and not fake.precision and fake.stats.get("scored_tokens", 0.0) == 0.0
    with pytest.raises(NotImplementedError, match="FakeEngine scripts no score"):
        fake.score(["p"], ["r"])
    with pytest.raises(TypeError):  # shared by every instance: a fake that counts keeps its own dict
        fake.stats["scored_tokens"] = 1


def test_the_hf_engine_has_every_member_and_the_model_context(tiny_engine):
    assert all(hasattr(tiny_engine, member) for member in MEMBERS)
    assert tiny_engine.precision["generate"] == tiny_engine.precision["score"] == "float32"
    tok = tiny_engine.tokenizer
    # the tiny model's config says 2048, its tokenizer 8192: the budget takes the engine's number, as it took the
    # model config's before the protocol had it
    assert tiny_engine.context_length == 2048
    assert budget.context_length(tok, tiny_engine) == 2048 and budget.context_length(tok) == 8192


def test_the_openai_engine_has_every_member_and_leaves_the_context_to_the_server():
    from sftadapt.engines.openai import OpenAIEngine

    engine = OpenAIEngine("m", FakeTokenizer(), ["http://127.0.0.1:9/v1"], served_dtype="bfloat16", check_model=False)
    try:
        assert all(hasattr(engine, member) for member in MEMBERS)
        assert engine.context_length is None and engine.precision["score"] == "bfloat16"
        assert engine.stats["scored_tokens"] == 0
    finally:
        engine.close()


def test_the_vllm_engine_object_has_every_member():
    # built around no LLM (vllm itself is imported only by from_config), with the context vLLM would report
    from sftadapt.engines.vllm import VLLMEngine

    engine = VLLMEngine(None, FakeTokenizer(), "m", {"generate": "float32", "score": "float32"}, context_length=512)
    assert all(hasattr(engine, member) for member in MEMBERS)
    assert engine.context_length == 512 and engine.stats["generated_tokens"] == 0
    engine.close()  # nothing loaded: nothing to shut down


def test_the_ray_engine_object_has_every_member():
    # built around no replica (ray itself is imported only by from_config), with the facts replica 0 would send
    from sftadapt.engines.replicas import RayEngine

    facts = {"context_length": 512, "end_ids": [2], "precision": {"generate": "float32", "score": "float32"}}
    engine = RayEngine("m", FakeTokenizer(), [], "hf", facts)
    assert all(hasattr(engine, member) for member in MEMBERS)
    assert engine.context_length == 512 and engine.end_ids == (2,) and engine.stats["replica_restarts"] == 0
    engine.close()  # no replica: nothing to kill
