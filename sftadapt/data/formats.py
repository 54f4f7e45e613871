"""Reading data the way users already have it: chat, prompt/completion, alpaca, sharegpt, verl, HF folders.

Every reader turns one row of its format into the flat row the loader knows (`problem`, `solution`, maybe
`answer`, plus the row's other fields, kept in `Problem.meta`); `sources._collect` does the rest (answers,
ids, rejects). The formats (docs/formats.md has every mapping):

- `messages` (chat, TRL/OpenAI): `messages: [{role, content}]`; the user turn -> problem, the assistant turn
  after it -> solution, a leading system turn -> meta.
- `prompt_completion` (TRL): `prompt`/`completion` as strings, or as message lists (the conversational form).
- `alpaca` (LLaMA-Factory): `instruction` (+ `input`) -> problem, `output` -> solution.
- `sharegpt` (LLaMA-Factory): `conversations: [{from: human|gpt|system, value}]`.
- `verl` (verl's parquet): `prompt` (a chat list), `reward_model.ground_truth` -> answer, `extra_info` -> meta
  (`extra_info.question` / `extra_info.answer`, as verl's own GSM8K preprocessing writes them, are preferred for
  the problem and the solution).

A prompt that ends with our own SOLVE instruction (an export of ours read back) loses it, so it is not added
twice. Files: JSONL, JSON arrays (`[{...}, ...]`, line numbers kept), Parquet; a folder written by
`datasets.save_to_disk`; a hub id `hf:owner/name[:config][@split]` only with `--online`.

The answer: every format has its own rule (`auto`): the preset's field, else a gold `answer` column when the
chat-like row has one, else the last `\\boxed{}` of the solution. `--answer-rule` overrides it:
`boxed | gsm8k | last_number | field:NAME` (rules that extract read the answer field if there is one, else the
solution). A user field map (`--problem-field` ...) must name its answer (`--answer-field` or
`--answer-rule`): it is never guessed. Field names may be dotted paths into nested rows (`prompt.0.content`,
`messages.-1.content`).

`FieldOptions` is the one declaration of these options: nested as `fields:` in every stage config that reads
data, and the CLI's field-map options (`cli.field_options`) are made from it.

    sftadapt data check chat.jsonl --format messages --answer-rule boxed
    sftadapt data check q.jsonl --problem-field prompt.0.content --answer-rule field:reward_model.ground_truth
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftadapt.config import option
from sftadapt.data.prompts import SOLVE
from sftadapt.data.records import RecordError, check_row

ANSWER_RULES = ("auto", "boxed", "gsm8k", "last_number", "field:NAME")
READER_FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt", "verl")
PRESET_FORMATS = ("gsm8k", "math", "aime", "minerva", "olympiadbench", "records")
FORMATS = ("auto", *PRESET_FORMATS, *READER_FORMATS)
MISSING = object()


@dataclass
class FieldMap:
    """Where a flat row keeps each part (dotted paths allowed) and how its gold answer is read."""

    problem: str
    answer: str | None = None  # None: the answer is extracted from the solution (see `answer_rule`)
    solution: str | None = None
    id: str | None = None
    # field | list (a list answer joined) | gsm8k (text after ####) | boxed (last \boxed{}) | last_number |
    # answer_or_boxed (the chat-like readers: a gold `answer` column if the row has one, else boxed)
    answer_rule: str = "field"


@dataclass
class FieldOptions:
    """The field-map options of every command that reads data (`fields:` in a stage config)."""

    format: str = option("auto", help="input format: " + " | ".join(FORMATS) + " (auto: decided by the first rows)")
    problem: str | None = option(None, help="field holding the problem text (dotted path: prompt.0.content)")
    answer: str | None = option(None, help="field holding the gold answer (dotted path allowed)")
    solution: str | None = option(None, help="field holding the expert solution (dotted path allowed)")
    id: str | None = option(None, help="field holding a stable id (default: a hash of the problem text)")
    answer_rule: str = option(
        "auto", help="how the gold answer is read: auto (the format's own) | boxed | gsm8k | last_number | field:NAME"
    )

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format '{self.format}': choose one of {', '.join(FORMATS)}")
        rule = self.answer_rule
        if rule not in ANSWER_RULES[:-1] and not (rule.startswith("field:") and rule[6:].strip()):
            raise ValueError(f"answer_rule '{rule}': choose one of {' | '.join(ANSWER_RULES)}")
        if self.problem is None and (self.solution or self.id):
            raise ValueError("a field map needs the problem field too (--problem-field / fields.problem)")
        if self.problem is not None and self.format != "auto":
            raise ValueError(f"format '{self.format}' and a problem field: name a format or map the fields, not both")

    def is_default(self) -> bool:
        return self == FieldOptions()

    def resolve(self) -> tuple[str, FieldMap | None, str]:
        """(format, a user FieldMap or None, answer rule override or 'auto') for `sources.load_problems`."""
        self.validate()
        rule = self.answer_rule
        if self.answer and rule == "auto" and self.problem is None:
            rule = f"field:{self.answer}"  # --answer-field with a format: the gold answer comes from that field
        if self.problem is None:
            return self.format, None, rule
        if rule == "auto":
            if not self.answer:
                raise ValueError(
                    "a field map must say where the gold answer is: --answer-field NAME, or "
                    "--answer-rule boxed | gsm8k | last_number | field:NAME (it is never guessed)"
                )
            rule = "field"
        fmap = FieldMap(
            problem=self.problem, answer=self.answer, solution=self.solution, id=self.id, answer_rule="field"
        )
        return "custom", with_rule(fmap, rule), "auto"


def with_rule(fmap: FieldMap, rule: str) -> FieldMap:
    """`fmap` with its answer rule replaced by the user's (`auto` keeps the format's own)."""
    if rule in ("auto", "", None):
        return fmap
    if rule.startswith("field:"):
        return dataclasses.replace(fmap, answer=rule[6:].strip(), answer_rule="field")
    if rule == "field":
        return dataclasses.replace(fmap, answer_rule="field")
    return dataclasses.replace(fmap, answer_rule=rule)


def rule_name(fmap: FieldMap | None) -> str:
    """The answer rule as the user writes it (for summaries)."""
    if fmap is None:
        return "auto"
    if fmap.answer_rule == "field":
        return f"field:{fmap.answer}"
    if fmap.answer_rule == "list":
        return f"list:{fmap.answer}"
    if fmap.answer_rule == "answer_or_boxed":
        return "field:answer, else boxed"
    return fmap.answer_rule


# ---------------------------------------------------------------- nested fields
def get_path(row: Any, path: str | None, default: Any = None) -> Any:
    """`row[path]`, or the value at a dotted path (`prompt.0.content`, `messages.-1.content`); `default` when
    absent. A key that itself holds a dot is found first, as it is."""
    if path is None:
        return default
    if isinstance(row, dict) and path in row:
        return row[path]
    node = row
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node


def top_key(path: str | None) -> str | None:
    """The top-level field a path starts in (what `meta` leaves out)."""
    return None if path is None else path.split(".")[0]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The last number in a text (commas as thousands separators dropped), or None."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


# ---------------------------------------------------------------- readers
_SUFFIX = SOLVE.split("{problem}", 1)[1].replace("{{}}", "{}")  # our instruction after the problem


def strip_solve(text: str) -> str:
    """A prompt of ours read back (an export) without our instruction, so SOLVE does not add it twice."""
    return text[: -len(_SUFFIX)] if text.endswith(_SUFFIX) else text


def _text(value: Any, where: tuple[str, int], name: str) -> str:
    """Message content as text: a string, or a list of `{type: text, text}` parts (OpenAI's form)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise RecordError(where[0], where[1], name, f"expected text, got {type(value).__name__}")


def _turns(
    messages: Any, where: tuple[str, int], name: str, role_key: str, content_key: str, roles: dict[str, str]
) -> list[tuple[str, str]]:
    """(role, text) of every turn of a message list, roles normalised to system/user/assistant."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(where[0], where[1], name, "expected a non-empty list of messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RecordError(where[0], where[1], f"{name}.{i}", f"expected a message object, got {type(msg).__name__}")
        role = roles.get(str(msg.get(role_key)))
        if role is None:
            raise RecordError(
                where[0],
                where[1],
                f"{name}.{i}.{role_key}",
                f"unknown role {msg.get(role_key)!r} (expected one of {', '.join(roles)})",
            )
        out.append((role, _text(msg.get(content_key), where, f"{name}.{i}.{content_key}")))
    return out


def _exchange(
    turns: list[tuple[str, str]], where: tuple[str, int], name: str, need_reply: bool = False
) -> tuple[str | None, str, str | None]:
    """(system, user text, assistant text or None) of a single-turn conversation; anything else is a reject:
    a multi-turn dialogue has no one problem/solution pair, and picking one silently would change the data."""
    system = None
    if turns and turns[0][0] == "system":
        system, turns = turns[0][1], turns[1:]
    roles = [r for r, _ in turns]
    if roles not in (["user"], ["user", "assistant"]):
        raise RecordError(
            where[0],
            where[1],
            name,
            "expected one user turn (and the assistant's reply), got "
            f"{'/'.join(roles) or 'no turns'}: only single-turn rows can be read",
        )
    if need_reply and len(turns) < 2:
        raise RecordError(where[0], where[1], name, "no assistant turn")
    return system, turns[0][1], turns[1][1] if len(turns) > 1 else None


CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def _flat(
    row: dict[str, Any],
    used: tuple[str, ...],
    problem: str,
    solution: str | None,
    system: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in used}
    out.update({"problem": strip_solve(problem)}, **more)
    if solution is not None:
        out["solution"] = solution
    if system is not None:
        out["system"] = system
    return out


def read_messages(row: dict[str, Any], where: tuple[str, int]) -> dict[str, Any]:
    turns = _turns(row.get("messages"), where, "messages", "role", "content", CHAT_ROLES)
    system, user, reply = _exchange(turns, where, "messages")
    return _flat(row, ("messages",), user, reply, system)


def read_prompt_completion(row: dict[str, Any], where: tuple[str, int]) -> dict[str, Any]:
    prompt, completion = row.get("prompt"), row.get("completion")
    system = None
    if isinstance(prompt, list):  # the conversational form: message lists
        turns = _turns(prompt, where, "prompt", "role", "content", CHAT_ROLES)
        system, user, _ = _exchange(turns, where, "prompt")
        reply_turns = _turns(completion, where, "completion", "role", "content", CHAT_ROLES)
        if [r for r, _ in reply_turns] != ["assistant"]:
            raise RecordError(where[0], where[1], "completion", "expected exactly one assistant message")
        reply = reply_turns[0][1]
    else:
        user = _text(prompt, where, "prompt")
        reply = _text(completion, where, "completion")
    return _flat(row, ("prompt", "completion"), user, reply, system)


def read_alpaca(row: dict[str, Any], where: tuple[str, int]) -> dict[str, Any]:
    instruction = _text(row.get("instruction"), where, "instruction")
    extra = row.get("input")
    if extra not in (None, "") and not isinstance(extra, str):
        raise RecordError(where[0], where[1], "input", f"expected text, got {type(extra).__name__}")
    if row.get("history"):
        raise RecordError(where[0], where[1], "history", "a multi-turn history: only single-turn rows can be read")
    problem = instruction + (f"\n\n{extra}" if extra else "")
    output = row.get("output")
    solution = None if output is None else _text(output, where, "output")
    return _flat(row, ("instruction", "input", "output", "history"), problem, solution)


def read_sharegpt(row: dict[str, Any], where: tuple[str, int]) -> dict[str, Any]:
    turns = _turns(row.get("conversations"), where, "conversations", "from", "value", SHAREGPT_ROLES)
    system, user, reply = _exchange(turns, where, "conversations")
    if system is None and isinstance(row.get("system"), str):
        system = row["system"]
    return _flat(row, ("conversations",), user, reply, system)


def read_verl(row: dict[str, Any], where: tuple[str, int]) -> dict[str, Any]:
    turns = _turns(row.get("prompt"), where, "prompt", "role", "content", CHAT_ROLES)
    system, user, _ = _exchange(turns, where, "prompt")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    question = extra.get("question")
    problem = question if isinstance(question, str) and question.strip() else user
    solution = extra.get("answer") if isinstance(extra.get("answer"), str) else row.get("response")
    reward = row.get("reward_model")
    if not isinstance(reward, dict) or "ground_truth" not in reward:
        raise RecordError(where[0], where[1], "reward_model.ground_truth", "missing (verl's gold answer)")
    out = _flat(
        row,
        ("prompt", "reward_model", "response"),
        problem,
        solution if isinstance(solution, str) else None,
        system,
        answer=reward["ground_truth"],
    )
    out["verl_prompt"] = user  # the prompt verl's rollouts saw, kept beside our problem text
    return out


READERS: dict[str, Callable[[dict[str, Any], tuple[str, int]], dict[str, Any]]] = {
    "messages": read_messages,
    "prompt_completion": read_prompt_completion,
    "alpaca": read_alpaca,
    "sharegpt": read_sharegpt,
    "verl": read_verl,
}
# the flat row every reader writes; `answer_or_boxed`: a gold `answer` column if present, else the solution's \boxed{}
READER_MAP = FieldMap(problem="problem", answer="answer", solution="solution", id="id", answer_rule="answer_or_boxed")


def guess_reader(row: dict[str, Any]) -> str | None:
    """The reader format a row looks like, or None."""
    if isinstance(row.get("prompt"), list) and isinstance(row.get("reward_model"), dict):
        return "verl"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if isinstance(row.get("messages"), list):
        return "messages"
    if isinstance(row.get("conversations"), list):
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


# ---------------------------------------------------------------- files and folders
def iter_json_file(
    path: Path, max_row_bytes: int | None = None, limit_hint: str | None = None
) -> Iterator[tuple[int, Any]]:
    """Rows of a `.json` file: a JSON array (each element with the line it starts on), else JSON lines.

    A malformed element cannot be skipped (the array has no row boundaries to resync on), so it ends the read
    with one reject naming its line and column; every row before it is kept."""
    from sftadapt.data.records import _unique_keys, iter_json_lines, row_limit_reason

    raw = path.read_bytes()
    text = raw.decode("utf-8", "replace").lstrip("\ufeff")
    if not text.lstrip().startswith("["):
        yield from iter_json_lines(path, max_row_bytes, limit_hint)
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            err = RecordError(
                path,
                exc.lineno,
                None,
                f"malformed JSON array element: {exc.msg} at column {exc.colno} (the rest of the file cannot be read)",
            )
            err.raw = text[pos : pos + 2000]
            yield line, err
            return
        piece = text[pos:end]
        pos = end
        if max_row_bytes is not None and len(piece.encode("utf-8")) > max_row_bytes:
            err = RecordError(path, line, None, row_limit_reason(len(piece.encode("utf-8")), max_row_bytes, limit_hint))
            err.raw = piece[:2000]
            yield line, err
            continue
        try:  # parsed again with the duplicate-key check; the first pass only found the element's end
            row = json.loads(piece, object_pairs_hook=_unique_keys)
            check_row(row, path, line)
        except RecordError as err:
            err.raw = piece
            yield line, err
            continue
        except ValueError as exc:
            key = getattr(exc, "key", None)
            err = RecordError(path, line, key, f"the key '{key}' appears twice in the row" if key else str(exc))
            err.raw = piece
            yield line, err
            continue
        yield line, row


def is_hf_folder(path: Path) -> bool:
    """A folder written by `datasets` `save_to_disk` (one split, or a DatasetDict)."""
    return path.is_dir() and (
        (path / "dataset_info.json").is_file()
        or (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
    )


def hf_folder_rows(path: Path, split: str | None = None) -> tuple[Iterator[tuple[int, Any]], str]:
    """(rows as (row number from 1, dict), the split read) of a `save_to_disk` folder; a DatasetDict reads
    `split`, else `train`, else its only split."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs one line
        raise ValueError(f"{path}: not a readable datasets folder ({type(err).__name__}: {str(err)[:200]})") from None
    chosen = ""
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else "")
        if chosen not in ds:
            raise ValueError(f"{path}: holds the splits {', '.join(names)}: name one as {path}@SPLIT")
        ds = ds[chosen]

    def rows():
        for i, row in enumerate(ds, start=1):
            try:
                check_row(row, path, i)
            except RecordError as err:
                yield i, err
                continue
            yield i, row

    return rows(), chosen


def fields_option() -> Any:
    """The `fields:` section of a stage config that reads data (one declaration, every stage)."""
    return dataclasses.field(
        default_factory=FieldOptions,
        metadata={
            "help": "how rows of a data file are read: fields.format, fields.problem/answer/solution/id (dotted "
            "paths), fields.answer_rule"
        },
    )
