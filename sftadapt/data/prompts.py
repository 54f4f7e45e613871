"""Every prompt the product sends, and the one place where chat templates are rendered and text is tokenised.

- `SOLVE`: the plain QA prompt. Training rows are always (SOLVE prompt -> response); the gap metric and the
  DART alignment reward score responses under it.
- `GUIDED`: Mind the Gap stage 2 (re-solve with the expert solution shown as a reference).
- `MAPPER`: DART's mapper input, also the prompted-rewrite (SDFT) baseline = an untrained mapper.

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

TEMPLATES = {"solve": SOLVE, "guided": GUIDED, "mapper": MAPPER}


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
