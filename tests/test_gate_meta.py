"""DART's gate rules for meta text and answer-only filler (reward.py `meta_text`, `no_reasoning`; the detectors in
adapt/policy.py), and the stages that write adapted sets keeping no such row.

The cheats are rewrites quoted from the archived embedded study (benchmarks/results/embedded_study_v1/seed-0.tar.xz),
kept in its DART, SDFT and PR training sets by the gate of the time; the faithful texts are the expert solutions,
the target's own correct solutions from the same archive, and data/synthetic.py's native solutions. No model: the
stage tests run on a scripted engine (its texts looked up by prompt kind and problem).
"""

import pytest
from fakes import BoxedVerifier, FakeEngine, FakeTokenizer

from sftadapt.adapt import policy
from sftadapt.adapt.policy import guided_rejection, instruction_ngrams, meta_text, missing_reasoning, rewrite_rejection
from sftadapt.adapt.reward import (
    GATE_REASONS,
    AlignmentReward,
    RewardConfig,
    content_reasons,
    gate_reasons,
    summarize_scores,
)
from sftadapt.config import ConfigError, load_config
from sftadapt.data import prompts as P
from sftadapt.data import synthetic
from sftadapt.data.records import Example, Problem, read_records
from sftadapt.engines.base import Completion, TokenScores
from sftadapt.verify import Verdict

# (problem, expert solution, gold answer) of the archived problems the quoted rewrites belong to
AISHA = (
    "There are 12 toy cars in Aisha's jar. Grace gives her 5 toy cars. She sells 14 toy cars. She gets enough toy "
    "cars to have 3 times as many as before. How many toy cars does Aisha have now?",
    r"$(12+5-14)\cdot 3=3\cdot 3=9$. \boxed{9}",
    "9",
)
ZOE = (
    "Zoe owns 4 cookies. Jack gives her 8 cookies. Next, she swaps each of her cookies for 5 new ones. How many "
    "cookies does Zoe have in the end?",
    r"$(4+8)\cdot 5=60$. \boxed{60}",
    "60",
)
CHLOE = (
    "Chloe starts with 11 plums. She gets enough plums to have 4 times as many as before, and then she gets enough "
    "plums to have 4 times as many as before. How many plums does Chloe have at the end?",
    r"$11\cdot 4\cdot 4=176$. \boxed{176}",
    "176",
)
AVA = (
    "Ava owns 4 rocks. She packs her rocks equally into 2 boxes and keeps one box. Then she gets 12 more rocks from "
    "her father. After that, Ava gets enough rocks to have 2 times as many as before. How many rocks does Ava end "
    "up with?",
    r"$(\frac{4}{2}+12)\cdot 2=14\cdot 2=28$. \boxed{28}",
    "28",
)
ELENA = (
    "There are 15 stamps in Elena's jar. Her brother gives her 3 stamps. How many stamps does Elena have at the end?",
    r"$15+3=18$. \boxed{18}",
    "18",
)
RUBY = (
    "There are 10 pears in Ruby's drawer. She sells 3 pears. Ruby eats 3 of them. After that, she gives 2 pears to "
    "her grandfather. How many pears does Ruby have in the end?",
    r"$10-3-3-2=2$. \boxed{2}",
    "2",
)
OMAR = (
    "Omar has 2 muffins. He collects 6 more muffins. Later, Omar swaps each of his muffins for 5 new ones. Later, "
    "he buys 18 more muffins. How many muffins does Omar have in the end?",
    r"$(2+6)\cdot 5+18=40+18=58$. \boxed{58}",
    "58",
)
GRACE = (
    "Grace has 13 pencils. Grace collects 19 more pencils. Next, she shares her pencils equally among herself and a "
    "friend. Then she gives 13 pencils to Mia. How many pencils does Grace have in the end?",
    r"$\frac{13+19}{2}-13=16-13=3$. \boxed{3}",
    "3",
)

# rewrites the archived sets kept (set it was in), and the reasons the gate gives them now
CHEATS = [
    (  # DART, Patch
        AISHA,
        "Rewriting the problem in your own words can be a bit challenging, so I'll break it down step by step. "
        r"So the answer is \boxed{9}. So the answer is \boxed{9}.",
        ["meta_text", "no_reasoning"],
    ),
    (  # DART, Patch
        ZOE,
        "Rewrite the solution:\n\n1. Zoe starts with 4 cookies. She gets 8 from Jack, so she has 4 + 8 = 12 cookies. "
        r"She swaps each one for 5 new ones, so she has 12 * 5 = 60 cookies. So the answer is \boxed{60}.",
        ["meta_text"],
    ),
    (  # DART
        CHLOE,
        r"Rewriting the solution as your own step-by-step reasoning and ending with the answer within \boxed{176}, "
        "I'll break it down step by step:\nRewrite the problem: Chloe starts with 11 plums. She gets 4 times as "
        "many, so she has 11 * 4 = 44 plums. She gets 4 times as many, so she has 44 * 4 = 176 plums. So the answer "
        r"is \boxed{176}.",
        ["meta_text"],
    ),
    (  # DART
        AVA,
        "Rewriting the solution as your own step-by-step reasoning and outputing the answer in the specified format "
        r"is the best way to present the answer. So the answer is \boxed{28}.",
        ["meta_text", "no_reasoning"],
    ),
    (  # DART
        ELENA,
        "Rewriting the solution by yourself is quite challenging, but I'll provide you with the answer. So the "
        r"answer is \boxed{18}.",
        ["meta_text", "no_reasoning"],
    ),
    (  # SDFT
        AISHA,
        "Rewrite the problem as follows: Aisha starts with 12 toy cars. She gets 5 from Grace, so she has 12 + 5 = 17 "
        "toy cars. She sells 14, so she has 17 - 14 = 3 toy cars left. She gets 3 times as many, so she has 3 * 3 = "
        r"9 toy cars. So the answer is \boxed{9}.",
        ["meta_text"],
    ),
    (  # SDFT
        ZOE,
        "Rewrite the solution as follows:\n\nRewrite the answer as 60. So the answer is \\boxed{60}.",
        ["meta_text", "no_reasoning"],
    ),
    (  # PR
        RUBY,
        r"Rewrite the solution as you would normally, so it's concise, but with the right format. So the answer is "
        r"\boxed{2}.",
        ["meta_text", "no_reasoning"],
    ),
]
# the target's own correct solutions (the archive's Mind the Gap `self` rows), the last with a slip the answer hides
OWN = [
    (
        AISHA,
        "Aisha starts with 12 toy cars. She gets 5 from Grace, so she has 12 + 5 = 17 toy cars. She sells 14, so she "
        "has 17 - 14 = 3 toy cars left. She gets 3 times as many, so she has 3 * 3 = 9 toy cars. So the answer is "
        r"\boxed{9}.",
    ),
    (
        OMAR,
        "Omar starts with 2 muffins. He collects 6 more, so he has 2 + 6 = 8 muffins. He swaps each one for 5 new "
        "ones, so he has 8 * 5 = 40 muffins. He buys 18 more, so he has 40 + 18 = 58 muffins. So the answer is "
        r"\boxed{58}.",
    ),
    (
        GRACE,
        "Grace starts with 13 pencils. She collects 19 more, so she has 13 + 19 = 32 pencils. She shares them equally "
        "among 2 people, so she has 32 / 2 = 15 pencils. She gives 13 to Mia, so she has 15 - 13 = 3 pencils left. "
        r"So the answer is \boxed{3}.",
    ),
]
OPEN = dict(min_tokens=0, min_length_ratio=0.0, max_length_ratio=1e9, copy_check=False)  # only the rules tested here
OLD_GATE = RewardConfig(meta_check=False, reasoning_check=False, **OPEN)


def gate(case, text, cfg=None):
    (problem, expert, answer) = case
    return gate_reasons(
        text, text.split(), expert, 1, "correct", cfg or RewardConfig(**OPEN), "boxed", problem=problem, answer=answer
    )


# ---------------------------------------------------------------- the rules
@pytest.mark.parametrize("case, text, reasons", CHEATS)
def test_archived_cheats_fail_with_the_new_reasons_and_passed_the_old_gate(case, text, reasons):
    assert gate(case, text) == reasons
    assert gate(case, text, OLD_GATE) == []  # the hole the mapper learned to pass through


def test_faithful_solutions_pass():
    for case, text in OWN:
        assert gate(case, text) == [], text
    for problem, expert, answer in (AISHA, ZOE, CHLOE, AVA, ELENA, RUBY, OMAR, GRACE):
        # the expert as a rewrite of itself, with only the problem as context (its own words excuse nothing)
        assert meta_text(expert, (problem,)) is None
        assert missing_reasoning(expert, problem, expert, answer) is None
    # common words of a solution are no meta text: "solve the problem step by step", "the final answer is"
    plain = "Let's solve the problem step by step. " + OWN[1][1].replace("So the answer is", "The final answer is")
    assert gate(OMAR, plain) == []


def test_synthetic_native_solutions_pass_against_the_expert_of_the_same_problem():
    native = synthetic.generate(150, 0, style="native") + synthetic.generate(50, 0, (4, 5), "native", "test")
    expert = synthetic.generate(150, 0, style="expert") + synthetic.generate(50, 0, (4, 5), "expert", "test")
    assert [p.problem for p in native] == [p.problem for p in expert]
    for n, e in zip(native, expert):
        y = P.ensure_boxed(e.solution, e.answer)
        assert content_reasons(n.solution, e.problem, y, e.answer, RewardConfig()) == [], n.solution
        assert content_reasons(y, e.problem, y, e.answer, RewardConfig()) == []


def test_a_wordy_paraphrase_passes_by_the_experts_intermediate_results():
    problem, expert, answer = OMAR
    wordy = (
        "Omar begins with 2 muffins and collects 6 more, which makes 8. Swapping each for 5 gives him 40, and "
        r"buying 18 more brings him to 58. So the answer is \boxed{58}."
    )
    assert gate(OMAR, wordy) == []  # no computation written, but it reaches 40, the expert's intermediate result
    vague = wordy.replace("gives him 40", "gives him many more")
    assert gate(OMAR, vague) == ["no_reasoning"]
    assert "0 of its 1 intermediate results" in missing_reasoning(vague, problem, expert, answer)
    # an answer-only filler with no meta words at all
    assert gate(OMAR, r"Omar ends up with a lot of muffins after all that. So the answer is \boxed{58}.") == [
        "no_reasoning"
    ]
    # the bar never exceeds what the expert shows: a wordy expert without computations asks for none
    assert (
        missing_reasoning("It is 17. \\boxed{17}", "What is it?", "The greatest integer is $17$. \\boxed{17}") is None
    )


def test_meta_text_comes_from_the_mapping_templates_and_ignores_what_the_context_says(monkeypatch):
    # a run of the MAPPER instruction's own words, without any of the explicit meta phrases
    echo = "Keep every essential step and the same final answer. " + OWN[0][1]
    assert meta_text(echo, AISHA[:2]) == "echoes the mapping prompt 'keep every essential step and the'"
    assert meta_text("Solve the problem again step by step: " + OWN[0][1]) is not None  # GUIDED's words
    # no n-gram spans a placeholder: GUIDED's "Problem: {problem}\n\nTeacher's solution (for reference)" joins nothing
    assert ("problem", "teacher", "s", "solution", "for", "reference") not in instruction_ngrams()
    assert ("answer", "within", "boxed", "output", "only", "the") in instruction_ngrams()  # within a piece: kept
    # a new mapping template is checked as soon as it exists (the n-grams are read from prompts.TEMPLATES)
    text = "Explain it to a curious ten year old child. " + OWN[0][1]
    assert meta_text(text) is None
    monkeypatch.setitem(P.TEMPLATES, "kid", "Explain it to a curious ten year old child.\n{problem}\n{solution}")
    assert meta_text(text) == "echoes the mapping prompt 'explain it to a curious ten'"
    monkeypatch.undo()
    assert meta_text(text) is None
    # what the problem or the expert says too is theirs, not the rewrite's talk
    problem = "Explain in your own words how many apples Tom has: he has 3 and buys 4."
    assert meta_text("In my own words: Tom has 3 + 4 = 7 apples.", (problem, "$3+4=7$")) is None
    assert meta_text("In my own words: Tom has 3 + 4 = 7 apples.", ("Tom has 3 and buys 4.", "$3+4=7$")) is not None
    expert = r"Rewriting the answer as a fraction gives $\frac{1}{2}$. \boxed{\frac{1}{2}}"
    assert meta_text("Rewriting the answer as a fraction: 1/2", ("Halve 1.", expert)) is None
    assert meta_text("Rewriting the answer as a fraction: 1/2", ("Halve 1.", "$1/2$")) is not None


def test_the_reward_gates_counts_and_never_scores_them():
    scored = []

    def score(prompts, responses, entropy, **_):
        scored.extend(responses)
        return [TokenScores(list(range(len(r.split()))), [-1.0] * len(r.split())) for r in responses]

    reward = AlignmentReward(
        score=score,
        verify=lambda golds, texts: [Verdict("correct", g, "boxed", 0.0) for g in golds],
        tokenize=str.split,
        qa_prompt=lambda p: p,
        cfg=RewardConfig(**OPEN),
    )
    texts = [CHEATS[0][1], CHEATS[1][1], OWN[0][1]]
    scores = reward.evaluate([AISHA[0], ZOE[0], AISHA[0]], ["9", "60", "9"], [AISHA[1], ZOE[1], AISHA[1]], texts)
    assert [s.reasons for s in scores] == [["meta_text", "no_reasoning"], ["meta_text"], []]
    assert scored == [OWN[0][1]] and scores[0].reward == RewardConfig().r_min
    stats = summarize_scores(scores)
    assert stats["fail_meta_text"] == pytest.approx(2 / 3) and stats["fail_no_reasoning"] == pytest.approx(1 / 3)
    assert {"meta_text", "no_reasoning"} <= set(GATE_REASONS)


def test_min_reasoning_frac_is_a_fraction():
    assert load_config(RewardConfig, None, ["min_reasoning_frac=1"]).min_reasoning_frac == 1.0
    with pytest.raises(ConfigError, match="min_reasoning_frac"):
        load_config(RewardConfig, None, ["min_reasoning_frac=1.5"])


# ---------------------------------------------------------------- the stages keep no such row
PROBLEMS = [Problem(name, case[0], case[2], case[1]) for name, case in (("aisha", AISHA), ("zoe", ZOE))]


class WordTokenizer(FakeTokenizer):
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(w) for w in text.split()]}

    def get_vocab(self):
        return {}


class ScriptedEngine(FakeEngine):
    """Texts from `script[(kind, problem id)]`, kind `mapper` | `guided` | `solve` by the prompt; -1 nat a token."""

    name = "scripted"

    def __init__(self, script):
        self.tokenizer, self.script = WordTokenizer(), script
        self.stats = {"generated_tokens": 0, "scored_tokens": 0, "generate_seconds": 0.0, "score_seconds": 0.0}

    def generate(self, prompts, params, seeds=None):
        out = []
        for prompt, row in zip(prompts, seeds):
            kind = (
                "guided"
                if "Teacher's solution" in prompt
                else "mapper"
                if "Rewrite the solution" in prompt
                else "solve"
            )
            pid = next(p.id for p in PROBLEMS if p.problem in prompt)
            texts = self.script[(kind, pid)][: params.n]
            out.append(
                [Completion(t, [1] * len(t.split()), [-1.0] * len(t.split()), "stop", s) for t, s in zip(texts, row)]
            )
        return out

    def score(self, prompts, responses, entropy=False, **_):
        return [TokenScores([1] * (len(r.split()) + 1), [-1.0] * (len(r.split()) + 1)) for r in responses]

    def close(self):
        pass


def assert_no_meta_rows(rows):
    for row in rows:
        assert meta_text(row.response, (row.problem,)) is None or row.origin == "expert", row.response


def test_mapper_synthesis_keeps_no_meta_text_row(tmp_path):
    from sftadapt.adapt.mapper import SynthConfig, synthesize

    # aisha: the echo beside the target's own solution; zoe: only cheats, so the expert row stands
    engine = ScriptedEngine(
        {("mapper", "aisha"): [CHEATS[0][1], OWN[0][1]], ("mapper", "zoe"): [CHEATS[1][1], CHEATS[6][1]]}
    )
    cfg = SynthConfig(
        target="scripted", data="unused", out=str(tmp_path / "pr"), k=2, reward=RewardConfig(max_length_ratio=1e9)
    )
    summary = synthesize(
        cfg, engine=engine, verifier=BoxedVerifier(), problems=PROBLEMS, progress=False, print_summary=False
    )
    rows = {r.id: r for r in read_records(tmp_path / "pr" / "train.jsonl", Example)}
    assert rows["aisha"].origin == "mapper" and rows["aisha"].response == OWN[0][1]
    assert rows["zoe"].origin == "expert" and rows["zoe"].response == P.ensure_boxed(ZOE[1], "60")
    assert [a["meta"]["gate_reasons"] for a in rows["zoe"].attempts] == [["meta_text"], ["meta_text", "no_reasoning"]]
    assert summary["gate_failures"]["meta_text"] == pytest.approx(3 / 4)
    assert_no_meta_rows(rows.values())


def test_the_rewrite_stage_refuses_meta_text_in_sdft_rewrites_and_guided_tries(tmp_path):
    from sftadapt.adapt.rewrite import RewriteConfig, rewrite

    def run(method, script, **opts):
        cfg = load_config(
            RewriteConfig,
            None,
            None,
            base={"model": "scripted", "out": str(tmp_path / method), "method": method, **opts},
        )
        summary = rewrite(
            cfg,
            engine=ScriptedEngine(script),
            verifier=BoxedVerifier(),
            problems=PROBLEMS,
            progress=False,
            print_summary=False,
        )
        return summary, {r.id: r for r in read_records(f"{cfg.out}/train.jsonl", Example)}

    # SDFT: one rewrite each; the echo (aisha) and the echoing filler (zoe) are refused, both rows fall back
    summary, rows = run("prompted_rewrite", {("mapper", "aisha"): [CHEATS[5][1]], ("mapper", "zoe"): [CHEATS[6][1]]})
    assert {i: r.origin for i, r in rows.items()} == {"aisha": "expert", "zoe": "expert"}
    assert rows["aisha"].attempts[0]["meta"]["rejected"].startswith("meta_text: ")
    assert summary["counts"]["rewrite_refused"] == 2
    _, kept = run(
        "prompted_rewrite",
        {("mapper", "aisha"): [OWN[0][1]], ("mapper", "zoe"): [CHEATS[1][1].replace("Rewrite the solution:", "")]},
        out=str(tmp_path / "ok"),
    )
    assert {i: r.origin for i, r in kept.items()} == {"aisha": "rewrite", "zoe": "rewrite"}
    # Mind the Gap: a guided try that echoes the instruction is refused, the clean one kept
    wrong = [r"nope \boxed{0}"]
    script = {("solve", "aisha"): wrong, ("solve", "zoe"): wrong}
    script[("guided", "aisha")] = ["Solve the problem again step by step in your own words: " + OWN[0][1], OWN[0][1]]
    script[("guided", "zoe")] = [CHEATS[1][1], CHEATS[1][1]]
    _, rows = run("mind_the_gap", script, k=1, guided_tries=2)
    assert rows["aisha"].origin == "guided" and rows["aisha"].response == OWN[0][1]
    guided = [a for a in rows["aisha"].attempts if a["stage"] == "guided"]
    assert guided[0]["meta"]["rejected"].startswith("meta_text: echoes the mapping prompt")
    assert rows["zoe"].origin == "expert"
    assert_no_meta_rows(rows.values())
    # the shared refusals, directly
    assert rewrite_rejection(CHEATS[6][1], ZOE[0], ZOE[1], "60").startswith("meta_text")
    assert rewrite_rejection(r"Zoe gets a lot. \boxed{60}", ZOE[0], ZOE[1], "60").startswith("no_reasoning")
    assert guided_rejection(CHEATS[1][1], ZOE[1], 0.9, ["teacher"], problem=ZOE[0])[0].startswith("meta_text")
    assert policy.rejection_kind("meta_text: 'x'") == "meta_text"
