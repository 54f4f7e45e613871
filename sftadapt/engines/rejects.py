"""Rows a backend refused (`RequestRejected`, e.g. an HTTP 400 "context too long") become rejects, not a crash.

A stage's unit of work is a chunk of problems (one shard). When a call inside `work(chunk)` raises
`RequestRejected`, `keep_going` runs the chunk again one problem at a time: a problem whose own run is refused
is a reject (with the server's reason), every other problem's rows are kept, in the chunk's order. Seeds derive
from (problem id, stage, index), so a problem run alone gets the same samples it would have got in the chunk;
the `openai` backend also answers those repeated requests from the responses it already has (no server work).

The refused problems go to the stage's rejects file and, so that a resumed run still lists them after the
shard exists, to `rejects-0000i.jsonl` beside the shard (`restore` adds those of finished shards back).

    rows, refused = keep_going(chunk, work)
    record(store_root, shard_index, [reject_row(item, why) for item, why in refused], rejects_file)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sftadapt.engines.base import RequestRejected


def keep_going(
    items: Sequence[Any], work: Callable[[Sequence[Any]], list[Any]]
) -> tuple[list[Any], list[tuple[Any, str]]]:
    """(rows of the items the backend accepted, (item, reason) of each item it refused)."""
    try:
        return list(work(items)), []
    except RequestRejected as err:
        if len(items) == 1:
            return [], [(items[0], str(err))]
    rows: list[Any] = []
    refused: list[tuple[Any, str]] = []
    for item in items:
        try:
            rows.extend(work([item]))
        except RequestRejected as err:
            refused.append((item, str(err)))
    return rows, refused


def reject_row(item: Any, reason: str, **extra) -> dict[str, Any]:
    """The rejects.jsonl row of a refused problem (the same fields as the loader's and budget.py's)."""
    file, line = getattr(item, "where", None) or ("", 0)
    raw = {"id": getattr(item, "id", None), "problem": str(getattr(item, "problem", item))[:2000], **extra}
    return {"file": file, "line": line, "field": "engine", "reason": reason, "tokens": None, "raw": raw}


def _shard_file(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / f"rejects-{index:05d}.jsonl"


def record(root: str | os.PathLike, index: int, refused: list[dict], rejects_file: str | os.PathLike | None) -> None:
    """Keep shard `index`'s refused problems beside it and add them to the stage's rejects file."""
    if not refused:
        return
    from sftadapt.data.excerpt import bound_reject
    from sftadapt.data.sources import read_rejects, write_rejects

    _shard_file(root, index).write_text(
        "".join(json.dumps(bound_reject(r), ensure_ascii=False) + "\n" for r in refused)
    )
    if rejects_file is not None:
        write_rejects(read_rejects(rejects_file) + refused, rejects_file)


def _read_shard_rejects(root: str | os.PathLike, index: int) -> list[dict]:
    """The rows of `rejects-0000i.jsonl`. It is written before its shard, so a kill leaves it only beside a
    shard that does not exist yet (redone, and the file rewritten); one that does not parse beside a finished
    shard was damaged afterwards: one line naming it and how to redo that shard."""
    from sftadapt.data.records import UnreadableFile

    path = _shard_file(root, index)
    rows = []
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                raise UnreadableFile(
                    f"{path}:{lineno}: damaged, not a JSON row; delete it and shard-{index:05d}.jsonl beside it, "
                    "then re-run the same command: that shard is redone"
                ) from None
    return rows


def restore(root: str | os.PathLike, done: Sequence[int], rejects_file: str | os.PathLike | None) -> int:
    """Re-add the engine rejects of finished shards to a rejects file the stage rewrote on resume."""
    if rejects_file is None:
        return 0
    from sftadapt.data.sources import read_rejects, write_rejects

    earlier = [row for i in done if _shard_file(root, i).is_file() for row in _read_shard_rejects(root, i)]
    if earlier:
        present = read_rejects(rejects_file)
        seen = {json.dumps(r, sort_keys=True) for r in present}
        new = [r for r in earlier if json.dumps(r, sort_keys=True) not in seen]
        if new:
            write_rejects(present + new, rejects_file)
    return len(earlier)
