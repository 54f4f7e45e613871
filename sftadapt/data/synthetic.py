r"""The embedded default task: arithmetic word problems with verifiable integer answers, seeded and deterministic.

What it is. A person starts with some objects and then 1–5 things happen to them: buys/finds/gets more (+),
gives away/sells/loses/eats some (-), doubles/triples/swaps each for k (×), splits into equal groups/shares
equally/gives away half (÷, exact division only). Difficulty is the number of steps (operations): training
data and the in-distribution test use 1–3 steps, the out-of-distribution test 4–5 (`synthetic_ood4`: 4 only).
Numbers are small (start and added/removed amounts 2–20, factors 2–5, divisors 2–6); every intermediate count
stays in 2–999. Names, objects, openings, verbs, connectives and questions vary, so a 135M model cannot memorise
one template.

Why two solution styles. The study needs a target that already solves the task in a style of its own and an
expert whose style differs from it by a known, controllable amount (docs/methods.md: the gap that Mind the Gap and DART
close):
- `native`: plain English, one sentence per step, close to SmolLM2-135M-Instruct's own phrasing ("so he has
  6 * 3 = 18 marbles"). The warm-up SFT teaches this style, which makes the competent target of the study.
- `expert`: how a strong teacher writes — terse LaTeX that skips steps, the whole chain in one expression.
  Training on it directly is the "SFT on expert data" arm; generating the same problems with `style="native"`
  instead removes the gap and isolates its effect.
Both end with `\boxed{answer}`, the evaluation format.

Splits. Each problem text belongs to exactly one split by a hash of the text (60% train, 20% warmup, 20%
test), and each split draws from its own seed stream, so train, warm-up and test never share a problem text,
whatever the seeds and sizes. Ids encode split, step range, seed and index ("syn-train-k13-s0-00012"); the
first n problems of a call are the same for any larger n. `meta` keeps the structure (`start`, `ops`) from
which the answer can be recomputed.

Use:
    from sftadapt.data.synthetic import generate, benchmark, warmup_set
    train = generate(2000, seed=0)                       # expert solutions, 1–3 steps
    matched = generate(2000, seed=0, style="native")     # the same problems, native solutions
    warm = warmup_set(1000, seed=0)                      # the warm-up SFT data (native, split "warmup")
    test_id, test_ood = benchmark("synthetic_id"), benchmark("synthetic_ood")

    python -m sftadapt.data.synthetic --n 3 --style native    # print examples (or --out FILE.jsonl to write them)

Example: `generate(1, seed=32, steps=(2, 2))` (meta: start=8, ops=[["-", 3], ["*", 2]]):
    problem: There are 8 coins in Ava's drawer. She gives away 3 of them, and then she doubles her coins.
             How many coins does Ava have now?
    native:  Ava starts with 8 coins. She gives away 3, so she has 8 - 3 = 5 coins left. She doubles them,
             so she has 5 * 2 = 10 coins. So the answer is \boxed{10}.
    expert:  $c=8$, $c\leftarrow c-3$, $c\leftarrow 2c$ $\Rightarrow c=(8-3)\cdot 2=10$. \boxed{10}
The expert writes one of: the chain alone ("$\frac{10}{5}+2=4$. \boxed{4}"), the chain with its last step
shown ("$(3+4)\cdot 2-5=14-5=9$"), or variable updates then the chain (above).
"""

from __future__ import annotations

import argparse
import hashlib
import random
from dataclasses import dataclass

from sftadapt.data.records import Problem

VERSION = "synthetic-v1"  # bump when templates change: problem texts (and so splits) change with them
STYLES = ("native", "expert")
SPLITS = ("train", "warmup", "test")
# synthetic_ood4: the longer-chain split at the one length where a warmed-up 135M target scores 10-40%
# (benchmarks/regime.md: 4 steps 12%, 5 steps 9%)
BENCHMARKS = {"synthetic_id": (1, 3), "synthetic_ood": (4, 5), "synthetic_ood4": (4, 4)}
MIN_VALUE, MAX_VALUE = 2, 999  # every intermediate count; >= 2 also keeps every noun plural
_SPLIT_SHARE = (("train", 60), ("warmup", 20), ("test", 20))  # percent of the hash space of problem texts

NAMES = (
    ("Tom", "m"),
    ("Mia", "f"),
    ("Leo", "m"),
    ("Ava", "f"),
    ("Sam", "m"),
    ("Zoe", "f"),
    ("Ben", "m"),
    ("Lily", "f"),
    ("Max", "m"),
    ("Emma", "f"),
    ("Noah", "m"),
    ("Nora", "f"),
    ("Omar", "m"),
    ("Sara", "f"),
    ("Ravi", "m"),
    ("Aisha", "f"),
    ("Carlos", "m"),
    ("Elena", "f"),
    ("Jack", "m"),
    ("Grace", "f"),
    ("Ethan", "m"),
    ("Chloe", "f"),
    ("Liam", "m"),
    ("Maya", "f"),
    ("Kenji", "m"),
    ("Yuki", "f"),
    ("Daniel", "m"),
    ("Hannah", "f"),
    ("Lucas", "m"),
    ("Ruby", "f"),
    ("Felix", "m"),
    ("Ivy", "f"),
)
PRONOUNS = {"m": ("he", "him", "his", "himself"), "f": ("she", "her", "her", "herself")}
RELATIVES = ("mother", "father", "aunt", "uncle", "grandmother", "grandfather", "brother", "sister", "teacher")
OBJECTS = (  # (plural noun, edible)
    ("apples", True),
    ("oranges", True),
    ("cookies", True),
    ("cupcakes", True),
    ("candies", True),
    ("strawberries", True),
    ("muffins", True),
    ("pears", True),
    ("plums", True),
    ("grapes", True),
    ("marbles", False),
    ("stickers", False),
    ("pencils", False),
    ("books", False),
    ("cards", False),
    ("coins", False),
    ("stamps", False),
    ("seashells", False),
    ("balloons", False),
    ("beads", False),
    ("crayons", False),
    ("buttons", False),
    ("toy cars", False),
    ("rocks", False),
    ("postcards", False),
    ("erasers", False),
    ("feathers", False),
    ("ribbons", False),
)
CONTAINERS = ("box", "bag", "basket", "jar", "drawer")
OPENINGS = (
    "{Name} has {c} {obj}.",
    "{Name} starts with {c} {obj}.",
    "{Name} owns {c} {obj}.",
    "There are {c} {obj} in {Name}'s {container}.",
)
QUESTIONS = (
    "How many {obj} does {Name} have now?",
    "How many {obj} does {Name} have in the end?",
    "How many {obj} does {Name} end up with?",
    "How many {obj} does {Name} have at the end?",
)
CONNECTIVES = ("", "", "Then ", "After that, ", "Later, ", "Next, ")

# Per operation: (problem sentence, native clause, condition). {S} is the subject (the name or a pronoun);
# the native clause follows "He"/"She" and mirrors the problem's verb; {n} is the operand.
_TEMPLATES = {
    "+": (
        ("{S} buys {n} more {obj}.", "buys {n} more", None),
        ("{S} finds {n} more {obj}.", "finds {n} more", None),
        ("{S} gets {n} more {obj} from {friend}.", "gets {n} more from {friend}", None),
        ("{S} wins {n} {obj} in a game.", "wins {n} more", None),
        ("{friend} gives {him} {n} {obj}.", "gets {n} from {friend}", None),
        ("{S} collects {n} more {obj}.", "collects {n} more", None),
    ),
    "-": (
        ("{S} gives {n} {obj} to {friend}.", "gives {n} to {friend}", None),
        ("{S} gives away {n} of them.", "gives away {n}", None),
        ("{S} sells {n} {obj}.", "sells {n}", None),
        ("{S} loses {n} {obj}.", "loses {n}", None),
        ("{S} eats {n} of them.", "eats {n}", "edible"),
        ("{S} uses {n} {obj} for a school project.", "uses {n}", "not edible"),
    ),
    "*": (
        ("{S} doubles {his} {obj}.", "doubles them", 2),
        ("{S} triples the number of {obj} {he} has.", "triples them", 3),
        ("{S} gets enough {obj} to have {n} times as many as before.", "gets {n} times as many", None),
        ("{S} swaps each of {his} {obj} for {n} new ones.", "swaps each one for {n} new ones", None),
    ),
    "/": (
        (
            "{S} splits {his} {obj} into {n} equal groups and keeps one group.",
            "splits them into {n} equal groups and keeps one group",
            None,
        ),
        (
            "{S} shares {his} {obj} equally among {himself} and {m} {friends}.",
            "shares them equally among {n} people",
            None,
        ),
        ("{S} gives away half of {his} {obj}.", "gives away half", 2),
        (
            "{S} packs {his} {obj} equally into {n} boxes and keeps one box.",
            "packs them into {n} boxes and keeps one box",
            None,
        ),
    ),
}
_SYMBOL = {"+": "+", "-": "-", "*": "*", "/": "/"}  # native arithmetic, as SmolLM2 writes it ("6 * 3 = 18")


def apply_op(value: int, kind: str, operand: int) -> int:
    """One step of the story on the running count (exact division only)."""
    if kind == "+":
        return value + operand
    if kind == "-":
        return value - operand
    if kind == "*":
        return value * operand
    if kind == "/":
        if value % operand:
            raise ValueError(f"{value} / {operand} is not exact")
        return value // operand
    raise ValueError(f"unknown operation {kind!r}")


def split_of(text: str) -> str:
    """The split a problem text belongs to, by a hash of the text (so splits can never share a text)."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 100
    for split, share in _SPLIT_SHARE:
        if bucket < share:
            return split
        bucket -= share
    raise AssertionError("split shares must sum to 100")


def _seeded(*parts) -> random.Random:
    # Seed from a hash of the parts, not hash(): identical streams in every process and Python version.
    return random.Random(int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big"))


# ---------------------------------------------------------------- stories
@dataclass
class _Story:
    name: str
    pronouns: tuple[str, str, str, str]
    obj: str
    start: int
    ops: list[tuple[str, int]]  # (kind, operand)
    native_clauses: list[str]  # one per op, after "He"/"She", no arithmetic
    text: str

    def values(self) -> list[int]:
        out = [self.start]
        for kind, operand in self.ops:
            out.append(apply_op(out[-1], kind, operand))
        return out


def _choose_op(rng: random.Random, value: int) -> tuple[str, int]:
    """A random operation that keeps the count in [MIN_VALUE, MAX_VALUE] and division exact."""
    divisors = [d for d in range(2, 7) if value % d == 0 and value // d >= MIN_VALUE]
    factors = [k for k in range(2, 6) if value * k <= MAX_VALUE and value <= 100]  # keep products moderate
    kinds = (["+"] if value + 2 <= MAX_VALUE else []) + (["-"] if value - 2 >= MIN_VALUE else [])
    kinds += (["*"] if factors else []) + (["/"] if divisors else [])
    kind = rng.choice(kinds)
    if kind == "+":
        return kind, rng.randint(2, min(20, MAX_VALUE - value))
    if kind == "-":
        return kind, rng.randint(2, min(20, value - MIN_VALUE))
    return kind, rng.choice(factors if kind == "*" else divisors)


def _story(rng: random.Random, steps: int) -> _Story:
    name, gender = rng.choice(NAMES)
    he, him, his, himself = PRONOUNS[gender]
    obj, edible = rng.choice(OBJECTS)
    start = rng.randint(2, 20)
    fill = dict(Name=name, he=he, him=him, his=his, himself=himself, obj=obj, container=rng.choice(CONTAINERS))
    sentences = [rng.choice(OPENINGS).format(c=start, **fill)]
    value, ops, clauses = start, [], []
    for _ in range(steps):
        kind, operand = _choose_op(rng, value)
        options = [t for t in _TEMPLATES[kind] if t[2] in (None, operand, "edible" if edible else "not edible")]
        problem_fmt, clause_fmt, _ = rng.choice(options)
        if rng.random() < 0.5:
            friend = rng.choice([n for n, _ in NAMES if n != name])
        else:
            friend = f"{his} {rng.choice(RELATIVES)}"
        subject = name if rng.random() < 0.3 else he
        words = dict(
            fill,
            S=subject,
            n=operand,
            m="a" if operand == 2 else operand - 1,
            friends="friend" if operand == 2 else "friends",
            friend=friend,
        )
        body = problem_fmt.format(**words)
        joinable = len(sentences) > 1 and ", and then " not in sentences[-1] and body.startswith(he + " ")
        if joinable and rng.random() < 0.25:
            # Join two events in one sentence now and then ("..., and then she doubles her apples.").
            sentences[-1] = sentences[-1][:-1] + ", and then " + body
        else:
            body = (rng.choice(CONNECTIVES) if ops else "") + body
            sentences.append(body[0].upper() + body[1:])
        ops.append((kind, operand))
        clauses.append(clause_fmt.format(**words))
        value = apply_op(value, kind, operand)
    sentences.append(rng.choice(QUESTIONS).format(**fill))
    return _Story(name, (he, him, his, himself), obj, start, ops, clauses, " ".join(sentences))


# ---------------------------------------------------------------- solutions
def _native_solution(story: _Story) -> str:
    he = story.pronouns[0]
    values = story.values()
    lines = [f"{story.name} starts with {story.start} {story.obj}."]
    for (kind, operand), clause, before, after in zip(story.ops, story.native_clauses, values, values[1:]):
        left = " left" if kind == "-" else ""
        lines.append(
            f"{he.capitalize()} {clause}, so {he} has {before} {_SYMBOL[kind]} {operand} = {after} {story.obj}{left}."
        )
    lines.append(f"So the answer is \\boxed{{{values[-1]}}}.")
    return " ".join(lines)


def latex_expression(start: int, ops: list[tuple[str, int]]) -> str:
    """The whole chain as one LaTeX expression with only the parentheses it needs, e.g. `\\frac{(3+4)\\cdot 2}{7}-1`."""
    expr, precedence = str(start), 3  # 1: sum, 2: product, 3: atom or fraction
    fraction: tuple[str, str] | None = None  # (numerator, denominator) while expr is a fraction
    for kind, operand in ops:
        if kind in "+-":
            expr, precedence, fraction = f"{expr}{kind}{operand}", 1, None
        elif kind == "*":
            expr, precedence, fraction = (f"({expr})" if precedence == 1 else expr) + f"\\cdot {operand}", 2, None
        else:
            # A fraction divided again keeps one bar: \\frac{16}{4\\cdot 2}, not a fraction of a fraction.
            fraction = (fraction[0], f"{fraction[1]}\\cdot {operand}") if fraction else (expr, str(operand))
            expr, precedence = f"\\frac{{{fraction[0]}}}{{{fraction[1]}}}", 3
    return expr


def _expert_solution(story: _Story) -> str:
    rng = _seeded("expert", story.text)  # its own stream: the problem stream is the same for either style
    answer = story.values()[-1]
    expr = latex_expression(story.start, story.ops)
    form = rng.choice(("chain", "chain", "updates", "partial"))
    if form == "partial" and len(story.ops) >= 2:
        # Collapse all but the last step into its value: "(3+4)\cdot 2-5=14-5=9".
        expr = f"{expr}={latex_expression(story.values()[-2], story.ops[-1:])}"
    if form == "updates":
        var = story.obj[0]
        updates = {"+": "{v}+{n}", "-": "{v}-{n}", "*": "{n}{v}", "/": "\\frac{{{v}}}{{{n}}}"}
        steps = [f"{var}\\leftarrow " + updates[k].format(v=var, n=n) for k, n in story.ops]
        return (
            f"${var}={story.start}$, "
            + ", ".join(f"${s}$" for s in steps)
            + f" $\\Rightarrow {var}={expr}={answer}$. \\boxed{{{answer}}}"
        )
    return f"${expr}={answer}$. \\boxed{{{answer}}}"


def _solution(story: _Story, style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    return _native_solution(story) if style == "native" else _expert_solution(story)


# ---------------------------------------------------------------- public API
def generate(
    n: int, seed: int, steps: tuple[int, int] = (1, 3), style: str = "expert", split: str = "train"
) -> list[Problem]:
    """`n` distinct problems of `split` with a uniform number of steps in `steps` (inclusive), solved in `style`.

    Deterministic in (n, seed, steps, split); `style` changes only the solutions, never the problems.
    """
    lo, hi = steps
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"steps must be (lo, hi) with 1 <= lo <= hi <= 8, got {steps!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = _seeded(VERSION, split, lo, hi, seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(100 * n + 1000):
        if len(problems) == n:
            return problems
        story = _story(rng, rng.randint(lo, hi))
        if story.text in seen or split_of(story.text) != split:
            continue
        seen.add(story.text)
        problems.append(
            Problem(
                id=f"syn-{split}-k{lo}{hi}-s{seed}-{len(problems):05d}",
                problem=story.text,
                answer=str(story.values()[-1]),
                solution=_solution(story, style),
                source="synthetic",
                meta={
                    "steps": len(story.ops),
                    "style": style,
                    "split": split,
                    "start": story.start,
                    "ops": [[kind, operand] for kind, operand in story.ops],
                    "generator": VERSION,
                },
            )
        )
    if len(problems) < n:
        raise ValueError(f"could only make {len(problems)} distinct {split} problems with steps {steps}; ask fewer")
    return problems


def benchmark(name: str, n: int = 200, seed: int = 1234) -> list[Problem]:
    """A test set: "synthetic_id" (1–3 steps, as in training), "synthetic_ood" (4–5 steps) or "synthetic_ood4"
    (4 steps)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown synthetic benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    return generate(n, seed, steps=BENCHMARKS[name], style="expert", split="test")


def warmup_set(n: int, seed: int) -> list[Problem]:
    """The warm-up SFT data: 1–3 step problems of their own split, solved in the native style."""
    return generate(n, seed, steps=(1, 3), style="native", split="warmup")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print or write synthetic arithmetic word problems.")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, nargs=2, default=(1, 3), metavar=("LO", "HI"))
    parser.add_argument("--style", choices=STYLES, default="expert")
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--out", help="write the problems to this .jsonl/.parquet file instead of printing them")
    args = parser.parse_args(argv)
    problems = generate(args.n, args.seed, tuple(args.steps), args.style, args.split)
    if args.out:
        from sftadapt.data.records import write_records

        print(f"wrote {write_records(args.out, problems)} problems to {args.out}")
        return
    for p in problems:
        print(f"[{p.id}] ({p.meta['steps']} steps, answer {p.answer})\n{p.problem}\n--- {args.style}:\n{p.solution}\n")


if __name__ == "__main__":
    main()
