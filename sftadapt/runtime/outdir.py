"""Output-folder ownership: a command writes only into folders it created, and never over what it did not write.

Every stage calls `claim(out, command)` before it writes anything. A folder the command creates (or finds
empty) gets a marker file, `.sftadapt-owner.json`, naming the command. Then:

- `--out` naming a file is an error, never a traceback;
- a non-empty folder without the marker (a user's folder) is refused unless `force=True`; even then, it is
  refused while it holds an entry whose name this command writes (`protect`), e.g. a user's `checkpoint-old/`
  that the transformers Trainer's checkpoint rotation would delete (it matches any `checkpoint-*`) or a
  README.md the model card would overwrite. The names found there are recorded in the marker as `foreign`,
  so no later command overwrites them either;
- a folder made by another sftadapt command (`sample` output given to `rewrite`) is refused unless `force`.

`check_output_file` does the same for a command whose output is one file (`data convert`).

    from sftadapt.runtime.outdir import claim
    claim(cfg.out, "rewrite", force=cfg.force)
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from sftadapt.runtime.paths import path_problem, shown

MARKER = ".sftadapt-owner.json"

# What `sftadapt train` writes into its folder: the Trainer's checkpoints and logs, the HF model files, ours.
TRAIN_OUTPUTS = (
    "checkpoint-*",
    "checkpoints.old-*",
    "tracking",
    "README.md",
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.bin",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template*",
    "added_tokens.json",
    "adapter",
    "adapter_*",
    "train_config.json",
    "train_log.jsonl",
    "rejects.jsonl",  # the unusable rows of a raw expert set
    "runs",
    "sftadapt_adapter.json",
)
# What the sharded stages (sample, rewrite, map synthesize, eval, ...) write.
STAGE_OUTPUTS = (
    "shards",
    "shards.old-*",
    "tracking",
    "train.jsonl",
    "attempts.jsonl",
    "summary.json",
    "rejects.jsonl",
    "results.json",
    "*.tmp",
)
# What the stages that write an adapted set (rewrite, map synthesize) add: its dataset card.
ADAPTED_SET_OUTPUTS = (*STAGE_OUTPUTS, "README.md")


# What the launcher of a stage started through accelerate writes into the stage's folder before the ranks claim
# it: the launch spec, log and summary (runtime/launch.py); a claim adopts them.
LAUNCH_BOOKKEEPING = ("launch.json", "launch.log", "launch_summary.json")
# What `sftadapt run` writes into a stage's folder before the stage starts (so the stage may adopt it).
RUN_BOOKKEEPING = ("stage.json", *LAUNCH_BOOKKEEPING)


def _inside_run(folder: Path) -> bool:
    """True if a folder up to three levels above holds the marker of `sftadapt run` (a study's stage folder)."""
    return any((read_owner(parent) or {}).get("command") == "run" for parent in list(folder.resolve().parents)[:3])


class OutDirError(ValueError):
    """An output folder this command may not write into; the message says why and what to do."""


def read_owner(folder: str | os.PathLike) -> dict | None:
    """The marker of a folder sftadapt created, or None (no marker, or one that does not parse)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def _clashes(names: Iterable[str], protect: Iterable[str]) -> list[str]:
    patterns = list(protect)
    return sorted(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def claim(
    out: str | os.PathLike,
    command: str,
    force: bool = False,
    protect: Iterable[str] = STAGE_OUTPUTS,
    *,
    new_out: str = "a new --out folder",
    force_option: str | None = "--force",
) -> Path:
    """Make `out` the output folder of `command` (creating it and its marker), or raise OutDirError.

    `new_out` (how this command's user names another folder) and `force_option` (its override, None if it has
    none) word the advice of a refusal, so it names only what the command has: `sftadapt run` takes its folder
    from the study config and has no --force, `sftadapt report` has --out but no --force."""
    out = Path(out)
    protect = tuple(protect)
    why = path_problem(out)
    if why:  # before out.exists(): a name past the file system's limit raises there
        raise OutDirError(f"{shown(out)}: {why}")
    if out.exists() and not out.is_dir():
        raise OutDirError(f"{out}: names a file; the output must be a folder (new, or one this command made)")
    owner = read_owner(out) if out.is_dir() else None
    foreign: list[str] = list(owner.get("foreign", [])) if owner else []
    if out.is_dir() and owner is None:
        ignore = {MARKER, *LAUNCH_BOOKKEEPING, *(RUN_BOOKKEEPING if _inside_run(out) else ())}
        # (another rank of the same launch may be writing the marker right now: its temp file is not foreign)
        entries = sorted(e.name for e in out.iterdir() if e.name not in ignore and not e.name.startswith(MARKER))
        if entries and not force:
            raise OutDirError(
                f"{out}: the folder is not empty and was not made by sftadapt ({len(entries)} entries, e.g. "
                f"{entries[0]!r}); use {new_out}"
                + (f", or {force_option} to write beside its files" if force_option else "")
            )
        foreign = entries
    elif owner is not None and owner["command"] != command and not force:
        raise OutDirError(
            f"{out}: this folder holds the output of `sftadapt {owner['command']}`; use "
            f"{new_out} for `sftadapt {command}`"
            + (f", or {force_option} to write into it anyway" if force_option else "")
        )
    clash = _clashes(foreign, protect)
    if clash:
        raise OutDirError(
            f"{out}: holds {', '.join(repr(c) for c in clash[:5])} that sftadapt did not write and "
            f"`sftadapt {command}` would overwrite or delete (the Trainer's checkpoint rotation removes any "
            f"checkpoint-* folder); move them away or use {new_out}"
        )
    out.mkdir(parents=True, exist_ok=True)
    commands = list(owner.get("commands", [owner["command"]])) if owner else []
    if owner is None or command not in commands or foreign != owner.get("foreign", []):
        from sftadapt import __version__

        record = {
            "command": owner["command"] if owner else command,
            "commands": sorted({*commands, command}),
            "created": owner.get("created", time.time()) if owner else time.time(),
            "sftadapt": __version__,
            "foreign": foreign,
        }
        tmp = out / f"{MARKER}.{os.getpid()}.tmp"  # several ranks of one launch may claim at once
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out / MARKER)
    return out


def _looks_like_problem_records(path: Path) -> bool:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
        except Exception:
            return False
    else:
        try:
            with open(path, "rb") as fh:
                row = json.loads(fh.readline(1 << 22).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return False
        names = set(row) if isinstance(row, dict) else set()
    return {"id", "problem", "answer", "source", "meta"} <= names


def check_output_file(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), force: bool = False) -> Path:
    """Refuse an output file that is an input, a folder, or an existing file sftadapt did not write
    (an existing file of Problem records is taken as ours; `force` overrides that last check only)."""
    out = Path(out)
    for path in (out, *inputs):
        why = path_problem(path)
        if why:  # before exists(): a name past the file system's limit raises there
            raise OutDirError(f"{shown(path)}: {why}")
    for given in inputs:
        if out.exists() and Path(given).exists() and out.resolve() == Path(given).resolve():
            raise OutDirError(f"{out}: the output is the input file; name another output")
    if out.is_dir():
        raise OutDirError(f"{out}: names a folder; the output must be a .jsonl or .parquet file")
    if out.exists() and out.stat().st_size and not force and not _looks_like_problem_records(out):
        raise OutDirError(
            f"{out}: exists and was not written by sftadapt; refusing to overwrite it (name a new file, or --force)"
        )
    return out
