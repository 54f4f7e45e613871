"""Resumable output by construction: append-only shards, a manifest with the config hash, atomic renames.

A stage cuts its work into fixed, ordered chunks and writes chunk i as `shard-0000i.jsonl` (temp file, fsync,
rename). A killed run leaves complete shards and at most one stray temp file; re-running the same command skips
the complete shards and redoes the rest. Because every sample's seed derives from (problem id, stage, index),
a resumed run writes exactly what an uninterrupted one would. A run whose config hash differs from the
manifest's refuses to mix with the old shards unless `force=True`, which moves them aside, together with the
final files made from them (the manifest's output, and train.jsonl / attempts.jsonl / summary.json /
results.json of the owning output folder): a kill right after never leaves an old result beside new shards.

    store = ShardStore(out / "shards", config_hash(cfg), config_dict(cfg), force=cfg.force)
    for i, rows in run_sharded(store, items, shard_size=16, work=process_chunk, desc="rewrite"):
        ...
    store.finalize(out / "train.jsonl")
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sftadapt import SCHEMA_VERSION
from sftadapt.data.records import UnreadableFile, read_own_json, to_dict

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    pass


class ShardStore:
    def __init__(
        self, root: str | os.PathLike, config_hash: str, config: dict[str, Any] | None = None, force: bool = False
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_hash = config_hash
        try:
            manifest = self.read_manifest()
        except UnreadableFile:
            if not force:
                raise
            manifest = {"config_hash": None}  # a damaged manifest vouches for nothing: --force sets it aside too
        if manifest and manifest.get("config_hash") != config_hash:
            if not force:
                raise StoreError(
                    f"{self.root}: holds shards of another config (hash {manifest.get('config_hash')}, this run "
                    f"{config_hash}); use a new output folder, or --force to set the old shards aside"
                )
            from sftadapt.runtime.owned import aside_path, record_set_aside

            aside = aside_path(self.root)  # (a second --force within the same second gets its own folder too)
            stale = _stale_results(self.root, manifest)
            shutil.move(str(self.root), aside)
            for path in stale:  # the old config's final files go with its shards: none is left beside new ones
                shutil.move(str(path), aside / f"result-{path.name}")
            # the shards folder is this store's own: everything moved with it is ours (but a link)
            record_set_aside(aside, "shards", [p.name for p in aside.iterdir() if not p.is_symlink()])
            self.root.mkdir(parents=True)
            manifest = None
        if manifest and manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{self.root}: written with schema version {manifest.get('schema_version')}, "
                f"this sftadapt writes {SCHEMA_VERSION}; use a new output folder"
            )
        if not manifest:
            self._write_json(
                self.root / MANIFEST,
                {
                    "schema_version": SCHEMA_VERSION,
                    "config_hash": config_hash,
                    "config": config or {},
                    "created": time.time(),
                },
            )

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest (None before the first run); a damaged one raises UnreadableFile saying what to do."""
        path = self.root / MANIFEST
        if not path.exists():
            return None
        remedy = (
            "re-run with --force to set this shards folder aside and start over, or delete the manifest to keep "
            "its shards (the next run adopts them as its own: only if this same command wrote them)"
        )
        return read_own_json(path, remedy)

    def shard_path(self, index: int) -> Path:
        return self.root / f"shard-{index:05d}.jsonl"

    def has(self, index: int) -> bool:
        return self.shard_path(index).exists()

    def write(self, index: int, records: Sequence[Any]) -> None:
        path = self.shard_path(index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in records:
                row = rec if isinstance(rec, dict) else to_dict(rec)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # the shard exists whole or not at all

    def read(self, index: int) -> list[dict[str, Any]]:
        return [row for _, row in self._lines(index)]

    def _lines(self, index: int) -> Iterator[tuple[str, Any]]:
        """(text, parsed row) of each non-blank line of shard `index`. A shard is renamed into place only once
        whole (`write`), so a kill never leaves one cut short; a line that does not parse means the file was
        damaged afterwards (disk, copy, editor), and this raises StoreError naming it and how to redo it."""
        path = self.shard_path(index)
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                    row = json.loads(text)
                except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
                    if isinstance(err, json.JSONDecodeError):
                        why = f"not valid JSON: {err.msg} at column {err.colno}"
                    else:
                        why = "not UTF-8 text"
                    raise StoreError(
                        f"{path}:{lineno}: damaged shard ({why}); shards are renamed into place only when whole, "
                        "so a kill did not do this: delete the file and re-run the same command, which redoes "
                        "that shard only"
                    ) from None
                yield text, row

    def shard_indices(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.root.glob("shard-*.jsonl"))

    def rows(self) -> Iterator[dict[str, Any]]:
        for index in self.shard_indices():
            yield from self.read(index)

    def finalize(
        self, out_path: str | os.PathLike, expected_shards: int | None = None, extra: dict[str, Any] | None = None
    ) -> int:
        """Concatenate the shards in order into `out_path` (atomically); returns the row count."""
        indices = self.shard_indices()
        if expected_shards is not None and indices != list(range(expected_shards)):
            missing = sorted(set(range(expected_shards)) - set(indices))
            raise StoreError(f"{self.root}: cannot finalise, shards {missing[:10]} are missing")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        count = 0
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                for index in indices:
                    for line, _ in self._lines(index):  # parsed: a damaged shard stops here, not in train.jsonl
                        out.write(line if line.endswith("\n") else line + "\n")
                        count += 1
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out_path)
        manifest = self.read_manifest() or {}
        manifest.update(
            {
                "complete": True,
                "rows": count,
                "output": str(out_path),
                "output_path": str(out_path.resolve()),
                **(extra or {}),
            }
        )
        self._write_json(self.root / MANIFEST, manifest)
        return count

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)


# Final files a stage writes beside its shards; a `--force` that sets the shards aside takes them along.
FINAL_OUTPUTS = ("train.jsonl", "attempts.jsonl", "summary.json", "results.json")


def _stale_results(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """The final files made from the shards in `root`: the manifest's output, and the FINAL_OUTPUTS of the
    output folder that holds `root` (the nearest folder above with sftadapt's ownership marker)."""
    from sftadapt.runtime.outdir import MARKER

    found = []
    recorded = manifest.get("output_path")
    if recorded and Path(recorded).is_file():
        found.append(Path(recorded))
    for folder in list(root.resolve().parents)[:3]:
        if (folder / MARKER).exists():
            found += [folder / name for name in FINAL_OUTPUTS if (folder / name).is_file()]
            break
    unique = {p.resolve(): p for p in found}
    return list(unique.values())


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


ENGINE_COUNTERS = ("generate_seconds", "score_seconds", "generated_tokens", "scored_tokens")


def engine_counters(*engines) -> dict[str, float]:
    """The engines' cumulative counters, summed (an engine passed twice, e.g. an untrained mapper that is the
    target itself, counts once)."""
    totals = {k: 0.0 for k in ENGINE_COUNTERS}
    for engine in {id(e): e for e in engines}.values():
        for k in totals:
            totals[k] += float(engine.stats.get(k, 0.0))
    return totals


# The kill/resume tests' hook: "<store folder name>:<shard>:<before_write|mid_write|after_write>" SIGKILLs the
# process at that point of that shard's write (mid_write: half the rows are in the temp file). Unset, nothing runs.
KILL_ENV = "SFTADAPT_TEST_KILL_AT"


def _kill_at(store: ShardStore, index: int, point: str) -> None:
    if os.environ.get(KILL_ENV) == f"{store.root.name}:{index}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def _write_with_kill_points(store: ShardStore, index: int, rows: list[Any]) -> None:
    def rows_then_kill():
        half = max(1, len(rows) // 2)
        yield from rows[:half]
        _kill_at(store, index, "mid_write")
        yield from rows[half:]

    _kill_at(store, index, "before_write")
    store.write(index, rows_then_kill())
    _kill_at(store, index, "after_write")


def run_sharded(
    store: ShardStore,
    items: Sequence[Any],
    shard_size: int,
    work: Callable[[Sequence[Any]], list[Any]],
    desc: str = "",
    progress: bool = True,
    unit: str = "item",
    engines: Sequence[Any] = (),
    postfix: Callable[[list[Any]], dict] | None = None,
    rejects_file: str | os.PathLike | None = None,
) -> int:
    """Run `work` on each chunk not yet stored and store its records; returns the number of shards.

    The progress bar counts items, starting from those already done in earlier (killed) runs; `postfix`
    turns all rows so far into counts shown on it. With `engines`, each shard's wall seconds and the engines'
    counters spent on it go to `stats-0000i.json` beside the shard, so `shard_totals` survive a resume.
    KILL_ENV (the kill tests' hook) kills the process around a shard write. With `rejects_file`, items a
    backend refuses (`RequestRejected`, e.g. a server's "context too long") become rejects there and
    the shard keeps the others (engines/rejects.py); without it the refusal ends the run."""
    from tqdm.auto import tqdm

    from sftadapt.data.records import write_json

    parts = chunks(items, shard_size)
    done_rows = [row for i in range(len(parts)) if store.has(i) for row in store.read(i)] if postfix else []
    done = sum(len(part) for i, part in enumerate(parts) if store.has(i))
    if rejects_file is not None:
        from sftadapt.engines import rejects as engine_rejects

        engine_rejects.restore(store.root, [i for i in range(len(parts)) if store.has(i)], rejects_file)
    with tqdm(total=len(items), initial=done, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        if postfix:
            bar.set_postfix(postfix(done_rows), refresh=False)
        for i, part in enumerate(parts):
            if store.has(i):
                continue
            start, before = time.perf_counter(), engine_counters(*engines)
            if rejects_file is not None:
                rows, refused = engine_rejects.keep_going(part, work)
                engine_rejects.record(
                    store.root, i, [engine_rejects.reject_row(item, why) for item, why in refused], rejects_file
                )
            else:
                rows = work(part)
            if engines:
                after = engine_counters(*engines)
                stats = {k: after[k] - before[k] for k in after}
                write_json(
                    store.root / f"stats-{i:05d}.json",
                    {**stats, "seconds": time.perf_counter() - start, "problems": len(part)},
                )
            if os.environ.get(KILL_ENV):
                _write_with_kill_points(store, i, rows)
            else:
                store.write(i, rows)
            bar.update(len(part))
            if postfix:
                done_rows.extend(rows)
                bar.set_postfix(postfix(done_rows), refresh=False)
    return len(parts)


def shard_totals(store: ShardStore) -> dict[str, float]:
    """Seconds, items and engine counters summed over the stats of the shards that exist."""
    totals: dict[str, float] = {"seconds": 0.0, "problems": 0, **{k: 0.0 for k in ENGINE_COUNTERS}}
    for path in sorted(store.root.glob("stats-*.json")):
        if store.has(int(path.stem.split("-")[1])):
            remedy = f"delete it and shard-{path.stem.split('-')[1]}.jsonl, then re-run: that shard is redone"
            for key, value in read_own_json(path, remedy).items():
                totals[key] = totals.get(key, 0) + value
    totals["engine_seconds"] = totals["generate_seconds"] + totals["score_seconds"]
    return {
        k: int(v) if k in ("problems", "generated_tokens", "scored_tokens") else round(v, 3) for k, v in totals.items()
    }
