"""Like for like in the study: the SDFT arm sends SDFT's own distillation prompt (PR best-of-k keeps DART's mapper
prompt), and direct RL runs at several budgets (`direct_rl@N` arms) with each budget's compute in the report."""

import dataclasses
from pathlib import Path

import pytest
from fakes import BoxedVerifier
from test_gate_meta import OWN, PROBLEMS, ScriptedEngine

from sftadapt import arms as arm_table
from sftadapt.adapt.policy import meta_text
from sftadapt.adapt.rewrite import sdft_rejection
from sftadapt.config import ConfigError
from sftadapt.data import prompts as P
from sftadapt.data.records import Example, read_records
from sftadapt.pipeline import load_run_config, planned_stages, run, seed_paths, stage_configs

# SDFT's `gsm8k_distill` template (sail-sg/sdft, src/llmtuner/data/template.py), written out here by hand from
# the source so that the constants in prompts.py are checked against it, not against themselves
SDFT_TEXT = (
    "<<SYS>>\nYou are an expert in math. Below are a math question and its reference answer. Refer to the "
    "reference answer and write a response that appropriately answers the question.\n<</SYS>>\n\n"
    "[INST] {query}\n\n{resp} [/INST] Great! Let's think step by step. "
)


def _recording(script) -> ScriptedEngine:
    """The scripted engine of test_gate_meta, keeping every prompt it was asked to continue in `.prompts` (SDFT's
    prompt is scripted as a rewrite prompt, like DART's). Wrapped, not subclassed: the engine stays the checked
    fake of tests/test_engine_protocol.py."""
    engine = ScriptedEngine(script)
    engine.prompts = []
    inner = engine.generate

    def generate(prompts, params, seeds=None):
        engine.prompts += list(prompts)
        return inner([p.replace(P.SDFT_SYSTEM, "Rewrite the solution") for p in prompts], params, seeds)

    engine.generate = generate
    return engine


# ---------------------------------------------------------------- SDFT's template
def test_the_sdft_prompt_is_sdfts_template_word_for_word():
    tok = ScriptedEngine({}).tokenizer  # no chat template: the template as SDFT wrote it
    assert P.sdft_prompt(tok, "  What is 2+2?\n", "2+2=4. \\boxed{4}\n") == SDFT_TEXT.format(
        query="What is 2+2?", resp="2+2=4. \\boxed{4}"
    )

    class Chat:  # a chat template: SDFT's three parts in the model's own turns (as SDFT's Llama 3 port does)
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    system = SDFT_TEXT.split("\n")[1]
    assert P.sdft_prompt(Chat(), "Q?", "A.") == (
        f"<system>{system}</system><user>Q?\n\nA.</user><assistant>Great! Let's think step by step. "
    )

    class NoSystem(Chat):  # a template that refuses a system turn: the system text opens the user turn
        def apply_chat_template(self, messages, **kw):
            if messages[0]["role"] == "system":
                raise ValueError("System role not supported")
            return super().apply_chat_template(messages, **kw)

    assert P.sdft_prompt(NoSystem(), "Q?", "A.") == (
        f"<user>{system}\n\nQ?\n\nA.</user><assistant>Great! Let's think step by step. "
    )


def test_sdfts_filter_and_the_meta_text_check_know_its_words_not_its_opening():
    assert sdft_rejection("Using the Reference Answer, 2+2=4. \\boxed{4}").startswith("meta_text: 'reference answer'")
    assert sdft_rejection("  Your turn! 2+2=4") is not None and sdft_rejection("2+2=4. \\boxed{4}") is None
    # the system text is a mapping prompt's instruction (every stage refuses a rewrite echoing it) ...
    echo = "Refer to the reference solution and write a response that appropriately answers the question: 4"
    assert meta_text(echo, ("What is 2+2?",)).startswith("echoes the mapping prompt 'and write a response")
    # ... the words opening the answer are the model's own: a solution may say them
    assert meta_text("Great! Let's think step by step. 2+2=4, so \\boxed{4}.", ("What is 2+2?",)) is None


def test_the_sdft_stage_sends_sdfts_prompt_and_pr_keeps_dart_mapper_prompt(tmp_path):
    from sftadapt.adapt.mapper import SynthConfig, synthesize
    from sftadapt.adapt.rewrite import RewriteConfig, rewrite
    from sftadapt.registry import step_rows

    assert step_rows()["sdft"][1].fixed == {"method": "sdft"}  # the study's SDFT step
    own = {("mapper", p.id): [OWN[0][1]] for p in PROBLEMS}
    experts = {p.id: P.ensure_boxed(p.solution, p.answer) for p in PROBLEMS}
    sent = {}
    for method in ("sdft", "prompted_rewrite"):
        engine = _recording(own)
        cfg = RewriteConfig(model="scripted", data="unused", out=str(tmp_path / method), method=method)
        rewrite(cfg, engine=engine, verifier=BoxedVerifier(), problems=PROBLEMS, progress=False, print_summary=False)
        rows = {r.id: r for r in read_records(tmp_path / method / "train.jsonl", Example)}
        assert rows["aisha"].origin == "rewrite"  # verified and clean: kept, with the hash of the prompt sent
        sent[method], hashes = engine.prompts, rows["aisha"].provenance
        tok = engine.tokenizer
    assert sent["sdft"] == [SDFT_TEXT.format(query=p.problem.strip(), resp=experts[p.id].strip()) for p in PROBLEMS]
    # the one-rewrite method with DART's prompt is still there, under its own name
    assert sent["prompted_rewrite"] == [P.mapper_prompt(tok, p.problem, experts[p.id]) for p in PROBLEMS]
    sdft_row = read_records(tmp_path / "sdft" / "train.jsonl", Example)[0]
    assert sdft_row.provenance["prompt_hash"] == P.template_hash(tok, P.SDFT_PLAIN, True) != hashes["prompt_hash"]

    pr = _recording({("mapper", p.id): [OWN[0][1]] for p in PROBLEMS})
    synth = SynthConfig(target="scripted", data="unused", out=str(tmp_path / "pr"), k=1)
    synthesize(synth, engine=pr, verifier=BoxedVerifier(), problems=PROBLEMS, progress=False, print_summary=False)
    assert pr.prompts == [P.mapper_prompt(pr.tokenizer, p.problem, experts[p.id]) for p in PROBLEMS]
    assert not any(P.SDFT_SYSTEM in prompt for prompt in pr.prompts)


# ---------------------------------------------------------------- direct RL at several budgets
STUDY = {
    "name": "budgets",
    "model": "tiny-random",
    "seeds": [0],
    "arms": ["base", "direct_rl@1", "direct_rl@2"],
    "task": {"kind": "synthetic", "train_problems": 2},
    "warmup": {"enabled": False},
    "eval": {
        "benchmarks": ["synthetic_id"],
        "limit": 1,
        "dtype": "float32",
        "raw_model": False,
        "protocol_overrides": {"max_new_tokens": 4},
    },
    "direct_rl": {"grpo": {"max_steps": 5, "num_generations": 2, "max_completion_length": 4, "save_steps": 1000}},
}


def _config(tmp_path: Path, **changes):
    import yaml

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes, "out": str(tmp_path / "run")}))
    return load_run_config(path)


def test_direct_rl_budgets_plan_one_grpo_run_each_and_leave_plain_direct_rl_as_it_was(tmp_path):
    cfg = _config(tmp_path, arms=["base", "direct_rl", "direct_rl@2", "direct_rl@16"])
    configs = stage_configs(cfg, 0, "tiny-random", seed_paths(tmp_path / "run"))
    assert configs["direct_rl"].grpo.max_steps == 5  # the section's own budget
    for name, steps in (("direct_rl@2", 2), ("direct_rl@16", 16)):
        assert configs[name].out == str(tmp_path / "run" / name)
        # the same run as plain direct RL but for its budget (and folder): like for like along the curve
        plain = configs["direct_rl"]
        assert configs[name] == dataclasses.replace(
            plain, out=configs[name].out, grpo=dataclasses.replace(plain.grpo, max_steps=steps)
        )
    # a run without budget arms builds plain direct RL exactly as before
    alone = stage_configs(_config(tmp_path, arms=["base", "direct_rl"]), 0, "tiny-random", seed_paths(tmp_path / "run"))
    assert alone["direct_rl"] == configs["direct_rl"] and not any("@" in k for k in alone)
    assert arm_table.ARM_LABELS.get("direct_rl@16") == "GRPO (direct RL), 16 steps"
    for bad in ("direct_rl@0", "direct_rl@x", "direct_rl@016"):
        with pytest.raises(ConfigError, match="unknown arm.*direct_rl@N"):
            _config(tmp_path, arms=["base", bad])
    with pytest.raises(ValueError, match="direct_rl@N names direct RL"):
        arm_table.set_table(arm_table.TABLE + (arm_table.Arm("direct_rl@3", "mine"),))
    plan = run(cfg, progress=False, dry_run=True)["plan"][0]
    assert [row["stage"] for row in plan] == [  # each arm evaluated right after it is trained
        "data",
        "eval_base",
        "direct_rl",
        "eval_direct_rl",
        "direct_rl@2",
        "eval_direct_rl@2",
        "direct_rl@16",
        "eval_direct_rl@16",
    ]
    assert planned_stages(cfg) == len(plan)


def test_two_direct_rl_budgets_run_end_to_end_and_the_report_lists_both_with_their_compute(tmp_path):
    from sftadapt.report.pool import pool

    study = run(_config(tmp_path), progress=False)
    by_arm = {a["arm"]: a for a in study["arms"]}
    assert list(by_arm) == ["base", "direct_rl@1", "direct_rl@2"]
    one, two = by_arm["direct_rl@1"]["compute"], by_arm["direct_rl@2"]["compute"]
    assert (one["optimizer_steps"], two["optimizer_steps"]) == (1, 2)
    assert 0 < one["tokens_trained"] < two["tokens_trained"] and 0 < one["tokens_generated"] < two["tokens_generated"]
    for label in ("GRPO (direct RL), 1 step", "GRPO (direct RL), 2 steps"):
        assert f"| {label} |" in study["markdown"]
    assert "prompt + completion tokens through the policy" in study["markdown"]  # what tokens trained counts
    pooled = pool([tmp_path / "run"], tmp_path / "pooled")  # the pooled report finds both budgets' folders
    assert [a["arm"] for a in pooled["arms"]] == ["base", "direct_rl@1", "direct_rl@2"]
    assert [a["compute"]["optimizer_steps"] for a in pooled["arms"][1:]] == [1, 2]
