"""Training data for `sftadapt train`: files -> `Example`s -> token rows -> padded batches with behaviour log-probs.

- `read_training_rows(paths)` reads `Example` files (the output of rewrite/map, JSONL or Parquet) and raw expert
  sets through `sources.load_dataset_spec` (any file format it knows, a name such as `gsm8k_train`, or `hf:` ids;
  unusable rows are skipped and counted, and returned as reject rows naming file, line and field, which the
  stage writes to OUT/rejects.jsonl like every other stage): an expert row trains on
  `prompts.ensure_boxed(solution, answer)` with origin "expert" and no behaviour log-probs. It returns the
  provenance the model card records: each file's sha256, row count and origin counts. `load_examples` is the
  same without a rejects file (it warns instead).
- `tokenize_example` uses THE shared tokenisation (`prompts.solve_prompt`, `prompt_token_ids`,
  `response_token_ids`): the per-token `behavior_logprobs` of an Example are aligned to
  `response_token_ids(tok, response)` (the response tokens plus the end token), and a row whose list has another
  length is an error, never silently shifted. Too long rows lose the END of the response (and the same
  behaviour log-probs); a prompt that leaves no room for a response token drops the row (counted).
- `Collator` pads on the right and keeps our columns: `labels` (-100 on prompt and padding; built from lengths,
  NEVER from the pad id, because SmolLM2's pad is its EOS and the EOS is trained on), `behavior_logprobs`
  (aligned with `labels`, 0 off the response), `has_behavior` and `dft_row` (per row: train it with DFT's weight,
  the `fallback: dft` option).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sftadapt.data import prompts
from sftadapt.data.records import Example, Problem, file_sha256, iter_rows, read_records

IGNORE_INDEX = -100


class DataError(ValueError):
    pass


# ---------------------------------------------------------------- files -> Examples
def _is_example_file(path: Path) -> bool:
    for _, row in iter_rows(path):
        return isinstance(row, dict) and "response" in row and "origin" in row
    return False


def _read_expert(
    spec: str, fields=None, max_row_bytes: int | None = None
) -> tuple[list[Example], Path | None, list[dict[str, Any]]]:
    """A raw expert set (file, registered name such as `gsm8k_train`, or `hf:` id) as expert Examples, with the
    reject rows of its unusable rows."""
    from sftadapt.data import sources

    result = sources.load_dataset_spec(
        spec,
        require_solution=True,
        fields=fields,
        max_row_bytes=max_row_bytes,
        limit_hint=sources.ROW_LIMIT_HINT,  # TrainConfig.max_row_bytes
    )
    path = Path(spec) if Path(spec).exists() else None
    if path is None and spec in sources.BENCHMARKS:
        path = sources.find_data_dir() / sources.BENCHMARKS[spec][0]
    return [expert_example(p) for p in result.problems], path, result.rejects


def expert_example(problem: Problem) -> Example:
    return Example(
        id=problem.id,
        problem=problem.problem,
        response=prompts.ensure_boxed(problem.solution or "", problem.answer),
        answer=problem.answer,
        origin="expert",
        provenance={"source": problem.source or "expert"},
    )


@dataclass
class TrainingRows:
    examples: list[Example]
    provenance: list[dict[str, Any]]  # per file: path, sha256, kind, rows, rejected, origins
    rejects: list[dict[str, Any]]  # rejects.jsonl rows of the unusable rows: file, line, field, reason, raw


def load_examples(
    paths: list[str], fields=None, max_row_bytes: int | None = None
) -> tuple[list[Example], list[dict[str, Any]]]:
    """`read_training_rows` for a caller with no output folder: the examples and provenance, and a warning
    naming the first unusable row (the stage writes them all to OUT/rejects.jsonl instead)."""
    from sftadapt.data.sources import reject_where

    rows = read_training_rows(paths, fields, max_row_bytes)
    if rows.rejects:  # e.g. math_train's two rows with an empty \boxed{}: said out loud, never silent
        first = rows.rejects[0]
        warnings.warn(
            f"skipped {len(rows.rejects)} unusable row(s); first: {reject_where(first)}: {first['reason']}",
            stacklevel=2,
        )
    return rows.examples, rows.provenance


def read_training_rows(paths: list[str], fields=None, max_row_bytes: int | None = None) -> TrainingRows:
    """All training rows of `paths` in order, per file its path, sha256, kind, rows and origin counts, and the
    rejects of the unusable rows of raw expert sets. `fields` (FieldOptions) says how a raw expert set's rows are
    read and `max_row_bytes` how large one may be; Example files are ours and need neither."""
    from sftadapt.data.sources import SourceError
    from sftadapt.runtime.paths import path_problem, shown

    if not paths:
        raise DataError("no training data: pass at least one --data file")
    examples: list[Example] = []
    provenance = []
    rejects: list[dict[str, Any]] = []
    for spec in paths:
        why = path_problem(spec)  # before is_file(): a name past the file system's limit raises there
        if why:
            raise SourceError(f"{shown(spec)}: {why}")
        path = Path(spec)
        if path.is_file() and _is_example_file(path):
            rows, kind, rejected = read_records(path, Example), "examples", 0
        else:
            rows, path, refused = _read_expert(spec, fields, max_row_bytes)
            kind, rejected = "expert problems", len(refused)
            rejects += refused
        examples.extend(rows)
        provenance.append(
            {
                "path": str(path.resolve()) if path else spec,
                "sha256": file_sha256(path) if path and path.is_file() else None,
                "kind": kind,
                "rows": len(rows),
                "rejected": rejected,
                "origins": dict(sorted(Counter(r.origin for r in rows).items())),
            }
        )
    return TrainingRows(examples, provenance, rejects)


# ---------------------------------------------------------------- Example -> token row
@dataclass
class TokenizedRows:
    rows: list[dict[str, Any]]
    truncated: int = 0  # rows whose response lost its end to max_length
    dropped: list[str] = field(default_factory=list)  # ids of rows whose prompt alone fills max_length


def tokenize_example(
    tokenizer, example: Example, max_length: int, chat: bool = True, dft_origins: frozenset[str] = frozenset()
) -> tuple[dict | None, bool]:
    """One row as token lists (input_ids, labels, behavior_logprobs, has_behavior, dft_row: its origin is in
    `dft_origins`) and whether it was truncated.

    Returns (None, False) when the prompt leaves no room for a single response token."""
    prompt_ids = prompts.prompt_token_ids(tokenizer, prompts.solve_prompt(tokenizer, example.problem, chat=chat))
    response_ids = prompts.response_token_ids(tokenizer, example.response)
    behavior = example.behavior_logprobs
    if behavior is not None and len(behavior) != len(response_ids):
        raise DataError(
            f"example '{example.id}': {len(behavior)} behavior_logprobs for {len(response_ids)} response tokens "
            "(response_token_ids = text tokens + end token); the log-probs must come from the same tokenizer and "
            "prompts.response_token_ids"
        )
    room = max_length - len(prompt_ids)
    if room < 1:
        return None, False
    truncated = len(response_ids) > room
    response_ids = response_ids[:room]
    has_behavior = behavior is not None
    behavior = [float(x) for x in behavior[:room]] if has_behavior else [0.0] * len(response_ids)
    return {
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
        "behavior_logprobs": [0.0] * len(prompt_ids) + behavior,
        "has_behavior": has_behavior,
        "dft_row": example.origin in dft_origins,
    }, truncated


def tokenize_examples(
    tokenizer, examples: list[Example], max_length: int, chat: bool = True, dft_origins: frozenset[str] = frozenset()
) -> TokenizedRows:
    out = TokenizedRows(rows=[])
    for example in examples:
        row, truncated = tokenize_example(tokenizer, example, max_length, chat, dft_origins)
        if row is None:
            out.dropped.append(example.id)
            continue
        out.rows.append(row)
        out.truncated += truncated
    return out


class RowDataset(torch.utils.data.Dataset):
    """A list of token rows as a map-style dataset (the Trainer shuffles and shards it)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


# ---------------------------------------------------------------- rows -> batch
@dataclass
class Collator:
    """Right-pads token rows into tensors and keeps every column the loss needs."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
            "behavior_logprobs": torch.zeros((len(rows), width), dtype=torch.float32),
            "has_behavior": torch.tensor([bool(r["has_behavior"]) for r in rows], dtype=torch.bool),
            "dft_row": torch.tensor([bool(r.get("dft_row", False)) for r in rows], dtype=torch.bool),
        }
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            batch["input_ids"][i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = torch.tensor(row["labels"], dtype=torch.long)
            batch["behavior_logprobs"][i, :n] = torch.tensor(row["behavior_logprobs"], dtype=torch.float32)
        return batch
