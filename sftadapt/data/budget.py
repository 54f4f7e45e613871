"""Token-length budgets: every prompt and response is measured in tokens before it reaches an engine.

A 200k-character problem, or a 100k-digit answer inside an expert solution (which the guided prompt quotes),
would otherwise make `generate`/`score` ask torch for tens of GB and die with no output. So a stage, right
after it has its tokenizer, calls `screen(...)`:

- the model's context is the smaller of the model config's `max_position_embeddings` (or `n_positions`,
  `max_sequence_length`, `seq_length`) and the tokenizer's `model_max_length` when that is a real number;
- stages that generate through an engine (sample, rewrite, map synthesize, eval) clamp each request to the
  room its prompt leaves (engines/facts.py): a prompt may take up to `context - 1` tokens, or less with a
  budget (`max_prompt_tokens`, or `$SFTADAPT_MAX_PROMPT_TOKENS`), `max_new_tokens` may reach the context (the
  Qwen2.5-Math recipe asks 4096 of 4096) but not pass it (`max_new_tokens: 1e10` is a `BudgetError`, one
  line), and the stage says once how many prompts were clamped;
- the RL stages (map train, direct RL), whose trainer cannot clamp a request, keep the strict rule: a prompt
  may take `context - max_new_tokens` tokens and `max_new_tokens >= context` is a `BudgetError`;
- a prompt + response pair that is scored (an expert solution under the solve prompt) may take `context`
  tokens;
- a problem over its budget becomes a reject naming file, line (when the loader recorded them), the field
  that was too long as the source names it (`question` for a GSM8K row, whatever `--problem-field` said), the
  token count and the limit; the run goes on with the rest.
- the budget is each stage's `max_prompt_tokens` option (sample, rewrite, map train, map synthesize, direct RL,
  eval's `--max-prompt-tokens`; default: the model's context less max_new_tokens); `$SFTADAPT_MAX_PROMPT_TOKENS`
  is the fallback when the option is unset.

    from sftadapt.data import budget
    problems, over = budget.screen(tok, problems, context=budget.context_length(tok, engine),
                                   max_new_tokens=256, prompts={"problem": lambda p: solve_prompt(tok, p.problem)})
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sftadapt.data.records import Problem

ENV_BUDGET = "SFTADAPT_MAX_PROMPT_TOKENS"
_CONFIG_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
_NO_LIMIT = 10**7  # a tokenizer's model_max_length above this is the "no limit" sentinel (~1e30)


class BudgetError(ValueError):
    """A length setting that can never fit the model's context (one line for the user)."""


def config_context(config: Any) -> int | None:
    """The context a model config (a transformers config or its config.json as a dict) declares, or None."""
    for key in _CONFIG_KEYS:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def context_length(tokenizer=None, engine=None, model_spec: str | None = None) -> int | None:
    """The model's context in tokens (None when nothing says): the engine's `context_length`, else the model
    folder's config.json, then capped by the tokenizer's model_max_length."""
    found: list[int] = []
    if engine is not None and engine.context_length:
        found.append(engine.context_length)
    if not found and model_spec:
        try:
            from sftadapt.runtime.models import resolve_model

            config = Path(resolve_model(model_spec)) / "config.json"
            if config.is_file():
                value = config_context(json.loads(config.read_text(encoding="utf-8")))
                if value:
                    found.append(value)
        except Exception:  # an unknown model is the loader's error to report, not ours
            pass
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < _NO_LIMIT:
        found.append(tok_max)
    return min(found) if found else None


def check_max_new_tokens(
    max_new_tokens: int, context: int | None, name: str = "max_new_tokens", clamp: bool = False
) -> int:
    """`max_new_tokens` itself, if it leaves room for a prompt in `context` (with `clamp`, where requests are
    clamped to the room their prompt leaves: if it is at most the context); else BudgetError."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise BudgetError(f"{name} = {max_new_tokens!r}: must be a whole number >= 1")
    if clamp and context is not None and max_new_tokens > context:
        raise BudgetError(
            f"{name} = {max_new_tokens} does not fit the model's context of {context} tokens: no request can "
            f"take more than {context} (requests are clamped to the room their prompt leaves)"
        )
    if not clamp and context is not None and max_new_tokens >= context:
        raise BudgetError(
            f"{name} = {max_new_tokens} does not fit the model's context of {context} tokens "
            f"(prompt + new tokens <= {context}): use at most {context // 2} or so"
        )
    return max_new_tokens


def prompt_budget(context: int | None, max_new_tokens: int, max_prompt_tokens: int | None = None) -> int | None:
    """Tokens a prompt may take: the context less the new tokens, capped by the configured budget."""
    if max_prompt_tokens is None and os.environ.get(ENV_BUDGET):
        try:
            max_prompt_tokens = int(os.environ[ENV_BUDGET])
        except ValueError:
            raise BudgetError(f"${ENV_BUDGET} = {os.environ[ENV_BUDGET]!r}: not a whole number") from None
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise BudgetError(f"max_prompt_tokens = {max_prompt_tokens}: must be >= 1")
    limits = [x for x in ((context - max_new_tokens) if context else None, max_prompt_tokens) if x is not None]
    return min(limits) if limits else None


def max_prompt_tokens_option():
    """The `max_prompt_tokens` option of every stage config that samples or scores."""
    from sftadapt.config import option

    return option(
        None,
        help="prompt budget in tokens: longer prompts become rejects (default: the model's context "
        f"less max_new_tokens; ${ENV_BUDGET} when this is unset)",
    )


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def screen(
    tokenizer,
    problems: Sequence[Problem],
    *,
    context: int | None,
    max_new_tokens: int,
    prompts: Mapping[str, Callable[[Problem], str]],
    scored: Mapping[str, tuple[Callable[[Problem], str], Callable[[Problem], str]]] | None = None,
    max_prompt_tokens: int | None = None,
    source: str = "",
    clamped: list | None = None,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """(problems within budget, reject rows for the others).

    `prompts`: field name -> the prompt a problem's text becomes (generated from: prompt + max_new_tokens
    must fit). `scored`: field name -> (prompt, response) that is teacher-forced (prompt + response must fit
    the context). A reject names the file and line the loader recorded on the problem (`problem.where`).

    With `clamped` (a list: the ids of clamped problems are appended to it), a generation may be clamped to
    the room its prompt leaves, as the engines do (engines/facts.py): a prompt then needs only one token of
    room, and `max_new_tokens` may reach the context; without it (the RL stages, whose trainer cannot clamp a
    request) prompt + max_new_tokens must fit."""
    if clamped is None:
        check_max_new_tokens(max_new_tokens, context)
        limit = prompt_budget(context, max_new_tokens, max_prompt_tokens)
    else:
        check_max_new_tokens(max_new_tokens, context, clamp=True)
        limit = prompt_budget(context, 1, max_prompt_tokens)
    kept, rejects = [], []
    for p in problems:
        reason = None
        for name, make in prompts.items():
            if limit is None:
                break
            text = make(p)
            # No tokenizer packs more than ~64 characters into a token: a longer text is over without
            # tokenizing all of it (a 1 MiB text costs one bounded call, not a pathological one).
            n = count_tokens(tokenizer, text[: 64 * (limit + 1)])
            if n > limit:
                reason = (
                    name,
                    n,
                    f"the prompt is {n}{'+' if len(text) > 64 * (limit + 1) else ''} tokens, over "
                    f"its budget of {limit} (context {context}, max_new_tokens {max_new_tokens}"
                    + (
                        f", max_prompt_tokens {max_prompt_tokens or os.environ.get(ENV_BUDGET)}"
                        if (max_prompt_tokens or os.environ.get(ENV_BUDGET))
                        else ""
                    )
                    + ")",
                )
                break
            if clamped is not None and context is not None and n + max_new_tokens > context:
                clamped.append(p.id)
        if reason is None and context is not None:
            for name, (make_prompt, make_response) in (scored or {}).items():
                prompt, response = make_prompt(p), make_response(p)
                cut = 64 * (context + 1)
                n = count_tokens(tokenizer, prompt[:cut]) + count_tokens(tokenizer, response[:cut]) + 1
                if n > context:
                    reason = (name, n, f"prompt + {name} are {n} tokens, over the model's context of {context}")
                    break
        if reason is None:
            kept.append(p)
            continue
        field, n, why = reason
        file, line = getattr(p, "where", None) or (source, 0)
        field = (getattr(p, "fields", None) or {}).get(field, field)  # the source's name (`question`)
        rejects.append(
            {
                "file": file,
                "line": line,
                "field": field,
                "reason": why,
                "tokens": n,
                "raw": {"id": p.id, "problem": p.problem[:2000], "answer": p.answer[:200]},
            }
        )
    return kept, rejects


def screen_stage(
    engine,
    problems: Sequence[Problem],
    max_new_tokens: int,
    rejects_file: str | os.PathLike,
    prompts: Mapping[str, Callable[[Problem], str]],
    scored=None,
    max_prompt_tokens: int | None = None,
    tokenizer=None,
    model_spec: str | None = None,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """`screen` with the engine's tokenizer and context, the rejects added to the stage's rejects file (a
    stage's one call; `engine` may be None when `tokenizer` and `model_spec` are given, as for the RL stages).
    Raises BudgetError when no problem is left."""
    from sftadapt.data.sources import read_rejects, write_rejects

    tokenizer = tokenizer if tokenizer is not None else engine.tokenizer
    context = context_length(tokenizer, engine, model_spec)
    clamped: list | None = [] if engine is not None else None  # engines clamp a request; RL trainers cannot
    kept, over = screen(
        tokenizer,
        problems,
        context=context,
        max_new_tokens=max_new_tokens,
        prompts=prompts,
        scored=scored,
        max_prompt_tokens=max_prompt_tokens,
        clamped=clamped,
    )
    if clamped and os.environ.get("SFTADAPT_QUIET") != "1":
        print(
            f"{len(set(clamped))} of {len(problems)} problems have a prompt that leaves less than max_new_tokens = "
            f"{max_new_tokens} of the model's {context}-token context: their samples are clamped to the room left "
            "(and end 'length' there)",
            file=sys.stderr,
            flush=True,
        )
    if over:
        write_rejects(read_rejects(rejects_file) + over, rejects_file)
    if not kept:
        raise BudgetError(f"no problem fits the token budget: all {len(over)} are too long (see {rejects_file})")
    return kept, over


def solve_checks(tokenizer, chat: bool, template: str | None = None) -> dict[str, Callable[[Problem], str]]:
    """The prompt of `sample`/`eval`: the problem under the solve template (or the protocol's)."""
    from sftadapt.data import prompts as P

    template = template or P.SOLVE
    return {"problem": lambda p: P.solve_prompt(tokenizer, p.problem, chat, template=template)}


def rewrite_checks(tokenizer, chat: bool, method: str) -> tuple[dict, dict]:
    """Prompts and scored pairs of `rewrite`: the solve prompt; the guided (Mind the Gap), mapper
    (prompted_rewrite) or SDFT (sdft) prompt, which quotes the expert solution; the expert solution scored under
    the solve prompt (every method scores it)."""
    from sftadapt.data import prompts as P

    def expert(p: Problem) -> str:
        return P.ensure_boxed(p.solution or "", p.answer)

    prompts = {"problem": lambda p: P.solve_prompt(tokenizer, p.problem, chat)}
    if method == "mind_the_gap":
        prompts["solution"] = lambda p: P.guided_prompt(tokenizer, p.problem, expert(p), chat)
    elif method == "prompted_rewrite":
        prompts["solution"] = lambda p: P.mapper_prompt(tokenizer, p.problem, expert(p), chat)
    elif method == "sdft":
        prompts["solution"] = lambda p: P.sdft_prompt(tokenizer, p.problem, expert(p), chat)
    scored = {"solution": (lambda p: P.solve_prompt(tokenizer, p.problem, chat), expert)}
    return prompts, scored
