"""`sftadapt data export`: an adapted set in another tool's own layout, with the exact training prompt.

An adapted set (`train.jsonl` of `sftadapt rewrite` / `sftadapt map synthesize`: `Example` records) trains on
(SOLVE prompt rendered through the target's chat template -> response + end token), tokenised as
`prompts.prompt_token_ids` + `prompts.response_token_ids`. Each export carries that same prompt, so another
tool trains, logs and evaluates on the prompt sftadapt measured the gap under (TRL fed our rows by hand
trained on the bare problem, without our instruction):

- `trl`: `train.jsonl` in TRL's prompt/completion *string* form: `prompt` = the rendered prompt text,
  `completion` = response + the tokenizer's EOS text. TRL tokenises prompt+completion and trains on the
  completion only (its default for this form); `token_mismatch_rows` in the summary counts rows whose joint
  tokenisation differs from ours (tokens merging across the boundary; 0 on SmolLM2's template).
- `llamafactory`: `train.json` (sharegpt formatting with OpenAI-style `messages`, role/content tags) and a
  `dataset_info.json` entry; messages = [user: the SOLVE text, assistant: response], whose rendering through
  the model's chat template equals our prompt (LLaMA-Factory parses the tokenizer's template when `template`
  is left unset).
- `verl`: `train.parquet` with the fields verl's datasets read: `data_source`, `prompt` (chat list),
  `ability`, `reward_model: {style: rule, ground_truth}`, `extra_info: {index, split, question, answer}` (verl's
  SFTDataset with prompt_key/response_key = extra_info and dict keys question/answer wraps `question` as one
  user turn through the chat template and appends EOS to `answer`: our tokens), and `messages` for its
  MultiTurnSFTDataset. `data_source` defaults to `lighteval/MATH` because verl's default reward picks its
  scorer by it and that one scores the last `\\boxed{}`, which our prompt asks for.
- `hf`: a folder `datasets.load_dataset(DIR)` reads: `data/train-00000-of-00001.parquet` (prompt, completion,
  messages and our columns) and the card's `configs:`.

Every layout keeps `id`, `answer`, `origin`, `gap` (the row's mean target log-prob), `self_pass_rate` and
`provenance` (JSON text) as extra columns, and gets a dataset card (README.md). `--push-to-hub REPO` uploads
the folder with huggingface_hub and needs `--online` (not exercised here: no network).

    sftadapt data export runs/rewrite --format trl --out runs/export-trl
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sftadapt.data import prompts
from sftadapt.data.records import Example, RecordError, read_records, write_json

EXPORT_FORMATS = ("trl", "llamafactory", "verl", "hf")
VERL_DATA_SOURCE = "lighteval/MATH"


class ExportError(ValueError):
    pass


def find_set(source: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """(the train.jsonl of an adapted set, its stage summary or None) from a folder or the file itself."""
    path = Path(source)
    if path.is_dir():
        path = path / "train.jsonl"
    if not path.is_file():
        raise ExportError(
            f"{source}: no adapted set here (expected a rewrite / map synthesize folder or its train.jsonl)"
        )
    summary_path = path.parent / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError:
            summary = None
    return path, summary


def model_of(examples: list[Example]) -> str | None:
    """The target model an adapted set was made for, from its rows' provenance."""
    for ex in examples:
        prov = ex.provenance or {}
        info = prov.get("model") or prov.get("target") or {}
        if info.get("spec"):
            return info["spec"]
    return None


def rendered(tok, ex: Example, chat: bool = True) -> dict[str, Any]:
    """The exact training text of one row: user text (SOLVE), prompt (rendered), completion (+ EOS text)."""
    user = prompts.SOLVE.format(problem=ex.problem)
    return {
        "user": user,
        "prompt": prompts.solve_prompt(tok, ex.problem, chat=chat),
        "completion": ex.response + tok.eos_token,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": ex.response}],
    }


def same_tokens(tok, prompt: str, response: str) -> bool:
    """True if tokenising prompt+completion jointly (as TRL does) gives our training tokens exactly."""
    ours = prompts.prompt_token_ids(tok, prompt) + prompts.response_token_ids(tok, response)
    return tok(prompt + response + tok.eos_token, add_special_tokens=False)["input_ids"] == ours


def _extra(ex: Example) -> dict[str, Any]:
    return {
        "id": ex.id,
        "answer": ex.answer,
        "origin": ex.origin,
        "gap": ex.target_logprob_mean,
        "self_pass_rate": ex.self_pass_rate,
        "provenance": json.dumps(ex.provenance, ensure_ascii=False),
    }


def export(
    source: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    model: str | None = None,
    force: bool = False,
    name: str | None = None,
    data_source: str = VERL_DATA_SOURCE,
    command: str | None = None,
) -> dict[str, Any]:
    """Write the adapted set at `source` into `out` in `fmt`'s layout, with a card; returns the summary."""
    from sftadapt.data.card import write_card
    from sftadapt.runtime.models import load_tokenizer
    from sftadapt.runtime.outdir import claim

    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {fmt}: choose one of {', '.join(EXPORT_FORMATS)}")
    path, summary = find_set(source)
    try:
        examples = read_records(path, Example)
    except RecordError as err:
        raise ExportError(f"{err} (export reads an adapted set: Example rows of rewrite / map synthesize)") from None
    if not examples:
        raise ExportError(f"{path}: no rows")
    model = model or model_of(examples)
    if not model:
        raise ExportError(f"{path}: the rows do not say their target model; pass --model")
    chat = bool((examples[0].provenance or {}).get("chat", True))
    out = claim(out, "data export", force=force, protect=("train.*", "data", "dataset_info.json", "README.md"))
    tok = load_tokenizer(model)
    rows = [(ex, rendered(tok, ex, chat)) for ex in examples]
    mismatch = sum(not same_tokens(tok, r["prompt"], ex.response) for ex, r in rows)
    name = name or f"sftadapt_{Path(path).parent.name or 'set'}"
    files: list[str] = []
    if fmt == "trl":
        files.append(
            _write_jsonl(
                out / "train.jsonl",
                [{"prompt": r["prompt"], "completion": r["completion"], **_extra(ex)} for ex, r in rows],
            )
        )
    elif fmt == "llamafactory":
        data = [{"messages": r["messages"], **_extra(ex)} for ex, r in rows]
        write_json(out / "train.json", data)
        write_json(out / "dataset_info.json", {name: llamafactory_entry("train.json")})
        files += [str(out / "train.json"), str(out / "dataset_info.json")]
    elif fmt == "verl":
        table = [
            {
                "data_source": data_source,
                "prompt": [r["messages"][0]],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": ex.answer},
                "extra_info": {"index": i, "split": "train", "question": r["user"], "answer": ex.response},
                "messages": r["messages"],
                **_extra(ex),
            }
            for i, (ex, r) in enumerate(rows)
        ]
        files.append(_write_parquet(out / "train.parquet", table))
    else:  # hf
        table = [
            {"prompt": r["prompt"], "completion": r["completion"], "messages": r["messages"], **_extra(ex)}
            for ex, r in rows
        ]
        (out / "data").mkdir(exist_ok=True)
        files.append(_write_parquet(out / "data" / "train-00000-of-00001.parquet", table))
    data_files = {
        "trl": "train.jsonl",
        "llamafactory": "train.json",
        "verl": "train.parquet",
        "hf": "data/train-*.parquet",
    }[fmt]
    result = {
        "format": fmt,
        "rows": len(rows),
        "source": str(path),
        "model": model,
        "chat_template": chat,
        "token_mismatch_rows": mismatch,
        "files": files,
        "out": str(out),
    }
    card = write_card(
        out,
        examples,
        summary,
        data_files=data_files,
        title=f"{name} ({fmt} export)",
        extra={"export": {k: result[k] for k in ("format", "source", "model", "token_mismatch_rows")}},
        body=USAGE[fmt].format(name=name, out=out),
        command=command,
    )
    result["card"] = str(card)
    return result


def llamafactory_entry(file_name: str) -> dict[str, Any]:
    """The `dataset_info.json` entry LLaMA-Factory's parser (data/parser.py DatasetAttr) reads for our file:
    sharegpt formatting over OpenAI-style messages (role/content, user/assistant)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


def push_to_hub(folder: str | os.PathLike, repo: str, private: bool = True) -> str:
    """Upload an export folder as a hub dataset repo (needs --online and a token); returns the repo URL."""
    from sftadapt.runtime import offline

    if offline.is_offline():
        raise ExportError(
            f"--push-to-hub {repo}: uploading needs the network; pass --online (the folder "
            f"{folder} is built and can be uploaded later)"
        )
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder), repo_id=repo, repo_type="dataset", ignore_patterns=[".sftadapt-owner.json"]
    )
    return f"https://huggingface.co/datasets/{repo}"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return str(path)


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)
    return str(path)


USAGE = {
    "trl": """## Use with TRL

```python
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer
ds = load_dataset("json", data_files="{out}/train.jsonl", split="train")
SFTTrainer(model=MODEL, train_dataset=ds, args=SFTConfig(output_dir="out")).train()
```
`prompt` is already rendered through the model's chat template (do not template it again); TRL trains on the
completion only (`completion_only_loss`, its default for prompt/completion rows).""",
    "llamafactory": """## Use with LLaMA-Factory

Copy `train.json` into your `dataset_dir` and merge `dataset_info.json` into its own, then train with
`dataset: {name}` and no `template` (LLaMA-Factory then parses the model's own chat template, the one the
messages were checked against).""",
    "verl": """## Use with verl

SFT (`verl.utils.dataset.sft_dataset.SFTDataset`): `data.train_files={out}/train.parquet
data.prompt_key=extra_info data.response_key=extra_info +data.prompt_dict_keys=['question']
+data.response_dict_keys=['answer']`; multi-turn SFT reads `messages`. RL: `data.train_files={out}/train.parquet`
(`prompt`, `reward_model.ground_truth`, `data_source`).""",
    "hf": """## Use with datasets

```python
from datasets import load_dataset
ds = load_dataset("{out}", split="train")
```""",
}
