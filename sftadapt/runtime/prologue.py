"""What every stage does before its own work, written once.

1. `open_stage(cfg, command, protect)`: validate the config, honour its network switch (`online`), claim the
   output folder (refused if it is not ours, unless `force`: runtime/outdir.py); returns the folder. Every
   registry stage opens this way (sample, rewrite, train, map train/synthesize, rl, eval).
2. `load_problems(cfg, out, ...)`: the stages that read a problem set (all but train, which reads Example
   rows through train/data.py, and eval, which reads benchmarks by name) read `cfg.data` (file, dataset name or hf: id) with its field map, keep the
   first `cfg.limit`, write unusable rows to `out/rejects.jsonl`; no usable row, or (when solutions are needed) a
   problem without an expert solution, is one `SourceError` naming the data and the rejects file. Problems handed
   in by a caller (tests, benchmarks) skip the read but not the checks.
3. `Owned`: a `with` block that closes what the stage built itself (engines, the verifier pool, a tracker), in
   reverse order, however the stage ends; what a caller injected is not the stage's to close.

    out = open_stage(cfg, "rewrite", protect=ADAPTED_SET_OUTPUTS)
    problems, rejects = load_problems(cfg, out, require_solution=True)
    with Owned() as owned:
        if verifier is None:
            verifier = owned.add(make_verifier(cfg))
        if engine is None:
            engine = owned.add(make_engine(...))
        ...
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def open_stage(cfg: Any, command: str, protect: Sequence[str] | None = None) -> Path:
    """Validate `cfg`, apply its `online` switch, claim `cfg.out` for `command` (`protect`: the file names that
    must not be there already; default outdir.STAGE_OUTPUTS); the output folder."""
    from sftadapt.runtime import offline
    from sftadapt.runtime.outdir import STAGE_OUTPUTS, claim

    cfg.validate()
    offline.honour(getattr(cfg, "online", False))
    out = Path(cfg.out)
    claim(
        out,
        command,
        force=getattr(cfg, "force", False),
        protect=tuple(protect) if protect is not None else STAGE_OUTPUTS,
    )
    return out


def load_problems(
    cfg: Any, out: Path, *, require_solution: bool, problems: Sequence[Any] | None = None, needs: str = "this stage"
) -> tuple[list[Any], int]:
    """The stage's problems and how many input rows were rejected (see the module docstring)."""
    from sftadapt.data.sources import ROW_LIMIT_HINT, SourceError, load_dataset_spec, write_rejects

    rejects_file = out / "rejects.jsonl"
    rejected = 0
    if problems is None:
        loaded = load_dataset_spec(
            cfg.data,
            limit=cfg.limit,
            require_solution=require_solution,
            data_dir=getattr(cfg, "data_dir", None),
            fields=getattr(cfg, "fields", None),
            # a stage whose config has no max_row_bytes option gets the default limit, and no advice to raise it
            max_row_bytes=getattr(cfg, "max_row_bytes", None),
            limit_hint=ROW_LIMIT_HINT if hasattr(cfg, "max_row_bytes") else None,
        )
        write_rejects(loaded.rejects, rejects_file)
        problems, rejected = loaded.problems, len(loaded.rejects)
    problems = list(problems)[: cfg.limit] if cfg.limit is not None else list(problems)
    if not problems:
        where = f" (the rejected rows and why: {rejects_file})" if rejects_file.exists() else ""
        kind = "problems with an expert solution" if require_solution else "problems"
        raise SourceError(f"{cfg.data}: no usable {kind}{where}")
    missing = [p.id for p in problems if require_solution and not p.solution]
    if missing:
        raise SourceError(f"{len(missing)} problems have no expert solution (first: {missing[0]}); {needs} needs one")
    return problems, rejected


def make_verifier(cfg: Any):
    """The verifier pool a stage's config asks for (`verifier_workers`, `verifier_timeout`)."""
    from sftadapt.verify import Verifier

    return Verifier(workers=cfg.verifier_workers, timeout=cfg.verifier_timeout)


class Owned:
    """Closes, in reverse order, everything `add`ed to it when the `with` block ends (error or not)."""

    def __init__(self) -> None:
        self.things: list[Any] = []

    def add(self, thing: Any) -> Any:
        self.things.append(thing)
        return thing

    def __enter__(self) -> Owned:
        return self

    def __exit__(self, *exc: Any) -> bool:
        while self.things:
            self.things.pop().close()
        return False
