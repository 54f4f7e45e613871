"""Every prompt the product sends, and the one place where chat templates are rendered and text is tokenised.

- `SOLVE`: the plain QA prompt. Training rows are always (SOLVE prompt -> response); the gap metric and the
  DART alignment reward score responses under it.
- `GUIDED`: Mind the Gap stage 2 (re-solve with the expert solution shown as a reference).
- `MAPPER`: DART's mapper input; with the untrained mapper, the prompted-rewrite (PR best-of-k) baseline.
- `SDFT`: SDFT's own distillation prompt (Yang et al., ACL 2024) for the one-rewrite baseline (the rewrite
  stage's `sdft` method): a system turn, the user turn (problem, blank line, expert solution) and the
  opening words of the answer, which the rewrite continues; `sdft_prompt` renders it.
- `JUDGE`: the optional reasoning judge of DART's gate (adapt/reward.py, `reward.judge`): does a rewrite's
  reasoning carry the solution? Answered with one word, VALID or INVALID. Not in `TEMPLATES`: it is neither a
  prompt a training response answers nor a mapping prompt (the meta-text check reads those), and no model writes
  a rewrite after it.

`render` applies the model's chat template (or not) to one user turn; `prompt_token_ids` and
`response_token_ids` are the tokenisation every stage shares (sampling, scoring, training), so per-token
log-probs recorded by one stage line up with the tokens another stage trains on.
"""

from __future__ import annotations

import hashlib
import re

SOLVE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."

GUIDED = (
    "You are given a math problem together with a teacher's worked solution and final answer. "
    "Use the teacher's solution only if you get stuck. Solve the problem again step by step in your own words; "
    "do not copy the teacher's sentences. End with the final answer within \\boxed{{}}.\n\n"
    "Problem: {problem}\n\n"
    "Teacher's solution (for reference): {solution}\n\n"
    "Now solve the problem in your own way:"
)

MAPPER = (
    "Rewrite the solution below as your own step-by-step reasoning, in the way you would naturally explain it. "
    "Keep every essential step and the same final answer, do not copy its sentences, and end with the final "
    "answer within \\boxed{{}}. Output only the rewritten solution.\n\n"
    "Problem: {problem}\n\n"
    "Solution: {solution}"
)

# Shown to the judge model after the rule gate passed a rewrite. The gold answer is given so the judge checks the
# reasoning, not the arithmetic of the last line (the verifier has checked the answer already).
JUDGE = (
    "You are checking a worked solution to a math problem. The correct final answer is: {answer}\n\n"
    "Problem: {problem}\n\n"
    "Worked solution:\n{response}\n\n"
    "Does the worked solution really solve the problem, with valid steps that lead to its final answer? "
    "Answer INVALID if it only states the answer, skips the steps that matter, makes a step that is wrong, or talks "
    "about the task instead of solving it. Reply with one word: VALID or INVALID."
)

# SDFT's GSM8K distillation template, `gsm8k_distill` in sail-sg/sdft's src/llmtuner/data/template.py at commit
# 3167df67e1f5c8c3b1ea3da1eb6c0eeefbaaa943 (the template its scripts/gsm8k/sdft.sh sends to rewrite each training
# answer), word for word. It has three parts: the system text, the user turn `{query}\n\n{resp}` (each stripped)
# and the words that open the assistant turn. The same repository's Llama 3 port (`llama3_gsm8k_distill`) puts
# the same three parts in Llama 3's chat format, which is what `sdft_prompt` does with the target's chat template.
SDFT_SYSTEM = (
    "You are an expert in math. "
    "Below are a math question and its reference answer. "
    "Refer to the reference answer and write a response that appropriately answers the question."
)
SDFT = "{problem}\n\n{solution}"
SDFT_PREFILL = "Great! Let's think step by step. "
# The template as SDFT wrote it out (Llama 2's chat layout): what a model without a chat template is sent.
SDFT_PLAIN = "<<SYS>>\n" + SDFT_SYSTEM + "\n<</SYS>>\n\n[INST] " + SDFT + " [/INST] " + SDFT_PREFILL
# The prompts whose text a training response answers (solve) or rewrites from (the rest). The meta-text check
# (adapt/policy.py) reads the instruction words of those embedding a {solution}: SDFT's entry is its system and
# user text, without SDFT_PREFILL, the answer's own opening words ("Let's think step by step" is no echo of a task).
TEMPLATES = {"solve": SOLVE, "guided": GUIDED, "mapper": MAPPER, "sdft": SDFT_SYSTEM + "\n\n" + SDFT}


def render(tokenizer, user_text: str, chat: bool = True, system: str | None = None) -> str:
    """The full prompt text for one user turn, ending where the model's answer starts."""
    if not chat or getattr(tokenizer, "chat_template", None) is None:
        return user_text
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_format(tokenizer, chat: bool = True) -> str:
    """How `render` shapes prompts for this tokenizer, as stage summaries say it. An instruct model gets its
    chat template; so does a base model that ships one as its harness's format (Qwen2.5-Math-7B: its template's
    default system turn, "Please reason step by step...", is the Qwen2.5-Math evaluation prompt); a model
    without a template gets the plain text."""
    if not chat:
        return "plain text (chat off)"
    if getattr(tokenizer, "chat_template", None) is None:
        return "plain text (the model has no chat template)"
    return "chat template (the model's own)"


def solve_prompt(tokenizer, problem: str, chat: bool = True, template: str = SOLVE) -> str:
    return render(tokenizer, template.format(problem=problem), chat=chat)


def guided_prompt(tokenizer, problem: str, solution: str, chat: bool = True, template: str = GUIDED) -> str:
    return render(tokenizer, template.format(problem=problem, solution=solution), chat=chat)


def mapper_prompt(tokenizer, problem: str, solution: str, chat: bool = True, template: str = MAPPER) -> str:
    return render(tokenizer, template.format(problem=problem, solution=solution), chat=chat)


def sdft_prompt(tokenizer, problem: str, solution: str, chat: bool = True) -> str:
    """SDFT's distillation prompt: the system turn SDFT_SYSTEM, the user turn SDFT with the problem and the
    solution stripped (as SDFT's template strips them), then the assistant turn opened with SDFT_PREFILL; the
    model's continuation is the rewrite (SDFT keeps only the continuation). With the model's chat template; a
    model without one, or chat off, is sent SDFT_PLAIN, the template as SDFT wrote it. A chat template that
    refuses a system turn gets the system text at the top of the user turn (ours)."""
    values = {"problem": problem.strip(), "solution": solution.strip()}
    if not chat or getattr(tokenizer, "chat_template", None) is None:
        return SDFT_PLAIN.format(**values)
    user = SDFT.format(**values)
    try:
        opened = render(tokenizer, user, chat=True, system=SDFT_SYSTEM)
    except Exception as err:  # jinja2's TemplateError ("System role not supported"), raised by the template
        if "system" not in str(err).lower():
            raise
        opened = render(tokenizer, f"{SDFT_SYSTEM}\n\n{user}", chat=True)
    return opened + SDFT_PREFILL


def template_hash(tokenizer, template: str, chat: bool = True) -> str:
    """Hash of what decides the prompt text: the template and, if used, the model's chat template."""
    chat_template = (getattr(tokenizer, "chat_template", None) or "") if chat else ""
    return hashlib.sha256(f"{template}\x1f{chat}\x1f{chat_template}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------- tokenisation shared by every stage
def end_token_id(tokenizer) -> int:
    """The token that closes a response (EOS; for chat models the end-of-turn token, e.g. <|im_end|>)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: cannot mark where a response ends")
    return tokenizer.eos_token_id


def prompt_token_ids(tokenizer, prompt_text: str) -> list[int]:
    ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    # Base-model prompts (no chat template) still need the BOS their tokenizer would add.
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


def response_token_ids(tokenizer, response: str) -> list[int]:
    """Response tokens as training sees them: the text's tokens, then the end token (trained on too)."""
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [end_token_id(tokenizer)]


def score_pairs(tokenizer, prompts, responses) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of each pair an engine scores, tokenised as training does (a prompt shared by
    many responses is tokenised once). Every backend's `score` starts here, so their per-token lists agree."""
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    cache: dict[str, list[int]] = {}
    pairs = []
    for prompt, response in zip(prompts, responses):
        if prompt not in cache:
            cache[prompt] = prompt_token_ids(tokenizer, prompt)
        pairs.append((cache[prompt], response_token_ids(tokenizer, response)))
    return pairs


# ---------------------------------------------------------------- answer format
_CALC = re.compile(r"<<[^<>]*>>")
_GSM_FINAL = re.compile(r"\n?####\s*(.+?)\s*$", re.S)


def ensure_boxed(solution: str, answer: str) -> str:
    """An expert solution in the evaluation format: GSM8K `<<calc>>` notes and `#### N` removed, ending in
    `\\boxed{answer}` (kept as is if it already has a final `\\boxed{}`)."""
    text = _CALC.sub("", solution).rstrip()
    text = _GSM_FINAL.sub("", text).rstrip()
    if "\\boxed" in text:
        return text
    return f"{text}\nThe final answer is $\\boxed{{{answer}}}$."
