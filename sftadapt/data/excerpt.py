"""A reject row keeps a bounded excerpt of each oversized value, never the whole of it.

A rejects file exists so a person can see why a row was refused and find it again; it is not a second copy of
the data. A 10 MB row (the very row refused for its size) copied whole into rejects.jsonl made the rejects
file as large as the input, once per stage that read it. So every string of a reject row (the raw line, each
field of a parsed row, a huge key named as the field) is cut to its first EXCERPT_BYTES bytes of UTF-8, and
the row's `truncated` map records, per cut value (dotted path such as `raw` or `raw.problem`), its full size
in bytes and the sha256 of its full UTF-8 text: the file and line number find the row again in the source,
and the hash confirms it is the same one.

    write_rejects(...) applies `bound_reject` to every row it writes, whichever stage wrote it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

EXCERPT_BYTES = 4096  # enough to recognise a row; a math problem row is a few KiB
RAW_BYTES = 16 * EXCERPT_BYTES  # a parsed row of many short fields is cut as a whole past this


def _bytes(text: str) -> bytes:
    # surrogatepass: a lone surrogate (the reason some rows are rejected) is measured and hashed, not an error
    return text.encode("utf-8", "surrogatepass")


def _bound(value: Any, path: str, cut: dict[str, dict[str, Any]]) -> Any:
    if isinstance(value, str):
        data = _bytes(value)
        if len(data) <= EXCERPT_BYTES:
            return value
        cut[path] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        # cut on a character boundary: a partial UTF-8 sequence at the end is dropped, not replaced
        return data[:EXCERPT_BYTES].decode("utf-8", "ignore")
    if isinstance(value, dict):
        return {_bound(str(k), f"{path}.<key>", cut): _bound(v, f"{path}.{k}", cut) for k, v in value.items()}
    if isinstance(value, list):
        return [_bound(v, f"{path}.{i}", cut) for i, v in enumerate(value)]
    return value


def bound_reject(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every string longer than EXCERPT_BYTES cut to an excerpt, and `truncated` saying, for each
    cut value, its full size and sha256; the row unchanged when nothing is over (no `truncated` key then)."""
    cut: dict[str, dict[str, Any]] = dict(row.get("truncated") or {})  # a row bounded before stays as it was
    seen = len(cut)
    bounded = {k: _bound(v, k, cut) if k != "truncated" else v for k, v in row.items()}
    raw = bounded.get("raw")
    if isinstance(raw, (dict, list)) and len(_bytes(json.dumps(raw, ensure_ascii=False, default=str))) > RAW_BYTES:
        # many short fields (or a long list of numbers) add up: past RAW_BYTES the row is kept as an excerpt
        # of its JSON text, like a raw line
        cut = {k: v for k, v in cut.items() if k != "raw" and not k.startswith("raw.")}
        bounded["raw"] = _bound(json.dumps(row["raw"], ensure_ascii=False, default=str), "raw", cut)
    if len(cut) == seen:
        return row
    bounded["truncated"] = cut
    return bounded
