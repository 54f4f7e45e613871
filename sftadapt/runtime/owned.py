"""What sftadapt wrote, as it recorded it: the only things it ever deletes.

Two records, both written at the moment sftadapt makes the thing they describe:

- **checkpoints** (`.sftadapt-checkpoints.json` in a training output folder): every `checkpoint-<step>` the
  Trainer saved for this folder, appended from the Trainer's own save event. A finished pipeline stage deletes
  these and no other `checkpoint-*`; a folder holding a `checkpoint-*` that is not in the record (a user's own,
  or one copied in) is refused before training, since the Trainer's resume and checkpoint rotation would take or
  delete any `checkpoint-<number>`.
- **set-aside folders** (`.sftadapt-set-aside.json` inside `<stage>.old-<time>/`, `checkpoints.old-<time>/`
  and `shards.old-<time>/`): written when sftadapt moves an output out of the way, listing the entries it moved
  that it had written itself: the stage's bookkeeping, the names its command writes (runtime/outdir.py), minus
  what the folder's owner mark records as the user's (`foreign`), minus symbolic links.

`free(folder)` removes exactly the recorded entries of a set-aside folder and the folder itself only if nothing
else is left in it; anything else stays where it is and is named, and the folder is then the user's (its record
goes). `find_set_aside(run)` looks only where `sftadapt run` puts set-aside folders (the run folder, its
`seed-*` folders and their stage folders) and only at real folders that carry the record: a folder of the user's
named `*.old-*`, at any depth, is never a candidate.

    sftadapt clean RUN          # lists what it would free, asks, frees; refuses a folder `sftadapt run` did not make
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from sftadapt.runtime.outdir import (
    ADAPTED_SET_OUTPUTS,
    MARKER,
    RUN_BOOKKEEPING,
    TRAIN_OUTPUTS,
    OutDirError,
    read_owner,
)

CHECKPOINTS = ".sftadapt-checkpoints.json"
SET_ASIDE = ".sftadapt-set-aside.json"
# in a finished stage restored from an archive without its weights: the files left out, with their sha256
# (benchmarks/study_archive.py writes it; stage_cache re-makes the files when a later stage needs them)
LEFT_OUT = ".sftadapt-left-out.json"

# Names a pipeline stage writes beside the outputs its command protects: GRPO's and the mapper's logs and configs,
# the compute record, the data stage's files, the trackers' local folders.
STAGE_EXTRAS = (
    "compute.json",
    "gap.json",
    "rl_log.jsonl",
    "rl_config.json",
    "expert.jsonl",
    "warmup.jsonl",
    "pool.jsonl",
    "selection.json",
    "pool_eval",
    "trackio",
    "mlruns",
    "SOURCE.md",
    "SFTADAPT_SOURCE.json",
)
OWN_NAMES = (MARKER, CHECKPOINTS, LEFT_OUT, *RUN_BOOKKEEPING, *TRAIN_OUTPUTS, *ADAPTED_SET_OUTPUTS, *STAGE_EXTRAS)


# ---------------------------------------------------------------- checkpoints
def recorded_checkpoints(out: str | os.PathLike) -> set[str] | None:
    """The `checkpoint-*` names the Trainer saved into `out` under sftadapt (None: no record there)."""
    from sftadapt.data.records import read_own_json

    path = Path(out) / CHECKPOINTS
    remedy = "move the folder's checkpoint-* folders away, or delete the record to adopt them"
    try:
        data = read_own_json(path, remedy)
    except FileNotFoundError:
        return None
    except OSError as err:  # a folder or an unreadable file in the record's place
        raise OutDirError(f"{path}: unreadable checkpoint record ({type(err).__name__}); {remedy}") from None
    return {str(n) for n in data.get("checkpoints", [])}


def _write_checkpoints(out: Path, names: set[str]) -> None:
    tmp = out / f"{CHECKPOINTS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"checkpoints": sorted(names)}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / CHECKPOINTS)


def _checkpoint_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("checkpoint-*") if p.is_dir() or p.is_symlink())


def open_checkpoints(out: str | os.PathLike) -> None:
    """Before a training run in `out`: start its checkpoint record, and refuse a `checkpoint-*` it does not list.

    A folder trained before this record existed (no record, checkpoints present) has its checkpoints adopted
    once, so an old run still resumes."""
    out = Path(out)
    found = _checkpoint_dirs(out)
    known = recorded_checkpoints(out)
    if known is None:
        _write_checkpoints(out, {p.name for p in found if not p.is_symlink()})
        known = recorded_checkpoints(out) or set()
    strange = [p.name for p in found if p.name not in known or p.is_symlink()]
    if strange:
        raise OutDirError(
            f"{out}: holds {', '.join(repr(s) for s in strange[:5])} that sftadapt did not write; training would "
            "resume from it or its checkpoint rotation would delete it: move it away or use a new output folder"
        )


def checkpoint_recorder(out: str | os.PathLike):
    """A Trainer callback that adds each checkpoint the Trainer is about to save into `out` to the folder's record.

    The name is recorded when the Trainer decides to save (`should_save` at the end of a step or an epoch),
    before it writes: a run killed while saving leaves a checkpoint that is recorded, so its resume is not refused.
    A save cancelled after that (the pipeline's NoFinalCheckpoint) leaves a name without a folder: harmless."""
    from transformers import TrainerCallback

    out = Path(out)

    def record(state, control) -> None:
        if control.should_save and state.is_world_process_zero:
            _write_checkpoints(out, (recorded_checkpoints(out) or set()) | {f"checkpoint-{state.global_step}"})

    class RecordCheckpoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record(state, control)

        def on_epoch_end(self, args, state, control, **kwargs):
            record(state, control)

        def on_save(self, args, state, control, **kwargs):
            test_kill_point(state.global_step)  # the lost-rank tests' hook; unset, a no-op

    return RecordCheckpoints()


def drop_checkpoints(out: str | os.PathLike) -> list[str]:
    """Delete the recorded checkpoints of `out` (a finished stage's dead weight); returns their names."""
    out = Path(out)
    known = recorded_checkpoints(out) or set()
    dropped = []
    for path in _checkpoint_dirs(out):
        if path.name in known and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            dropped.append(path.name)
    if dropped:
        _write_checkpoints(out, known - set(dropped))
    return dropped


# ---------------------------------------------------------------- set-aside folders
def own_entries(folder: str | os.PathLike) -> list[str]:
    """The top-level entries of a stage or training folder that sftadapt wrote (see the module docstring)."""
    folder = Path(folder)
    owner = read_owner(folder) or {}
    foreign = set(owner.get("foreign", []))
    checkpoints = recorded_checkpoints(folder) or set()
    own = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if entry.is_symlink() or name in foreign:
            continue
        if name.startswith("checkpoint-"):
            if name in checkpoints:
                own.append(name)
        elif _own_name(name) or _benchmark_folder(entry):
            own.append(name)
    return own


def _own_name(name: str) -> bool:
    return name.startswith(MARKER) or any(fnmatch.fnmatchcase(name, p) for p in OWN_NAMES)


def _benchmark_folder(entry: Path) -> bool:
    """An eval's per-benchmark folder (named after the benchmark): a real folder holding only names it writes."""
    if entry.is_symlink() or not entry.is_dir():
        return False
    names = [e.name for e in entry.iterdir()]
    return bool(names) and all(_own_name(n) for n in names) and "shards" in names


def aside_path(folder: Path) -> Path:
    """Where `folder` is set aside: a new `<name>.old-<time>` beside it (`-1`, `-2`, ... for a second one within
    the same second), the name `find_set_aside` and `superseded` look for."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = folder.with_name(f"{folder.name}.old-{stamp}"), 0
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    return aside


def record_set_aside(aside: Path, what: str, entries: list[str]) -> None:
    """Mark `aside` (just made by moving sftadapt's output there) with what was moved and which of it is ours."""
    record = {"what": what, "set_aside_at": time.time(), "entries": sorted(entries)}
    (aside / SET_ASIDE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def set_aside_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a set-aside folder, or None (not a real folder, or not set aside by sftadapt)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        data = json.loads((folder / SET_ASIDE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("entries"), list) else None


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def plan_free(folder: Path) -> tuple[int, list[str]]:
    """(bytes that `free` would remove, the entries it would leave) for a set-aside folder."""
    record = set_aside_record(folder) or {"entries": []}
    ours = set(record["entries"])
    size, left = 0, []
    for entry in folder.iterdir():
        if entry.name in ours and not entry.is_symlink():
            size += _size(entry)
        elif entry.name != SET_ASIDE:
            left.append(entry.name)
    return size, sorted(left)


def free(folder: Path) -> list[str]:
    """Remove what the record of set-aside `folder` lists (never following a link), then the folder if nothing
    else is in it; returns the entries left (not sftadapt's), empty when the folder is gone."""
    record = set_aside_record(folder)
    if record is None:
        raise OutDirError(f"{folder}: not a folder sftadapt set aside (no {SET_ASIDE}); nothing removed")
    for name in record["entries"]:
        entry = folder / name
        if entry.is_symlink() or not entry.exists():
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (folder / SET_ASIDE).unlink()  # what is left, if anything, is the user's alone: no longer a set-aside folder
    left = sorted(e.name for e in folder.iterdir())
    if not left:
        folder.rmdir()
    return left


def is_run_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (read_owner(folder) or {}).get("command") == "run"


def find_set_aside(run_dir: str | os.PathLike) -> list[Path]:
    """Every folder that sftadapt set aside in a `sftadapt run` folder: `<stage>.old-*` in the run folder and its
    `seed-*` folders, and `checkpoints.old-*` / `shards.old-*` inside their stage folders. Real folders with a
    set-aside record only; no link is followed."""
    root = Path(run_dir)
    seeds = [root, *(p for p in sorted(root.glob("seed-*")) if p.is_dir() and not p.is_symlink())]
    found: set[Path] = set()
    for seed in seeds:
        for child in seed.iterdir():
            if child.is_symlink() or not child.is_dir():
                continue
            if ".old-" in child.name:
                if set_aside_record(child) is not None:
                    found.add(child)
                continue
            found.update(p for p in child.glob("*.old-*") if set_aside_record(p) is not None)
    return sorted(found)


# The lost-rank tests' hook (tests/test_launch.py): "<rank>:<step>" SIGKILLs that rank of a launch
# (runtime/launch.py) right after the checkpoint of that step is written by every rank. Unset, nothing runs.
KILL_RANK_ENV = "SFTADAPT_TEST_KILL_RANK"


def test_kill_point(step: int) -> None:
    """The lost-rank tests' hook (KILL_RANK_ENV), called on every rank after each checkpoint is saved: at the
    named step, all ranks first wait for each other (so every rank's part of the checkpoint is on disk), then
    the named rank SIGKILLs itself."""
    value = os.environ.get(KILL_RANK_ENV)
    if not value:
        return
    rank, at = (int(v) for v in value.split(":"))
    if step != at:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if int(os.environ.get("RANK", "0")) == rank:
        os.kill(os.getpid(), signal.SIGKILL)
