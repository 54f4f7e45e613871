"""The embedded task generator: deterministic, right answers, consistent solutions, disjoint splits, a real gap."""

import ast
import operator
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from sftadapt.data import synthetic
from sftadapt.data.records import Problem, read_records
from sftadapt.data.synthetic import benchmark, generate, latex_expression, split_of, warmup_set

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": Fraction}


def recompute(start, ops):
    """The chain of counts from meta, with exact arithmetic (independent of the generator's apply_op)."""
    values = [Fraction(start)]
    for kind, operand in ops:
        values.append(OPS[kind](values[-1], operand))
    return values


# ---------------------------------------------------------------- a small LaTeX arithmetic evaluator for the tests
def _expand_frac(s: str) -> str:
    """\\frac{A}{B} -> ((A)/(B)), nested fractions included."""
    start = s.find("\\frac{")
    if start < 0:
        return s
    parts, i = [], start + len("\\frac")
    for _ in range(2):
        assert s[i] == "{", s
        depth, j = 0, i
        while True:
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                break
            j += 1
        parts.append(_expand_frac(s[i + 1 : j]))
        i = j + 1
    return s[:start] + f"(({parts[0]})/({parts[1]}))" + _expand_frac(s[i:])


def latex_value(expr: str) -> Fraction:
    python = _expand_frac(expr.replace("\\cdot", "*").replace(" ", ""))
    assert re.fullmatch(r"[0-9+\-*/()]+", python), f"unexpected symbols in {expr!r} -> {python!r}"

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp):
            fn = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
            return fn[type(node.op)](walk(node.left), walk(node.right))
        raise AssertionError(f"unexpected node {ast.dump(node)} in {python!r}")

    return walk(ast.parse(python, mode="eval"))


def test_latex_evaluator_itself():
    assert latex_value("\\frac{\\frac{12}{3}+5}{3}") == 3
    assert latex_value("(3+4)\\cdot 2-5") == 9
    assert latex_value("\\frac{16}{4\\cdot 2}") == 2


# ---------------------------------------------------------------- determinism
def test_same_seed_same_output_different_seed_different():
    a, b, c = generate(50, seed=7), generate(50, seed=7), generate(50, seed=8)
    assert a == b
    assert [p.problem for p in a] != [p.problem for p in c]
    assert len({p.problem for p in a} & {p.problem for p in c}) < 5


def test_prefix_stable_and_ids_encode_split_steps_seed_index():
    small, large = generate(10, seed=3), generate(40, seed=3)
    assert small == large[:10]
    assert large[12].id == "syn-train-k13-s3-00012"
    assert benchmark("synthetic_ood", n=3)[2].id == "syn-test-k45-s1234-00002"


def test_deterministic_across_processes():
    code = (
        "from sftadapt.data.synthetic import generate; print(repr([(p.problem, p.solution) for p in generate(20, 5)]))"
    )
    outs = []
    for hashseed in ("1", "999"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        repo = Path(__file__).resolve().parents[1]
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, check=True
        )
        outs.append(run.stdout)
    assert outs[0] == outs[1]
    assert outs[0].strip() == repr([(p.problem, p.solution) for p in generate(20, 5)])


def test_docstring_example_is_what_generate_makes():
    # Pins the exact output: if templates change, this fails and VERSION must be bumped with the new example.
    doc = " ".join(synthetic.__doc__.split())
    expert, native = generate(1, seed=32, steps=(2, 2))[0], generate(1, seed=32, steps=(2, 2), style="native")[0]
    assert f"problem: {expert.problem}" in doc
    assert f"native: {native.solution}" in doc
    assert f"expert: {expert.solution}" in doc
    assert expert.meta["start"] == 8 and expert.meta["ops"] == [["-", 3], ["*", 2]]


# ---------------------------------------------------------------- correctness
@pytest.fixture(scope="module")
def mixed():
    """Problems of every step count, both styles, same problems."""
    expert = generate(150, seed=11, steps=(1, 5))
    native = generate(150, seed=11, steps=(1, 5), style="native")
    return expert, native


def test_answers_recomputed_from_structure(mixed):
    for p in mixed[0]:
        values = recompute(p.meta["start"], p.meta["ops"])
        assert all(v.denominator == 1 and 2 <= v <= 999 for v in values), (p.id, values)
        assert p.answer == str(values[-1])
        assert len(p.meta["ops"]) == p.meta["steps"]
        # The text states the numbers the structure says: the start and every amount added or removed.
        assert re.search(rf"\b{p.meta['start']}\b", p.problem)
        for kind, operand in p.meta["ops"]:
            if kind in "+-":
                assert re.search(rf"\b{operand}\b", p.problem), (p.problem, kind, operand)


def test_native_chain_evaluates_to_answer(mixed):
    for p in mixed[1]:
        equations = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", p.solution)
        assert len(equations) == p.meta["steps"], p.solution
        value = p.meta["start"]
        for (left, symbol, right, result), (kind, operand) in zip(equations, p.meta["ops"]):
            assert (int(left), symbol, int(right)) == (value, kind, operand)
            assert OPS[symbol](Fraction(left), int(right)) == int(result)
            value = int(result)
        assert str(value) == p.answer
        # One sentence per step, plus the opening and the answer.
        assert p.solution.count(". ") + 1 == p.meta["steps"] + 2, p.solution


def test_expert_chain_evaluates_to_answer_and_uses_every_number(mixed):
    for p in mixed[0]:
        math = re.findall(r"\$([^$]*)\$", p.solution)
        final = math[-1].replace("\\Rightarrow", "").strip()
        parts = [part for part in final.split("=") if not re.fullmatch(r"\s*[a-z]\s*", part)]
        assert len(parts) >= 2, p.solution
        for part in parts:
            assert latex_value(part) == int(p.answer), (p.solution, part)
        numbers = sorted(int(x) for x in re.findall(r"\d+", parts[0]))
        assert numbers == sorted([p.meta["start"]] + [operand for _, operand in p.meta["ops"]]), p.solution


def test_latex_expression_closed_forms():
    assert latex_expression(3, [("+", 4), ("*", 2), ("-", 5)]) == "(3+4)\\cdot 2-5"
    assert latex_expression(16, [("/", 4), ("/", 2)]) == "\\frac{16}{4\\cdot 2}"
    assert latex_expression(12, [("+", 6), ("/", 3), ("*", 5)]) == "\\frac{12+6}{3}\\cdot 5"
    assert latex_expression(7, []) == "7"


def test_both_styles_end_with_boxed_answer(mixed):
    for p in mixed[0] + mixed[1] + warmup_set(30, 0) + benchmark("synthetic_ood", n=30):
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}") or p.solution.endswith(f"\\boxed{{{p.answer}}}.")
        assert p.solution.count("\\boxed") == 1


# ---------------------------------------------------------------- steps, splits, benchmarks
@pytest.mark.parametrize("steps", [(1, 3), (2, 2), (4, 5)])
def test_steps_within_requested_range(steps):
    counts = Counter(p.meta["steps"] for p in generate(120, seed=2, steps=steps))
    assert set(counts) == set(range(steps[0], steps[1] + 1))


def test_splits_disjoint_and_assigned_by_text():
    sets = {split: generate(600, seed=0, split=split) for split in synthetic.SPLITS}
    for split, problems in sets.items():
        assert all(split_of(p.problem) == split and p.meta["split"] == split for p in problems)
        assert len({p.problem for p in problems}) == len(problems)
    texts = {split: {p.problem for p in problems} for split, problems in sets.items()}
    assert not texts["train"] & texts["test"] and not texts["warmup"] & texts["test"]
    assert not texts["train"] & texts["warmup"]
    ids = [p.id for problems in sets.values() for p in problems]
    assert len(set(ids)) == len(ids)


def test_split_shares_of_the_hash():
    # The hash partition gives the advertised shares (60/20/20) of any large set of texts.
    shares = Counter(split_of(f"text {i}") for i in range(5000))
    assert abs(shares["train"] / 5000 - 0.6) < 0.03 and abs(shares["test"] / 5000 - 0.2) < 0.03


def test_benchmarks_id_and_ood():
    in_dist, out_dist = benchmark("synthetic_id", n=100), benchmark("synthetic_ood", n=100)
    assert {p.meta["steps"] for p in in_dist} == {1, 2, 3}
    assert {p.meta["steps"] for p in out_dist} == {4, 5}
    assert min(p.meta["steps"] for p in out_dist) > max(p.meta["steps"] for p in in_dist)
    assert all(p.meta["split"] == "test" and p.source == "synthetic" for p in in_dist + out_dist)
    assert not {p.id for p in in_dist} & {p.id for p in out_dist}
    assert benchmark("synthetic_id", n=100) == in_dist
    with pytest.raises(ValueError, match="synthetic_ood"):
        benchmark("synthetic_hard")


def test_warmup_set_is_native_1_to_3_steps_of_its_own_split():
    warm = warmup_set(40, seed=0)
    assert all(p.meta["style"] == "native" and p.meta["split"] == "warmup" for p in warm)
    assert {p.meta["steps"] for p in warm} == {1, 2, 3}
    assert all(f"starts with {p.meta['start']} " in p.solution for p in warm)
    assert warm == generate(40, seed=0, steps=(1, 3), style="native", split="warmup")


# ---------------------------------------------------------------- the style gap
def test_style_switch_changes_only_the_solutions(mixed):
    expert, native = mixed
    assert [(p.id, p.problem, p.answer, p.meta["ops"]) for p in expert] == [
        (p.id, p.problem, p.answer, p.meta["ops"]) for p in native
    ]
    assert all(e.solution != n.solution for e, n in zip(expert, native))


def _trigrams(text):
    words = text.lower().split()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def test_style_gap_is_real(mixed):
    expert, native = mixed
    expert_words = sum(len(p.solution.split()) for p in expert) / len(expert)
    native_words = sum(len(p.solution.split()) for p in native) / len(native)
    assert expert_words < 0.4 * native_words, (expert_words, native_words)
    native_grams = set().union(*(_trigrams(p.solution) for p in native))
    expert_grams = Counter(g for p in expert for g in _trigrams(p.solution))
    shared = sum(c for g, c in expert_grams.items() if g in native_grams) / sum(expert_grams.values())
    assert shared < 0.05, shared
    # The expert is prose-free LaTeX; the native is prose with no LaTeX except the final box.
    assert all("$" in p.solution for p in expert)
    assert not any("$" in p.solution or "\\frac" in p.solution for p in native)


def test_problems_vary_beyond_one_template():
    problems = generate(300, seed=4, steps=(1, 1))
    masked = set()
    for p in problems:
        text = re.sub(r"\d+", "#", p.problem)
        for name, _ in synthetic.NAMES:
            text = re.sub(rf"\b{name}\b", "NAME", text)
        for obj, _ in synthetic.OBJECTS:
            text = text.replace(obj, "OBJ")
        for relative in synthetic.RELATIVES:
            text = text.replace(relative, "REL")
        masked.add(re.sub(r"\b(he|she|him|her|his|himself|herself)\b", "PRON", text, flags=re.I))
    assert len(masked) >= 60, len(masked)
    assert {kind for p in problems for kind, _ in p.meta["ops"]} == {"+", "-", "*", "/"}


# ---------------------------------------------------------------- arguments and the command
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"style": "fancy"}, "style"),
        ({"split": "dev"}, "split"),
        ({"steps": (3, 1)}, "steps"),
        ({"steps": (0, 2)}, "steps"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(5, seed=0, **kwargs)


def test_command_writes_problem_records(tmp_path, capsys):
    out = tmp_path / "syn.jsonl"
    synthetic.main(["--n", "4", "--seed", "9", "--style", "native", "--out", str(out)])
    assert "wrote 4 problems" in capsys.readouterr().out
    assert read_records(out, Problem) == generate(4, seed=9, style="native")
