"""Resumable output by construction: append-only shards, a manifest with the config hash, atomic renames.

A stage cuts its work into fixed, ordered chunks and writes chunk i as `shard-0000i.jsonl` (temp file, fsync,
rename). A killed run leaves complete shards and at most one stray temp file; re-running the same command skips
the complete shards and redoes the rest. Because every sample's seed derives from (problem id, stage, index),
a resumed run writes exactly what an uninterrupted one would. A run whose config hash differs from the
manifest's refuses to mix with the old shards unless `force=True`, which moves them aside, together with the
final files made from them (the manifest's output, and train.jsonl / attempts.jsonl / summary.json /
results.json of the owning output folder): a kill right after never leaves an old result beside new shards.

A shard's work given as `Phases(produce, verify, complete)` is pipelined: the verification of shard k (CPU,
in a background thread) runs while shard k+1 is generated (engine, main thread); shards are still written in
order and byte-identical to the sequential path (`run_in_order`).

    store = ShardStore(out / "shards", config_hash(cfg), config_dict(cfg), force=cfg.force)
    n_shards = run_sharded(store, items, 16, Phases(generate, verify, score), desc="rewrite")
    store.finalize(out / "train.jsonl", expected_shards=n_shards)
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


class Phases:
    """A shard's work in three phases, so that the CPU-bound verification of one shard overlaps the engine work
    of the next (`run_sharded`, `run_in_order`):

    - `produce(part)` uses the engine (main thread) and returns what verification needs;
    - `verify(produced)` uses no engine: it runs in a background thread, so it must be thread-safe (the
      `Verifier` pool is: it sends the items to worker processes and waits on pipes, without signals);
    - `complete(verified)` may use the engine again (main thread) and returns the shard's rows.

    Called as a plain function, a `Phases` runs the three in a row: that is the sequential path, and the one a
    refused request falls back to (item by item, engines/rejects.py)."""

    def __init__(
        self,
        produce: Callable[[Sequence[Any]], Any],
        verify: Callable[[Any], Any],
        complete: Callable[[Any], list[Any]] | None = None,
    ):
        self.produce, self.verify = produce, verify
        self.complete = complete if complete is not None else list

    def __call__(self, part: Sequence[Any]) -> list[Any]:
        return list(self.complete(self.verify(self.produce(part))))


class _Shard:
    """One pending shard on its way through `run_in_order`: its key, items, the engine counters and main-thread
    seconds spent on it so far, and the background verification's future."""

    def __init__(self, key: Any, part: Sequence[Any]):
        self.key, self.part = key, part
        self.spent = {k: 0.0 for k in (*ENGINE_COUNTERS, "seconds")}
        self.future = None

    def charge(self, engines: Sequence[Any], step: Callable[[], Any]) -> Any:
        """Run `step` on the main thread and add its seconds and engine counters to this shard's; with no
        verification in flight at that moment (or one that uses no engine), what the counters moved by is this
        shard's own."""
        start, before = time.perf_counter(), engine_counters(*engines)
        try:
            return step()
        finally:
            after = engine_counters(*engines)
            for k in ENGINE_COUNTERS:
                self.spent[k] += after[k] - before[k]
            self.spent["seconds"] += time.perf_counter() - start


def _one_by_one(part: Sequence[Any], work: Callable, err: Exception) -> tuple[list[Any], list[tuple[Any, str]]]:
    """After the shard as a whole was refused (`err`): each item run alone, as engines/rejects.keep_going does."""
    from sftadapt.engines import rejects as engine_rejects

    if len(part) == 1:
        return [], [(part[0], str(err))]
    rows: list[Any] = []
    refused: list[tuple[Any, str]] = []
    for item in part:
        got, lost = engine_rejects.keep_going([item], work)
        rows.extend(got)
        refused.extend(lost)
    return rows, refused


def run_in_order(
    jobs: Sequence[tuple[Any, Sequence[Any]]],
    work: Callable[[Sequence[Any]], list[Any]] | Phases,
    finish: Callable[[Any, list[Any], list[tuple[Any, str]], dict[str, float]], None],
    keep_going: bool = False,
    engines: Sequence[Any] = (),
) -> None:
    """Run `work` on the items of each (key, items) job and call `finish(key, rows, refused, spent)` for each,
    in order, on the calling thread; `spent` holds the seconds and engine counters that job used.

    A plain callable runs one job after the other. A `Phases` overlaps them: produce(0); verify(0) starts in a
    background thread; produce(1); verify(0) is joined, complete(0), finish(0); verify(1) starts; produce(2); ...
    So the verification of job k runs while job k+1 is generated, every engine call stays on the calling thread
    (engines are not thread-safe), and jobs finish in order. Seeds derive from (problem id, stage, index), so
    moving produce(k+1) before complete(k) changes no row. `spent` of job k counts its own produce and complete
    and the wait for its verification (the hidden part of the verification is no one's seconds), never job
    k+1's produce.

    With `keep_going`, a `RequestRejected` in any phase of job k runs that job again one item at a time
    (sequentially, after job k-1 has finished); the refused items come back as `refused` (engines/rejects.py).
    Without it the refusal ends the run. An exception in a background verification is raised here when its job
    is joined. When produce(k+1) fails (an engine error, Ctrl-C), job k is still finished before the error
    propagates, so a failure loses what the sequential path would lose and no more; on any other exception the
    verification in flight is waited for before it propagates, and no later job finishes before an earlier one."""
    from sftadapt.engines.base import RequestRejected

    refusal: tuple[type[BaseException], ...] = (RequestRejected,) if keep_going else ()

    def sequential(shard: _Shard, err: Exception | None = None) -> None:
        if err is not None:
            rows, refused = shard.charge(engines, lambda: _one_by_one(shard.part, work, err))
        elif keep_going:
            from sftadapt.engines import rejects as engine_rejects

            rows, refused = shard.charge(engines, lambda: engine_rejects.keep_going(shard.part, work))
        else:
            rows, refused = shard.charge(engines, lambda: list(work(shard.part))), []
        finish(shard.key, rows, refused, shard.spent)

    if not isinstance(work, Phases):
        for key, part in jobs:
            sequential(_Shard(key, part))
        return

    from concurrent.futures import ThreadPoolExecutor

    def complete(shard: _Shard) -> None:
        try:
            verified = shard.charge((), shard.future.result)  # a verify error is raised here, on this thread
            rows = shard.charge(engines, lambda: list(work.complete(verified)))
        except refusal as err:
            sequential(shard, err)
            return
        finish(shard.key, rows, [], shard.spent)

    # Leaving the pool's `with` waits for a verification still in flight (after an error on this thread): the
    # verifier must be idle before its owner closes it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sftadapt-verify") as pool:
        in_flight: _Shard | None = None
        for key, part in jobs:
            shard = _Shard(key, part)
            try:
                produced = shard.charge(engines, lambda part=part: work.produce(part))
            except refusal as err:
                if in_flight is not None:
                    complete(in_flight)
                    in_flight = None
                sequential(shard, err)
                continue
            except BaseException:
                if in_flight is not None:  # keep what was generated before the failure, as the sequential path
                    complete(in_flight)
                raise
            if in_flight is not None:
                complete(in_flight)
            shard.future = pool.submit(work.verify, produced)
            in_flight = shard
        if in_flight is not None:
            complete(in_flight)


def run_sharded(
    store: ShardStore,
    items: Sequence[Any],
    shard_size: int,
    work: Callable[[Sequence[Any]], list[Any]] | Phases,
    desc: str = "",
    progress: bool = True,
    unit: str = "item",
    engines: Sequence[Any] = (),
    postfix: Callable[[list[Any]], dict] | None = None,
    rejects_file: str | os.PathLike | None = None,
) -> int:
    """Run `work` on each chunk not yet stored and store its records; returns the number of shards.

    `work` is a function of a chunk, or a `Phases` (produce, verify, complete): then the verification of shard
    k runs in a background thread while shard k+1 is generated (`run_in_order`), and the shards are still
    written in order, each byte-identical to what the sequential path writes.
    The progress bar counts items, starting from those already done in earlier (killed) runs; `postfix`
    turns all rows so far into counts shown on it. With `engines`, each shard's seconds and the engines'
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

        def finish(i: int, rows: list[Any], refused: list[tuple[Any, str]], spent: dict[str, float]) -> None:
            part = parts[i]
            if rejects_file is not None:
                engine_rejects.record(
                    store.root, i, [engine_rejects.reject_row(item, why) for item, why in refused], rejects_file
                )
            if engines:
                write_json(
                    store.root / f"stats-{i:05d}.json",
                    {**{k: spent[k] for k in ENGINE_COUNTERS}, "seconds": spent["seconds"], "problems": len(part)},
                )
            if os.environ.get(KILL_ENV):
                _write_with_kill_points(store, i, rows)
            else:
                store.write(i, rows)
            bar.update(len(part))
            if postfix:
                done_rows.extend(rows)
                bar.set_postfix(postfix(done_rows), refresh=False)

        jobs = [(i, part) for i, part in enumerate(parts) if not store.has(i)]
        run_in_order(jobs, work, finish, keep_going=rejects_file is not None, engines=engines)
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
