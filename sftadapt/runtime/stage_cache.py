"""The cache under `sftadapt run`: each stage of a seed in `RUN/<stage>/`, skipped when its hash is unchanged.

A stage's `stage.json` holds the hash of its options *and of its inputs' hashes*. Re-running the same config
skips finished stages; changing an option redoes that stage and what depends on it (the old folder is set aside
as `<stage>.old-<time>`, recorded so that `sftadapt clean` may free it); a killed run resumes inside the stage
that was running, since every stage is resumable on its own (shards, trainer checkpoints). `Stages` also prints
`[k/N] stage` lines with the stage's time, the run's elapsed time and a rough ETA (`Clock`).

A seed restored from an archive without its weights (benchmarks/study_archive.py `unpack`) has finished stages
whose model files are gone; each such folder lists them, with their sha256, in `.sftadapt-left-out.json`. Such a
stage stays cached; only when a stage that has to run names its folder in its options (a model path) is it made
again, in place, from its cached inputs: its weights are re-made and compared with the packed sha256 (identical
on a CPU of the same kind, where every stage is deterministic), its archived records are put back over the
re-made ones, and its stage.json says what was re-made and whether it matched (`remade`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftadapt.config import config_hash
from sftadapt.data.records import file_sha256, write_json
from sftadapt.runtime import owned

# options of a stage that do not decide its output: left out of the stage hash, so that turning a tracker on
# (or the network, or training on several processes: `launcher`) does not redo a finished study
UNHASHED = ("report_to", "tracking_dir", "online", "force", "launcher")


# ---------------------------------------------------------------- cached stages
class Stages:
    """Runs named stages in `root`, skipping those whose hash (options + inputs) is unchanged and done.

    Prints `[k/N] stage` with what happened (cached / run / changed: which options, old -> new), the stage's
    time and the run's elapsed time, with a rough ETA from the stages that ran so far."""

    def __init__(
        self,
        root: Path,
        progress: bool = True,
        keep_checkpoints: bool = False,
        keep_superseded: int = 1,
        clock: Clock | None = None,
        dry_run: bool = False,
    ):
        self.root, self.progress, self.keep_checkpoints = root, progress, keep_checkpoints
        # dry run: say what each stage would do (cached / run / re-run and why), touch nothing
        self.dry_run = dry_run
        if dry_run:  # the model files are read once per dry run (facts.file_facts), afresh for each
            from sftadapt.engines.facts import file_facts

            file_facts.cache_clear()
        self.plan: list[dict[str, Any]] = []
        self.keep_superseded = keep_superseded
        self.clock = clock or Clock(0)
        self.hashes: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.ran: list[str] = []
        self.folders: dict[str, str] = {}
        self.builders: dict[str, tuple[Any, Callable[[Path], dict[str, Any]]]] = {}  # how to make each stage again

    def run(self, name: str, options: Any, inputs: list[str], fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        folder = self.root / name
        self.folders[name] = str(folder)
        self.builders[name] = (options, fn)
        _undo_interrupted_remake(folder)
        spec = {"options": _decided(options), "inputs": {i: self.hashes[i] for i in inputs}}
        digest = config_hash(spec)
        meta_path = folder / "stage.json"
        meta = stage_record(meta_path) if meta_path.exists() else None
        tag = self.clock.next(name)
        if meta and meta.get("hash") == digest and meta.get("status") == "done":
            self.hashes[name], self.results[name] = digest, meta["result"]
            self.plan.append({"stage": name, "folder": str(folder), "status": "cached"})
            _say(f"{tag} cached")
            return meta["result"]
        if self.dry_run:
            if meta is None:
                status = "would run"
            elif meta.get("hash") == digest:
                status = f"would resume (was {meta.get('status')})"
            else:
                status = "would re-run: " + ("; ".join(spec_changes(meta.get("spec", {}), spec)) or "inputs changed")
            self.hashes[name], self.results[name] = digest, {}
            from sftadapt.engines.facts import check_stage

            models = check_stage(options)  # context, end ids and prompt format from the model's own files
            remakes = [n for n in self._needs(options, name) if _left_out(self.root / n)]
            if remakes:
                status += f"; first re-makes the packed-out weights of {', '.join(remakes)}"
            self.plan.append({"stage": name, "folder": str(folder), "status": status, "models": models})
            _say(f"{tag} {status}" + "".join(f"\n    {line}" for line in models))
            return {}
        if meta and meta.get("hash") != digest:
            aside = owned.aside_path(folder)
            ours = owned.own_entries(folder)  # read before the move: the owner mark says what is the user's
            shutil.move(str(folder), aside)
            owned.record_set_aside(aside, f"stage {name}", ours)
            changes = spec_changes(meta.get("spec", {}), spec)
            _say(f"{tag} changed: {'; '.join(changes) or 'inputs'}; old output set aside in {aside.name}")
            for old in superseded(folder.parent, name)[self.keep_superseded :]:
                left = owned.free(old)
                kept = f"; kept {old.name} for what sftadapt did not write in it: {', '.join(left[:5])}" if left else ""
                _say(f"{tag} removed {old.name} (keep_superseded={self.keep_superseded}){kept}")
        for need in self._needs(options, name):
            self._remake(need)
        folder.mkdir(parents=True, exist_ok=True)
        earlier = _earlier_segments(folder, meta) if meta and meta.get("hash") == digest else 0.0
        running = {"hash": digest, "status": "running", "spec": spec, "started_at": time.time()}
        write_json(meta_path, {**running, "earlier_segments_seconds": round(earlier, 1)})
        _say(f"{tag} running (run elapsed {self.clock.elapsed()})")
        start = time.perf_counter()
        result = fn(folder)
        if not self.keep_checkpoints:  # a finished stage is never resumed: its checkpoints are dead weight
            owned.drop_checkpoints(folder)
        seconds = time.perf_counter() - start
        result = {**_jsonable(result), "stage_seconds": round(seconds + earlier, 1)}
        if earlier:
            result["earlier_segments_seconds"] = round(earlier, 1)
        write_json(meta_path, {"hash": digest, "status": "done", "spec": spec, "result": result})
        self.hashes[name], self.results[name] = digest, result
        self.ran.append(name)
        self.clock.finished(seconds)
        _say(f"{tag} done in {_hms(seconds)}; run elapsed {self.clock.elapsed()}{self.clock.eta()}")
        return result

    def _needs(self, options: Any, name: str) -> list[str]:
        """The earlier stages whose folders `options` name (a model or data path inside one), in run order."""
        found: set[str] = set()
        for text in _strings(_jsonable(options)):
            for other in self.builders:
                there = str(self.root / other)
                if other != name and (text == there or text.startswith(there + os.sep)):
                    found.add(other)
        return [n for n in self.builders if n in found]

    def _remake(self, name: str) -> None:
        """Make a finished stage's left-out files again (module docstring), after what it needs in turn."""
        folder = self.root / name
        left = _left_out(folder)
        if not left:
            return
        options, fn = self.builders[name]
        for need in self._needs(options, name):
            self._remake(need)
        _say(
            f"[{name}] restored without {len(left['files'])} files (packed on {left.get('cpu', '?')}): making them again"
        )
        aside = folder.with_name(f"{name}.packed")  # its records while it is made again (a kill puts them back)
        shutil.move(str(folder), aside)
        folder.mkdir()
        start = time.perf_counter()
        fn(folder)
        if not self.keep_checkpoints:
            owned.drop_checkpoints(folder)
        verdict = {rel: _compare(folder / rel, sha) for rel, sha in sorted(left["files"].items())}
        for path in sorted(p for p in aside.rglob("*") if p.is_file() and p.name != owned.LEFT_OUT):
            dest = folder / path.relative_to(aside)  # the archived records, not the re-made ones, are the seed's
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        shutil.rmtree(aside)
        meta = stage_record(folder / "stage.json")
        weights = {rel: v for rel, v in verdict.items() if rel.endswith(".safetensors")}
        meta["remade"] = {
            "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
            "packed_on": left.get("cpu"),
            "weights_identical": bool(weights) and all(v == "identical" for v in weights.values()),
            "files": verdict,
        }
        write_json(folder / "stage.json", meta)
        same = "identical to" if meta["remade"]["weights_identical"] else "NOT identical to"
        _say(f"[{name}] re-made in {_hms(meta['remade']['seconds'])}: weights {same} the packed ones (sha256)")


def _undo_interrupted_remake(folder: Path) -> None:
    """A re-make that was killed left the restored records in `<stage>.packed`: put them back (the half-made
    folder is set aside, as a changed stage's is), so that the stage is restored-and-cached again."""
    aside = folder.with_name(f"{folder.name}.packed")
    if not aside.is_dir():
        return
    if folder.exists():
        old = owned.aside_path(folder)
        ours = owned.own_entries(folder)
        shutil.move(str(folder), old)
        owned.record_set_aside(old, f"stage {folder.name} (an interrupted re-make)", ours)
    shutil.move(str(aside), folder)


def _left_out(folder: Path) -> dict[str, Any] | None:
    """The left-out record of a restored stage whose files are still missing, else None."""
    path = folder / owned.LEFT_OUT
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if any(not (folder / rel).exists() for rel in record["files"]) else None


def _compare(path: Path, sha: str) -> str:
    if not path.exists():
        return "missing"
    return "identical" if file_sha256(path) == sha else "differs"


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def stage_record(path: Path, remedy: str = "") -> dict[str, Any]:
    """A stage's `stage.json`. It is written atomically (temp file + rename), so only damage from outside leaves
    it unreadable; then one line names it and the way out: without it the stage runs again, resuming from what
    it left in its folder (shards, checkpoints) where the options still match."""
    from sftadapt.data.records import read_own_json

    return read_own_json(
        path, remedy or f"delete it and re-run: `sftadapt run` then runs stage {path.parent.name} again"
    )


def _earlier_segments(folder: Path, meta: dict[str, Any]) -> float:
    """Seconds the interrupted runs of a resumed stage spent, so its stage_seconds counts the whole stage: the
    segments already counted by earlier resumes, plus the last one, from its start to the newest file it wrote
    (a killed process cannot record its own end; work after its last write is lost anyway, and redone)."""
    done = float(meta.get("earlier_segments_seconds", 0.0))
    started = meta.get("started_at")
    if started is None:  # written before stages recorded their start
        return done
    files = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file() and p.name != "stage.json"]
    return done + max(0.0, max(files, default=started) - started)


class Clock:
    """Stage numbering and a rough ETA (mean time of the stages run so far x stages left) across seeds."""

    def __init__(self, planned: int):
        self.planned, self.k, self.start = planned, 0, time.perf_counter()
        self.durations: list[float] = []

    def next(self, name: str) -> str:
        self.k += 1
        return f"[{self.k}/{self.planned}] {name}:" if self.planned else f"[{name}]"

    def finished(self, seconds: float) -> None:
        self.durations.append(seconds)

    def elapsed(self) -> str:
        return _hms(time.perf_counter() - self.start)

    def eta(self) -> str:
        left = self.planned - self.k
        if left <= 0 or len(self.durations) < 2:  # one stage (often the instant data stage) says nothing
            return ""
        return f"; rough ETA {_hms(left * sum(self.durations) / len(self.durations))} for {left} more stages"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def spec_changes(old: dict, new: dict, limit: int = 6) -> list[str]:
    """`key: old -> new` for each leaf of a stage spec that differs (dotted keys), at most `limit` of them."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    changed = [k for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k)]

    def show(v: Any) -> str:
        text = json.dumps(v, default=str) if v is not None else "(unset)"
        return text if len(text) <= 40 else text[:37] + "..."

    out = [f"{k.removeprefix('options.')}: {show(flat_old.get(k))} -> {show(flat_new.get(k))}" for k in changed[:limit]]
    if len(changed) > limit:
        out.append(f"and {len(changed) - limit} more")
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def superseded(parent: Path, name: str) -> list[Path]:
    """The outputs of stage `name` that `Stages` set aside in `parent` (recorded as such), newest first."""
    found = (p for p in parent.glob(f"{name}.old-*") if owned.set_aside_record(p) is not None)
    return sorted(found, key=lambda p: p.name, reverse=True)


def _decided(options: Any) -> Any:
    """A stage's options as hashed: without the bookkeeping options (UNHASHED), an unset max_prompt_tokens or
    max_row_bytes or an empty loss_options (options added later: unset, they leave the hash of a finished stage as
    it was) and the engine
    blocks' backend options (config.without_engine_options)."""
    from sftadapt.config import without_engine_options

    data = without_engine_options(_jsonable(options))
    if isinstance(data, dict):
        data = {
            k: v
            for k, v in data.items()
            if k not in UNHASHED
            and not (k in ("max_prompt_tokens", "max_row_bytes") and v is None)
            and not (k == "loss_options" and not v)
        }
    return data


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _say(message: str) -> None:
    if os.environ.get("SFTADAPT_QUIET") != "1":
        print(message, flush=True)
